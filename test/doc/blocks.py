#!/usr/bin/python3
"""test/doc/blocks.py: README.md's SQL blocks as one psql script, and the check
of what psql answered.

  blocks.py extract README.md SCRIPT BLOCKS.json
  blocks.py check BLOCKS.json OUTPUT

extract writes SCRIPT, every ```sql block of README.md in order, each
behind a line that echoes a marker, and BLOCKS.json, what is known of each
block: its line in README.md, its first line, the output README.md shows
for it (a fence without a language right after it), and what the comment
right before it says, if anything:

  <!-- doc-test: skip (why) -->       the block is not run; the check says so
  <!-- doc-test: errors 42501 55000 -->  the block must raise these SQLSTATEs,
                                       and no other

check reads psql's output (run with VERBOSITY verbose, so that every error
shows its SQLSTATE) and prints one line per block, "ok N - ...",
"not ok N - ..." or "# skip ...": a block fails on an error it does not
expect, on an expected one that did not happen, and when the output shown
in README.md is not found, line for line (trailing spaces aside), in what
psql printed for it.  Exits 1 if a block failed.
"""
import json
import re
import sys

FENCE = re.compile(r'^```(\w*)\s*$')
DIRECTIVE = re.compile(r'^<!--\s*doc-test:\s*(skip|errors)\b\s*(.*?)\s*-->\s*$')
MARKER = '@@doc-block '


def extract(readme, script, blocks_json):
    lines = open(readme, encoding='utf-8').read().split('\n')
    blocks = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        lang, start = m.group(1), i
        j = i + 1
        while j < len(lines) and not FENCE.match(lines[j]):
            j += 1
        body = lines[start + 1:j]
        i = j + 1
        if lang != 'sql':
            continue
        block = {'line': start + 1, 'sql': body,
                 'first': next((l.strip() for l in body if l.strip()), ''),
                 'skip': None, 'errors': [], 'output': None}
        k = start - 1
        while k >= 0 and lines[k].strip() == '':
            k -= 1
        d = DIRECTIVE.match(lines[k]) if k >= 0 else None
        if d and d.group(1) == 'skip':
            block['skip'] = d.group(2).strip('()') or 'no reason given'
        elif d:
            block['errors'] = d.group(2).split()
        # The output shown for it: a fence without a language, at once.
        if i < len(lines):
            m = FENCE.match(lines[i])
            if m and m.group(1) == '':
                j = i + 1
                while j < len(lines) and not FENCE.match(lines[j]):
                    j += 1
                block['output'] = lines[i + 1:j]
                i = j + 1
        blocks.append(block)
    with open(script, 'w', encoding='utf-8') as f:
        f.write('\\set VERBOSITY verbose\n')
        for n, b in enumerate(blocks, 1):
            if b['skip']:
                continue
            f.write("\\echo '%s%d'\n" % (MARKER, n))
            f.write('\n'.join(b['sql']) + '\n')
        f.write("\\echo '%send'\n" % MARKER)
    with open(blocks_json, 'w', encoding='utf-8') as f:
        json.dump(blocks, f, indent=1)


def trimmed(lines):
    lines = [l.rstrip() for l in lines]
    while lines and lines[0] == '':
        lines.pop(0)
    while lines and lines[-1] == '':
        lines.pop()
    return lines


def contains(haystack, needle):
    return any(haystack[i:i + len(needle)] == needle
               for i in range(len(haystack) - len(needle) + 1))


def check(blocks_json, output):
    blocks = json.load(open(blocks_json, encoding='utf-8'))
    answers = {}
    current = None
    for line in open(output, encoding='utf-8', errors='replace').read().split('\n'):
        if line.startswith(MARKER):
            current = line[len(MARKER):].strip()
            answers[current] = []
        elif current is not None:
            answers[current].append(line)
    failed = 0
    for n, b in enumerate(blocks, 1):
        where = 'README.md:%d %s' % (b['line'], b['first'][:60])
        if b['skip']:
            print('# skip block %d, README.md:%d (%s)' % (n, b['line'], b['skip']))
            continue
        problems = []
        got = answers.get(str(n))
        if got is None:
            problems.append('psql never reached it (the whole run stopped before)')
            got = []
        elif 'end' not in answers and n == len(blocks):
            problems.append('psql did not finish the block')
        errors = re.findall(r'ERROR:  ([0-9A-Z]{5}): ', '\n'.join(got))
        unexpected = [e for e in errors if e not in b['errors']]
        missing = [e for e in b['errors'] if e not in errors]
        if unexpected:
            problems.append('unexpected error(s) %s' % ', '.join(unexpected))
        if missing:
            problems.append('expected error(s) %s did not happen' % ', '.join(missing))
        if b['output'] is not None and got:
            want = trimmed(b['output'])
            if not contains(trimmed(got), want):
                problems.append('the output README.md shows is not in what psql printed')
        if problems:
            failed += 1
            print('not ok %d - %s: %s' % (n, where, '; '.join(problems)))
            if b['output'] is not None:
                print('# README.md shows:')
                for l in b['output']:
                    print('#   ' + l)
            print('# psql printed:')
            for l in got:
                print('#   ' + l)
        else:
            print('ok %d - %s' % (n, where))
    return 1 if failed else 0


if __name__ == '__main__':
    if len(sys.argv) == 5 and sys.argv[1] == 'extract':
        extract(*sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == 'check':
        sys.exit(check(*sys.argv[2:]))
    else:
        sys.exit(__doc__)
