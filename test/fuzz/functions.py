#!/usr/bin/python3
"""test/fuzz/functions.py: a bounded, stateful fuzzer of jobq's SQL functions.

    /usr/bin/python3 test/fuzz/functions.py --pgbin DIR [--seconds N] [--seed N]

Starts a throwaway cluster with the PostgreSQL in --pgbin (jobq preloaded,
background workers on, Unix socket in a temporary directory only), and
for --seconds runs several sessions at once against it:

  - calls to every function in schema jobq, found in pg_proc at the start
    (a function added later is fuzzed without a change here), with random
    and edge arguments for each parameter type: NULL, 0, -1, the extremes
    of each integer type, the OIDs of dropped functions and tables,
    empty, long, non-ASCII and injection-shaped text, malformed and deeply
    nested jsonb, extreme and negative intervals, infinite and far
    timestamps, arrays with NULLs, of other shapes and lengths; and, as
    often, names and ids taken from the current state (kinds, queues,
    jobs with their lease tokens, schedules, subscriptions), so that calls
    get past the argument checks;
  - stateful sequences: handlers that succeed, fail with many SQLSTATEs,
    sleep past their timeout, use the idempotency toolkit, enqueue more
    jobs, call jobq's functions on their own job or drop themselves;
    kinds registered with them and their jobs enqueued, claimed,
    completed, failed, heartbeated and snoozed (with good and stale
    tokens), run by run_pending and by the background workers; schedules
    fired; subscriptions with writes to their tables; operator actions;
    all of it also inside explicit transactions that commit or roll back;
  - DDL churn: handlers and subscribed tables dropped and made again,
    columns added and dropped, kinds unregistered, DROP EXTENSION and
    CREATE EXTENSION (also from the oldest version and updated), worker
    settings changed and reloaded, workers' jobs cancelled.

Session 0 is a superuser; session 1 a member of jobq_admin; the others
reconnect every few seconds as a role drawn from jobq_admin,
jobq_operator + jobq_worker, jobq_producer and a role with no jobq role at
all.  Errors caused by bad arguments are expected.  The run FAILS on:

  - an error with SQLSTATE XX000, XX001 or XX002 (an internal error: an
    elog() that "cannot happen" happened, or corrupted data), but for
    PostgreSQL's own errors of a statement that waited for a concurrent
    DROP EXTENSION (see RACES: they are listed in the summary);
  - a connection lost, or a statement that hangs past every timeout;
  - in the server log: a process terminated by a signal, a crash restart,
    a failed assertion (TRAP), a PANIC, a jobq background worker or
    launcher that exited with a non-zero code, an XX00x error of a process
    other than the sessions', an AddressSanitizer report (also as a
    report file);
  - at the end, jobq not working: the workers must still run a job.

On a failure it prints the last statements of every session with their
outcomes, the server log's tail and the reports, and keeps the cluster's
directory.  The same --seed makes the same choices in each session (the
interleaving of the sessions, and so the ids, still vary).

Needs python3-psycopg (Debian), used through its libpq layer only.
"""

import argparse
import collections
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from psycopg import pq

RING = 50                 # statements kept per session for the report
HANG_SECONDS = 60         # a statement running longer than this is a hang
STATEMENT_TIMEOUT = '8s'  # each session's; a wait on a lock ends with 57014
INTERNAL = ('XX000', 'XX001', 'XX002')
DDL_LOCK = 741852         # the advisory lock of the fuzzer's own DDL
ROLES = ['fuzz_admin', 'fuzz_operator', 'fuzz_producer', 'fuzz_nobody']

# The server log lines that fail the run.
LOG_FAILURES = re.compile(
    r'terminated by signal|server process .* was terminated|'
    r'all server processes terminated; reinitializing|'
    r'background worker "jobq [a-z]+" \(PID \d+\) exited with exit code [1-9]|'
    r'TRAP: |PANIC: |AddressSanitizer|runtime error: |'
    r'\[\d+\] (?!client backend )\S.*? XX00[012] +(ERROR|FATAL|PANIC): ')
# (The sessions check their own errors, see RACES.)
#
# A statement that starts while DROP EXTENSION is running can wait for
# that command's locks and then meet the objects it resolved before gone:
# PostgreSQL itself then fails with XX000, as it does for any function
# whose return type is dropped under a waiting call, e.g.
#   s1: BEGIN; DROP EXTENSION jobq;     s2: SELECT * FROM jobq.claim('q');
#   s1: COMMIT;   s2: ERROR:  could not open relation with OID 16531
# These messages, in statements that overlap a DROP or CREATE EXTENSION,
# are counted and listed in the summary, not failures.  The same message
# at any other time fails the run.
RACES = re.compile(r'(could not open relation with OID \d+|cache lookup failed for .*|'
                   r'tuple concurrently (updated|deleted))$')
# After the shutdown request, only crashes count (the launcher ends with
# exit code 1 on SIGTERM, as every FATAL does).
LOG_CRASHES = re.compile(
    r'terminated by signal|server process .* was terminated|TRAP: |PANIC: |'
    r'AddressSanitizer|runtime error: ')


def lit(s):
    """A SQL string literal (standard_conforming_strings is on)."""
    return "'" + s.replace("'", "''") + "'"


def short(s, n=300):
    s = s.replace('\n', ' ')
    return s if len(s) <= n else s[:n] + '...(%d chars)' % len(s)


class Failure(Exception):
    pass


# ---------------------------------------------------------------------------
# The cluster

class Cluster:
    def __init__(self, pgbin, workdir, port):
        self.pgbin = pgbin
        self.dir = workdir
        self.data = os.path.join(workdir, 'data')
        self.log = os.path.join(workdir, 'server.log')
        self.asan_dir = os.path.join(workdir, 'asan')
        self.port = port
        self.log_offset = 0
        self.shutdown_offset = None
        os.makedirs(self.asan_dir, exist_ok=True)
        self.env = dict(os.environ)
        for v in ('PGOPTIONS', 'PGHOST', 'PGPORT', 'PGDATABASE', 'PGUSER', 'PGSERVICE'):
            self.env.pop(v, None)
        # Reports of an ASan build go to files of this run (the options of
        # test/asan/build.sh's wrapper, with this run's directory).
        self.env['ASAN_OPTIONS'] = (os.environ.get(
            'ASAN_OPTIONS', 'detect_leaks=0:abort_on_error=1') +
            ':log_path=' + os.path.join(self.asan_dir, 'asan'))

    def run(self, *args):
        subprocess.run([os.path.join(self.pgbin, args[0])] + list(args[1:]),
                       env=self.env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=300)

    def init(self, workers):
        self.run('initdb', '-D', self.data, '-A', 'trust', '--no-locale', '-E', 'UTF8',
                 '-U', 'fuzz_super')
        with open(os.path.join(self.data, 'postgresql.conf'), 'a') as f:
            f.write("""
shared_preload_libraries = 'jobq'
listen_addresses = ''
unix_socket_directories = '%s'
port = %d
max_connections = 40
fsync = off
synchronous_commit = off
jit = off
restart_after_crash = off
deadlock_timeout = '100ms'
log_line_prefix = '%%m [%%p] %%b %%e '
log_min_error_statement = panic
jobq.workers_per_database = %d
jobq.poll_interval = '50ms'
jobq.shutdown_grace = '3s'
""" % (self.dir, self.port, workers))

    def start(self):
        self.run('pg_ctl', '-D', self.data, '-l', self.log, '-w', '-t', '120', 'start')

    def stop(self):
        self.shutdown_offset = os.path.getsize(self.log)
        try:
            self.run('pg_ctl', '-D', self.data, '-m', 'fast', '-w', '-t', '60', 'stop')
        except Exception:
            self.run('pg_ctl', '-D', self.data, '-m', 'immediate', '-w', 'stop')

    def conninfo(self, user):
        return ('host=%s port=%d dbname=postgres user=%s application_name=fuzz'
                % (self.dir, self.port, user))

    def new_log_failures(self):
        """Failure lines of the server log since the last call."""
        found = []
        try:
            with open(self.log, 'rb') as f:
                f.seek(self.log_offset)
                data = f.read()
        except FileNotFoundError:
            return found
        end = data.rfind(b'\n') + 1
        self.log_offset += end
        pos = self.log_offset - end
        for line in data[:end].decode('utf-8', 'replace').splitlines():
            in_shutdown = self.shutdown_offset is not None and pos >= self.shutdown_offset
            pos += len(line.encode('utf-8', 'replace')) + 1
            pattern = LOG_CRASHES if in_shutdown else LOG_FAILURES
            if pattern.search(line):
                found.append(line)
        return found

    def asan_reports(self):
        return sorted(os.path.join(self.asan_dir, f) for f in os.listdir(self.asan_dir))

    def log_tail(self, n):
        try:
            with open(self.log, 'rb') as f:
                f.seek(max(0, os.path.getsize(self.log) - 400000))
                lines = f.read().decode('utf-8', 'replace').splitlines()
        except FileNotFoundError:
            return []
        return lines[-n:]


# ---------------------------------------------------------------------------
# A connection, through libpq directly: no type conversion of results
# (infinite timestamps, huge numbers), every SQLSTATE and source location
# of an error at hand.

class Result:
    def __init__(self, ok, rows=None, sqlstate=None, message=None, where=None,
                 lost=False):
        self.ok = ok
        self.rows = rows or []
        self.sqlstate = sqlstate
        self.message = message
        self.where = where
        self.lost = lost

    def outcome(self):
        if self.lost:
            return 'CONNECTION LOST: %s' % short(self.message or '', 200)
        if self.ok:
            return 'ok (%d rows)' % len(self.rows)
        return 'ERROR %s: %s%s' % (self.sqlstate, short(self.message or '', 200),
                                   ' [%s]' % self.where if self.where else '')


class Conn:
    def __init__(self, conninfo):
        self.pg = pq.PGconn.connect(conninfo.encode())
        if self.pg.status != pq.ConnStatus.OK:
            msg = self.pg.error_message.decode('utf-8', 'replace')
            self.pg.finish()
            raise Failure('could not connect: %s' % msg.strip())
        self.pg.notice_handler = lambda res: None
        self.pid = self.pg.backend_pid

    def close(self):
        self.pg.finish()

    def execute(self, sql):
        res = self.pg.exec_(sql.encode('utf-8'))
        if self.pg.status == pq.ConnStatus.BAD:
            return Result(False, message=self.pg.error_message.decode('utf-8', 'replace'),
                          lost=True)
        st = res.status
        if st == pq.ExecStatus.TUPLES_OK:
            rows = [[None if res.get_value(r, c) is None
                     else res.get_value(r, c).decode('utf-8', 'replace')
                     for c in range(res.nfields)] for r in range(min(res.ntuples, 200))]
            names = [res.fname(c).decode() for c in range(res.nfields)]
            r = Result(True, rows)
            r.names = names
            return r
        if st in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.EMPTY_QUERY):
            r = Result(True)
            r.names = []
            return r

        def field(f):
            v = res.error_field(f)
            return v.decode('utf-8', 'replace') if v is not None else None
        where = None
        if field(pq.DiagnosticField.SOURCE_FILE):
            where = '%s:%s %s' % (field(pq.DiagnosticField.SOURCE_FILE),
                                  field(pq.DiagnosticField.SOURCE_LINE),
                                  field(pq.DiagnosticField.SOURCE_FUNCTION))
        return Result(False, sqlstate=field(pq.DiagnosticField.SQLSTATE),
                      message=field(pq.DiagnosticField.MESSAGE_PRIMARY)
                      or res.error_message.decode('utf-8', 'replace'),
                      where=where)

    def in_transaction(self):
        return self.pg.transaction_status in (pq.TransactionStatus.INTRANS,
                                              pq.TransactionStatus.INERROR)


# ---------------------------------------------------------------------------
# What the sessions know of the current state, refreshed by session 0 and
# fed by the results of calls.

class Pool:
    def __init__(self):
        self.lock = threading.Lock()
        self.kinds = ['fz.a', 'fz.b']
        self.queues = ['default', 'fz_q1']
        self.schedules = ['fz.s1']
        self.subscriptions = ['fz.sub1']
        self.handlers = []          # signatures, as regprocedure text
        self.tables = []            # fuzz.* tables
        self.jobs = collections.deque(maxlen=200)
        self.leases = collections.deque(maxlen=100)   # (id, token)
        self.dropped_functions = collections.deque([4294967295], maxlen=50)
        self.dropped_tables = collections.deque([4294967294], maxlen=50)

    def pick(self, rng, name):
        with self.lock:
            items = list(getattr(self, name))
        return rng.choice(items) if items else None

    def add_job(self, i):
        with self.lock:
            self.jobs.append(i)

    def add_lease(self, i, token):
        with self.lock:
            self.leases.append((i, token))
            self.jobs.append(i)

    def refresh(self, rows):
        fresh = collections.defaultdict(list)
        for tag, value in rows:
            if value is not None:
                fresh[tag].append(value)
        with self.lock:
            for tag, name in (('k', 'kinds'), ('q', 'queues'), ('s', 'schedules'),
                              ('u', 'subscriptions'), ('h', 'handlers'), ('t', 'tables')):
                if fresh[tag]:
                    setattr(self, name, fresh[tag])
            for j in fresh['j']:
                self.jobs.append(j)
            for l in fresh['l']:
                i, token = l.split(':')
                self.leases.append((i, token))

    REFRESH_SQL = """
SELECT 'k', name FROM jobq.kind
UNION ALL SELECT 'q', name FROM jobq.queue
UNION ALL SELECT 's', name FROM jobq.schedule
UNION ALL SELECT 'u', name FROM jobq.subscription
UNION ALL (SELECT 'j', id::text FROM jobq.job ORDER BY id DESC LIMIT 30)
UNION ALL (SELECT 'j', id::text FROM jobq.job WHERE state <> 'pending' ORDER BY random() LIMIT 20)
UNION ALL (SELECT 'l', id || ':' || lease_token FROM jobq.job WHERE state = 'running' LIMIT 20)
UNION ALL SELECT 'h', 'fuzz.' || quote_ident(p.proname) || '(' || oidvectortypes(p.proargtypes)
                     || ')' FROM pg_proc p WHERE p.pronamespace = 'fuzz'::regnamespace
UNION ALL SELECT 't', 'fuzz.' || quote_ident(c.relname) FROM pg_class c
           WHERE c.relnamespace = 'fuzz'::regnamespace AND c.relkind IN ('r', 'p', 'v')
"""


# ---------------------------------------------------------------------------
# Values: SQL expressions of each type, edge cases and state alike.

TEXT_EDGE = [
    '', ' ', 'a', 'A', 'default', 'DEFAULT', 'null', 'NULL', '.', '..', 'a.', '.a', 'a..b',
    'fz.', 'fz..x', 'fz.Upper', '1fz.a', 'fz-a.b', 'fz a', 'fz.a ', ' fz.a',
    "'; DROP TABLE fuzz.t1; --", '"quoted"', '%s%n%x%p', '\\', '\\x00', '\\0',
    'ä', 'fz.ä', 'Ünïcödé', '日本語のキュー', '🙂' * 20, '\u202eevil', '\ufeffbom',
    'a\tb\nc\rd', 'x' * 63, 'x' * 64, 'fz.' + 'x' * 97, 'fz.' + 'x' * 98, 'x' * 1000,
    'x' * 100000, 'pg_catalog.now', 'jobq.job', 'public', 'pg_temp', '$1', '?', '*',
    'insert', 'update', 'delete', 'truncate', 'skip', 'queue', 'allow', 'once', 'all',
]
CRONS = [
    '* * * * *', '*/5 * * * *', '0 0 29 2 *', '0 0 31 2 *', '59 23 31 12 *', '0 2 * * *',
    '30 2 * 3 0', '0-59/7 0-23/5 1-31/3 1-12/2 0-7', 'MON-FRI', '0 12 * JAN-DEC SUN',
    '@every 1 second', '@every 1 microsecond', '@every 0 seconds', '@every -1 day',
    '@every 1000000 years', '@every 2147483647 days', '@every 1 mon', '@every',
    '@every 1 s', '@every 0.5 seconds', '@every 1 day 1 hour',
    '@hourly', '@daily', '@weekly', '@monthly', '@yearly', '@annually', '@midnight',
    '@reboot', '@', '61 * * * *', '* 24 * * *', '* * 0 * *', '* * * 13 *', '* * * * 8',
    '* * * *', '* * * * * *', '*/0 * * * *', '*/2147483647 * * * *', '4294967296 * * * *',
    '1-0 * * * *', '5-1/2 * * * *', ',,, * * * *', '- * * * *', '*/ * * * *',
    '0 0 1,15,31 * *', '0 0 L * *', '0 0 ? * *', '  *  *  *  *  *  ',
]
TIMEZONES = [
    'UTC', 'Europe/Berlin', 'America/New_York', 'Australia/Lord_Howe', 'Pacific/Chatham',
    'Asia/Kathmandu', 'Pacific/Kiritimati', 'Etc/GMT-14', 'Etc/GMT+12', 'EST5EDT',
    'America/Sao_Paulo', 'Europe/London', 'utc', 'Nowhere/Nothing', '', '+25:00',
    'UTC+14', 'posixrules', 'localtime', 'Factory', 'Europe/Berlin ', '../../etc/passwd',
]
INTERVALS = [
    '0', '1 microsecond', '1 ms', '5 ms', '10 ms', '100 ms', '1 s', '2 s', '1 min', '1 hour',
    '1 day', '1 mon', '-1 s', '-1 day', '178000000 years', '-178000000 years',
    '2147483647 days', '-2147483648 days', '2147483647 mons', '2562047788 hours',
    '1 day -86400 s', '@ 1 minute ago', '1 mon -30 days', 'P1Y2M3DT4H5M6S',
    '00:00:00.000001', '-00:00:00.000001', '1000000 years',
]
TIMESTAMPS = [
    'now()', "'infinity'", "'-infinity'", "'epoch'", "'4713-01-01 00:00:00+00 BC'",
    "'294276-12-31 23:59:59+00'", "now() + interval '1 s'", "now() - interval '1 hour'",
    "now() + interval '100 years'", "now() - interval '100 years'",
    "'2024-03-31 02:30:00 Europe/Berlin'", "'2024-11-03 01:30:00 America/New_York'",
    "now() + interval '50 ms'", "clock_timestamp()", "'2000-01-01'", "'1970-01-01 00:00:00+00'",
]
INTS = ['0', '-1', '1', '2', '3', '10', '100', '1000', '100000', '2147483647', '-2147483648',
        '1001', '10001']
BIGINTS = ['0', '-1', '1', '2', '9223372036854775807', '-9223372036854775808',
           '4294967296', '2147483648']
EVENTS = ['insert', 'update', 'delete', 'truncate', 'INSERT', 'select', '', 'insert ']
ERRCODES = ['P0001', '22023', '22004', '40001', '40P01', '23505', '57014', '53200',
            '55P03', '42501', '25P02', '0A000', '2D000', '54001', 'FZ999', '42P01']


def jsonb_values(rng):
    d = rng.choice([2, 50, 500, 5000])
    n = rng.choice([10, 1000])
    return rng.choice([
        "'{}'", "'[]'", "'null'", "'0'", "'1e308'", "'-1e-308'", "'\"s\"'", "'true'",
        "'{\"a\": 1}'", "'{\"order\": %d}'" % rng.randint(1, 50),
        "jsonb_build_object('n', %d, 't', %s)" % (rng.randint(0, 9), lit(rng.choice(TEXT_EDGE[:30]))),
        "'%s'" % ('[' * d + ']' * d),
        "'%s'" % ('{"a":' * d + '1' + '}' * d),
        "(SELECT jsonb_object_agg('k' || i, i) FROM generate_series(1, %d) i)" % n,
        "'\"\\ud83d\\ude00\"'", "'\"\\u0000\"'", "'123456789012345678901234567890.1234567890'",
        "jsonb_build_object('big', repeat('x', %d))" % rng.choice([1000, 1048000, 1048576, 2000000]),
        "'{'", "'{\"a\":}'", "'NaN'", "'{\"a\": 1, \"a\": 2}'", "to_jsonb(now())",
        "to_jsonb('infinity'::timestamptz)", "'[null, {\"\": \"\"}]'",
    ])


class Gen:
    """Argument values for one session."""

    def __init__(self, rng, pool, session):
        self.rng = rng
        self.pool = pool
        self.session = session

    def text(self):
        r = self.rng
        if r.random() < 0.15:
            return 'NULL'
        return lit(r.choice(TEXT_EDGE)) if r.random() < 0.8 else lit(
            ''.join(chr(r.choice([r.randint(32, 126), r.randint(160, 0x2fff), r.randint(0x1f300, 0x1f64f)]))
                    for _ in range(r.randint(1, 40))))

    def name_from(self, what, valid_share=0.75):
        r = self.rng
        if r.random() < valid_share:
            v = self.pool.pick(r, what)
            if v is not None:
                return lit(v)
        return self.text()

    def kind(self):
        r = self.rng
        if r.random() < 0.3:
            return lit('fz.%s' % r.choice('abcdefg'))
        return self.name_from('kinds')

    def job_id(self):
        r = self.rng
        if r.random() < 0.7:
            v = self.pool.pick(r, 'jobs')
            if v is not None:
                return str(v)
        return r.choice(BIGINTS + ['NULL'])

    def bigint(self):
        r = self.rng
        if r.random() < 0.3:
            return self.job_id()
        return r.choice(BIGINTS + ['NULL', str(r.randint(-10**6, 10**6)),
                                   str(r.randint(-2**63, 2**63 - 1))])

    def integer(self):
        r = self.rng
        return r.choice(INTS + ['NULL', str(r.randint(-5, 20))])

    def interval(self):
        r = self.rng
        return 'NULL' if r.random() < 0.1 else "interval %s" % lit(r.choice(INTERVALS))

    def timestamptz(self):
        r = self.rng
        return 'NULL' if r.random() < 0.1 else '(%s)::timestamptz' % r.choice(TIMESTAMPS)

    def jsonb(self):
        r = self.rng
        return 'NULL' if r.random() < 0.1 else '(%s)::jsonb' % jsonb_values(r)

    def boolean(self):
        return self.rng.choice(['true', 'false', 'NULL'])

    def array(self, elem, n_max=5):
        r = self.rng
        shape = r.random()
        if shape < 0.08:
            return 'NULL'
        if shape < 0.16:
            return "'{}'"
        if shape < 0.22:
            return 'ARRAY[NULL]'
        if shape < 0.27:     # two dimensions
            a, b, c, d = (elem() for _ in range(4))
            return 'ARRAY[[%s, %s], [%s, %s]]' % (a, b, c, d)
        if shape < 0.30:     # many
            return 'ARRAY[%s]' % ', '.join(elem() for _ in range(r.choice([100, 1000])))
        return 'ARRAY[%s]' % ', '.join(elem() for _ in range(r.randint(1, n_max)))

    def regprocedure(self):
        r = self.rng
        c = r.random()
        if c < 0.5:
            v = self.pool.pick(r, 'handlers')
            if v is not None:
                return '%s::regprocedure' % lit(v)
        if c < 0.65:
            v = self.pool.pick(r, 'dropped_functions')
            return '%s::oid::regprocedure' % v
        return r.choice([
            'NULL', '0::regprocedure', "'pg_catalog.now()'::regprocedure",
            "'pg_catalog.pg_sleep(double precision)'::regprocedure",
            "'pg_catalog.jsonb_typeof(jsonb)'::regprocedure",
            "'pg_catalog.jsonb_strip_nulls(jsonb)'::regprocedure",
            "'pg_catalog.to_jsonb(anyelement)'::regprocedure",
            "'pg_catalog.sum(integer)'::regprocedure", "'pg_catalog.row_number()'::regprocedure",
            "'jobq.run_pending(integer)'::regprocedure", "'jobq.dispatch()'::regprocedure",
            "'jobq.enqueue(text,jsonb,text,timestamptz,integer,text,text)'::regprocedure",
            "'jobq.step_result(bigint,text,bigint)'::regprocedure",
            "'pg_catalog.jsonb_agg(anyelement)'::regprocedure",
        ])

    def regclass(self):
        r = self.rng
        c = r.random()
        if c < 0.5:
            v = self.pool.pick(r, 'tables')
            if v is not None:
                return '%s::regclass' % lit(v)
        if c < 0.65:
            return '%s::oid::regclass' % self.pool.pick(r, 'dropped_tables')
        return r.choice([
            'NULL', '0::regclass', "'pg_catalog.pg_class'::regclass", "'jobq.job'::regclass",
            "'jobq.jobs'::regclass", "'jobq.job_id_seq'::regclass", "'jobq.subscription'::regclass",
            "'information_schema.tables'::regclass", "'pg_temp.fz_temp'::regclass",
            "'pg_catalog.pg_class_oid_index'::regclass",
        ])

    def value(self, typ, name):
        """An SQL expression for a parameter of type typ named name."""
        r = self.rng
        name = name or ''
        if r.random() < 0.05:
            return 'NULL'
        if typ == 'text':
            if name == 'kind':
                return self.kind()
            if name == 'queue':
                return self.name_from('queues')
            if name == 'name':
                return self.name_from(r.choice(['schedules', 'subscriptions']))
            if name == 'cron':
                return lit(r.choice(CRONS)) if r.random() < 0.9 else self.text()
            if name == 'timezone':
                return lit(r.choice(TIMEZONES))
            if name == 'overlap':
                return lit(r.choice(['skip', 'queue', 'allow', 'SKIP', 'none']))
            if name == 'misfire':
                return lit(r.choice(['skip', 'once', 'all', 'ALL', 'some']))
            if name in ('step', 'operation_id', 'idempotency_key', 'concurrency_key'):
                return lit(r.choice(['s', 'k%d' % r.randint(0, 5), 'step']) if r.random() < 0.6
                           else r.choice(TEXT_EDGE))
            return self.text()
        if typ == 'bigint':
            if name in ('id', 'job_id'):
                return self.job_id()
            return self.bigint()
        if typ == 'integer':
            return self.integer()
        if typ == 'interval':
            return self.interval()
        if typ == 'timestamp with time zone':
            return self.timestamptz()
        if typ == 'jsonb':
            return self.jsonb()
        if typ == 'boolean':
            return self.boolean()
        if typ == 'regprocedure':
            return self.regprocedure()
        if typ == 'regclass':
            return self.regclass()
        if typ == 'jsonb[]':
            return '(%s)::jsonb[]' % self.array(self.jsonb, 8)
        if typ == 'bigint[]':
            return '(%s)::bigint[]' % self.array(self.job_id if name in ('ids', 'after')
                                                 else self.bigint)
        if typ == 'text[]':
            if name == 'events':
                return '(%s)::text[]' % self.array(lambda: lit(r.choice(EVENTS)), 4)
            if name == 'side_effects':
                return '(%s)::text[]' % self.array(
                    lambda: lit(r.choice(['email', 'sms', 'payment', '', 'x' * 200])), 3)
            return '(%s)::text[]' % self.array(self.text)
        # A type this fuzzer does not know yet: NULL or a text literal.
        return r.choice(['NULL::%s' % typ, "'0'::%s" % typ, "''::%s" % typ])


# ---------------------------------------------------------------------------
# jobq's functions, as pg_proc has them.

class Function:
    def __init__(self, name, kind, retset, rettype, composite, argtypes, argnames, ndefaults):
        self.name = name
        self.kind = kind
        self.retset = retset
        self.rettype = rettype
        self.composite = composite
        self.argtypes = argtypes
        self.argnames = argnames
        self.ndefaults = ndefaults

    def signature(self):
        return 'jobq.%s(%s)' % (self.name, ', '.join(self.argtypes))


FUNCTIONS_SQL = """
SELECT p.proname, p.prokind, p.proretset, format_type(p.prorettype, NULL),
       t.typtype = 'c' OR p.prorettype = 'record'::regtype,
       p.pronargdefaults,
       (SELECT string_agg(format_type(a, NULL), ',' ORDER BY n)
          FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS u(a, n)),
       p.proargnames, p.proargmodes
  FROM pg_proc p JOIN pg_type t ON t.oid = p.prorettype
 WHERE p.pronamespace = 'jobq'::regnamespace
 ORDER BY 1, 7
"""


def array_items(text):
    """The items of a one-dimensional array of simple names, as text."""
    if not text or text == '{}':
        return []
    return [x.strip('"') for x in text[1:-1].split(',')]


def load_functions(conn):
    res = conn.execute(FUNCTIONS_SQL)
    if not res.ok:
        raise Failure('cannot list jobq functions: %s' % res.outcome())
    funcs = []
    for name, kind, retset, rettype, composite, ndef, types, names, modes in res.rows:
        types = types.split(',') if types else []
        names = array_items(names)
        modes = array_items(modes) or ['i'] * len(names)
        names = [n for n, m in zip(names, modes) if m in ('i', 'b', 'v')]
        names += [''] * (len(types) - len(names))
        funcs.append(Function(name, kind, retset == 't', rettype, composite == 't',
                              types, names, int(ndef)))
    return funcs


# ---------------------------------------------------------------------------
# A session

class Session(threading.Thread):
    def __init__(self, fuzz, no, seed):
        super().__init__(name='session-%d' % no, daemon=True)
        self.fuzz = fuzz
        self.no = no
        self.rng = random.Random('%s:%d' % (seed, no))
        self.gen = Gen(self.rng, fuzz.pool, self)
        self.ring = collections.deque(maxlen=RING)
        self.conn = None
        self.role = None
        self.superuser = no == 0
        self.running_since = None
        self.current = None
        self.failure = None
        self.statements = 0
        self.reconnect_at = 0
        self.stats = fuzz.stats

    # -- connection and statements

    def connect(self, role):
        if self.conn is not None:
            self.conn.close()
        self.role = role
        self.conn = Conn(self.fuzz.cluster.conninfo(role))
        self.ring.append('%8.3f  -- connected as %s, pid %d'
                         % (self.fuzz.elapsed(), role, self.conn.pid))
        for s in ("SET statement_timeout = '%s'" % STATEMENT_TIMEOUT,
                  "SET lock_timeout = '3s'",
                  "SET search_path = fuzz, public"):
            self.sql(s)

    def sql(self, statement, what=None):
        """Run one statement; record it; raise Failure on a failure."""
        if self.fuzz.stop.is_set():
            raise StopIteration
        self.current = statement
        start = self.running_since = time.monotonic()
        res = self.conn.execute(statement)
        self.running_since = None
        self.statements += 1
        self.ring.append('%8.3f  %s\n            => %s'
                         % (self.fuzz.elapsed(), short(statement), res.outcome()))
        self.stats.record(what, res)
        if res.lost:
            raise Failure('session %d (%s): the connection was lost at: %s'
                          % (self.no, self.role, short(statement, 1000)))
        if (not res.ok and res.sqlstate in INTERNAL and RACES.match(res.message or '')
                and self.fuzz.during_extension_churn(start, time.monotonic())):
            self.stats.race(what, res.message, statement)
        elif not res.ok and res.sqlstate in INTERNAL:
            raise Failure('session %d (%s): internal error %s "%s" at %s, from: %s'
                          % (self.no, self.role, res.sqlstate, res.message, res.where,
                             short(statement, 1000)))
        return res

    def ddl(self, *statements, what='ddl'):
        """Run the fuzzer's own DDL, in one transaction, one session at a time.

        PostgreSQL itself fails with XX000 "tuple concurrently updated" when
        two sessions GRANT on, or replace, one object at once: the fuzzer's
        DDL takes an advisory lock first, so that every XX000 left is one
        that jobq's code met.  jobq's functions run concurrently with it all
        the same.
        """
        outer = self.conn.in_transaction()
        if not outer:
            self.sql('BEGIN')
        self.sql('SELECT pg_advisory_xact_lock(%d)' % DDL_LOCK, 'ddl lock')
        res = None
        for s in statements:
            res = self.sql(s, what)
            if not res.ok:
                break
        if not outer:
            self.sql('COMMIT')
        return res

    def run(self):
        try:
            self.connect('fuzz_super' if self.superuser else
                         'fuzz_admin' if self.no == 1 else self.rng.choice(ROLES))
            self.reconnect_at = time.monotonic() + self.rng.uniform(2, 8)
            while not self.fuzz.stop.is_set():
                self.step()
        except StopIteration:
            pass
        except Failure as e:
            self.failure = str(e)
            self.fuzz.stop.set()
        except Exception as e:   # a bug of the fuzzer itself: also a failure
            import traceback
            self.failure = 'session %d: fuzzer error: %s\n%s' % (
                self.no, e, traceback.format_exc())
            self.fuzz.stop.set()
        finally:
            try:
                if self.conn is not None:
                    self.conn.close()
            except Exception:
                pass

    def step(self):
        r = self.rng
        if self.conn.in_transaction() and r.random() < 0.5:
            self.sql(r.choice(['COMMIT', 'ROLLBACK']))
        if time.monotonic() > self.reconnect_at:
            # Leaves whatever leases this session held to be rescued.  The
            # first two sessions keep their role, and stay longer.
            self.connect(self.role if self.no < 2 else r.choice(ROLES))
            self.reconnect_at = time.monotonic() + (r.uniform(10, 30) if self.no < 2
                                                    else r.uniform(2, 8))
        if self.superuser and r.random() < 0.08:
            self.refresh()
        actions = [
            (30, self.random_call),
            (10, self.kind_lifecycle),
            (10, self.external_worker),
            (5, self.schedules),
            (6, self.subscriptions),
            (6, self.operator),
            (6, self.transaction),
            (5, self.ddl_churn),
            (3, self.views),
            (2, self.session_settings),
        ]
        if self.superuser:
            actions += [(3, self.superuser_churn)]
        total = sum(w for w, _ in actions)
        x = r.uniform(0, total)
        for w, action in actions:
            x -= w
            if x <= 0:
                action()
                break

    def refresh(self):
        res = self.sql(Pool.REFRESH_SQL, 'refresh')
        if res.ok:
            self.fuzz.pool.refresh(res.rows)

    def harvest(self, fn, res):
        """Remember the ids and lease tokens a call returned."""
        if not res.ok or not res.rows:
            return
        names = getattr(res, 'names', [])
        if 'lease_token' in names and 'id' in names:
            i, t = names.index('id'), names.index('lease_token')
            for row in res.rows:
                if row[i] is not None and row[t] is not None:
                    self.fuzz.pool.add_lease(row[i], row[t])
        elif fn in ('enqueue', 'enqueue_many', 'run_schedule_now'):
            for row in res.rows:
                if row and row[0] is not None:
                    self.fuzz.pool.add_job(row[0])

    # -- calls of any jobq function

    def call_sql(self, fn, args=None):
        """An SQL statement calling fn with random arguments (or args)."""
        r = self.rng
        if args is None:
            nreq = len(fn.argtypes) - fn.ndefaults
            n = len(fn.argtypes) if r.random() < 0.5 else r.randint(nreq, len(fn.argtypes))
            named = (r.random() < 0.2 and all(fn.argnames)
                     and n < len(fn.argtypes))
            if named:
                idx = list(range(nreq)) + sorted(r.sample(range(nreq, len(fn.argtypes)),
                                                          r.randint(0, fn.ndefaults)))
                parts = ['%s => %s' % (fn.argnames[i], self.gen.value(fn.argtypes[i], fn.argnames[i]))
                         for i in idx]
                r.shuffle(parts)
            else:
                parts = [self.gen.value(fn.argtypes[i], fn.argnames[i]) for i in range(n)]
            args = ', '.join(parts)
        call = 'jobq.%s(%s)' % (fn.name, args)
        if fn.kind == 'p':
            return 'CALL ' + call
        if fn.retset or fn.composite:
            return 'SELECT * FROM %s LIMIT 50' % call
        return 'SELECT %s' % call

    def call(self, name, args):
        fn = self.fuzz.function(name)
        if fn is None:
            return None
        res = self.sql(self.call_sql(fn, args), fn.name)
        self.harvest(fn.name, res)
        return res

    def random_call(self):
        fn = self.rng.choice(self.fuzz.functions)
        res = self.sql(self.call_sql(fn), fn.name)
        self.harvest(fn.name, res)

    # -- handlers

    def handler_body(self, hname):
        """The body of a plpgsql handler with a random behaviour."""
        r = self.rng
        kind = self.gen.kind()
        code = r.choice(ERRCODES)
        behaviours = [
            "RETURN jsonb_build_object('ok', true, 'p', p);",
            "RETURN p;",
            "RETURN NULL;",
            "RETURN '[1, 2, 3]';",
            "RETURN jsonb_build_object('big', repeat('x', %d));" % r.choice([100, 1100000]),
            "RAISE EXCEPTION 'fuzz failure %%', p USING ERRCODE = '%s', DETAIL = 'd', HINT = 'h';" % code,
            "RAISE EXCEPTION '%s' USING ERRCODE = '%s';" % ('m' * r.choice([10, 100000]), code),
            "PERFORM pg_sleep(%s); RETURN p;" % r.choice(['0.001', '0.02', '0.1', '0.3']),
            "INSERT INTO fuzz.effects (job, payload) VALUES ((jobq.current_job()).id, p); RETURN p;",
            "PERFORM jobq.once('op-' || ((jobq.current_job()).id %% 5)); "
            "PERFORM jobq.record_step((jobq.current_job()).id, 'st', p); "
            "RETURN jobq.step_result((jobq.current_job()).id, 'st') "
            "|| jsonb_build_object('key', jobq.external_key((jobq.current_job()).id, 'x'));",
            "PERFORM jobq.enqueue(%s, p, idempotency_key => md5(p::text)); RETURN NULL;" % kind,
            "PERFORM jobq.run_pending(3); RETURN NULL;",
            "PERFORM jobq.cancel((jobq.current_job()).id, 'self'); RETURN NULL;",
            "PERFORM jobq.unregister_kind((jobq.current_job()).kind); RETURN NULL;",
            "PERFORM jobq.retry((jobq.current_job()).id); RETURN NULL;",
            "PERFORM pg_advisory_xact_lock(%d); EXECUTE 'DROP FUNCTION IF EXISTS fuzz.%s(jsonb)'; "
            "RETURN NULL;" % (DDL_LOCK, hname),
            "PERFORM set_config('search_path', 'pg_temp', false); "
            "PERFORM set_config('statement_timeout', '1', true); RETURN p;",
            "BEGIN PERFORM pg_sleep(0.2); EXCEPTION WHEN query_canceled THEN "
            "RETURN '{\"caught\": true}'; END; RETURN p;",
            "BEGIN PERFORM 1 / 0; EXCEPTION WHEN division_by_zero THEN NULL; END; RETURN p;",
            "PERFORM pg_advisory_xact_lock(42); PERFORM pg_sleep(0.01); RETURN p;",
            "PERFORM * FROM jobq.claim(%s); RETURN NULL;" % self.gen.name_from('queues'),
            "PERFORM jobq.complete((jobq.current_job()).id, 1); RETURN NULL;",
            "RETURN (SELECT jsonb_agg(x) FROM generate_series(1, 100000) x);",
            "UPDATE fuzz.effects SET payload = p WHERE job %% 3 = 0; RETURN p;",
        ]
        return r.choice(behaviours)

    def make_handler(self):
        """(Re)create one of the fuzz.hN handlers; returns its signature."""
        r = self.rng
        hname = 'h%d' % r.randint(0, 9)
        shape = r.random()
        if shape < 0.75:
            ddl = ("CREATE OR REPLACE FUNCTION fuzz.%s(p jsonb) RETURNS jsonb "
                   "LANGUAGE plpgsql AS $fz$ BEGIN %s END $fz$" % (hname, self.handler_body(hname)))
            sig = 'fuzz.%s(jsonb)' % hname
        elif shape < 0.85:
            hname = 'p%d' % r.randint(0, 3)
            body = r.choice(["COMMIT;", "INSERT INTO fuzz.effects (job, payload) VALUES (0, p);",
                             "PERFORM pg_sleep(0.01);", "RAISE EXCEPTION 'proc' USING ERRCODE = 'FZ001';",
                             "ROLLBACK;"])
            ddl = ("CREATE OR REPLACE PROCEDURE fuzz.%s(p jsonb) LANGUAGE plpgsql "
                   "AS $fz$ BEGIN %s END $fz$" % (hname, body))
            sig = 'fuzz.%s(jsonb)' % hname
        elif shape < 0.92:
            hname = 's%d' % r.randint(0, 2)
            ddl = ("CREATE OR REPLACE FUNCTION fuzz.%s(p jsonb) RETURNS %s LANGUAGE sql AS $fz$ %s $fz$"
                   % (hname, *r.choice([('jsonb', 'SELECT p'), ('void', 'SELECT'),
                                        ('text', 'SELECT p::text'), ('SETOF jsonb', 'SELECT p UNION ALL SELECT p'),
                                        ('integer', 'SELECT 1 / 0')])))
            sig = 'fuzz.%s(jsonb)' % hname
        else:
            hname = 'w%d' % r.randint(0, 2)
            ddl = ("CREATE OR REPLACE FUNCTION fuzz.%s(p %s) RETURNS jsonb LANGUAGE sql AS $fz$ SELECT NULL::jsonb $fz$"
                   % (hname, r.choice(['integer', 'text', 'json', 'jsonb, q jsonb'])))
            sig = None
        if r.random() < 0.3:
            self.drop_function('fuzz.%s' % hname)
        if sig is not None and r.random() < 0.1:
            # The registering role keeps its right to run it; others lose it.
            self.ddl(ddl, 'REVOKE EXECUTE ON ROUTINE %s FROM PUBLIC' % sig)
        else:
            self.ddl(ddl)
        return sig

    def drop_function(self, name):
        res = self.sql("SELECT oid FROM pg_proc WHERE pronamespace = 'fuzz'::regnamespace "
                       "AND proname = %s" % lit(name.split('.')[1]), 'lookup')
        self.ddl('DROP ROUTINE IF EXISTS %s%s' % (name, self.rng.choice(['', ' CASCADE'])))
        for row in res.rows:
            with self.fuzz.pool.lock:
                self.fuzz.pool.dropped_functions.append(row[0])

    def register(self, kind, handler_sig, queue=None):
        r = self.rng
        args = [kind, lit(handler_sig) + '::regprocedure' if handler_sig else 'NULL']
        named = []
        if queue is not None:
            named.append('queue => %s' % queue)
        if r.random() < 0.7:
            named.append("timeout => interval %s" % lit(r.choice(
                ['10 ms', '50 ms', '200 ms', '1 s', '5 minutes', '1 ms'])))
        if r.random() < 0.6:
            named.append('max_attempts => %d' % r.choice([1, 2, 3, 5, 25]))
        if r.random() < 0.5:
            named.append("backoff_base => interval %s" % lit(r.choice(['1 ms', '10 ms', '1 s', '1 hour'])))
        if r.random() < 0.3:
            named.append("backoff_max => interval %s" % lit(r.choice(['10 ms', '1 s', '1 day'])))
        if r.random() < 0.4:
            named.append("side_effects => %s" % r.choice(["'{email}'", "'{}'", "'{email,payment}'"]))
        if r.random() < 0.4:
            named.append("retry_safe => %s" % r.choice(['true', 'false']))
        r.shuffle(named)
        return self.call('register_kind', ', '.join(args + named))

    def enqueue_some(self, kind, n):
        r = self.rng
        for _ in range(n):
            extra = []
            if r.random() < 0.4:
                extra.append('idempotency_key => %s' % lit('k%d' % r.randint(0, 20)))
            if r.random() < 0.3:
                extra.append('run_at => %s' % r.choice(
                    ['now()', "now() + interval '100 ms'", "now() - interval '1 day'",
                     "'infinity'", "'-infinity'", "now() + interval '1 year'"]))
            if r.random() < 0.3:
                extra.append('priority => %s' % r.choice(['0', '-1', '10', '2147483647', '-2147483648']))
            if r.random() < 0.2:
                extra.append('concurrency_key => %s' % lit('c%d' % r.randint(0, 2)))
            if r.random() < 0.2:
                extra.append('queue => %s' % self.gen.name_from('queues'))
            if r.random() < 0.25:
                extra.append('after => %s' % self.gen.value('bigint[]', 'after'))
            self.call('enqueue', ', '.join([kind, self.gen.jsonb() if r.random() < 0.3
                                            else "jsonb_build_object('n', %d)" % r.randint(0, 30)]
                                           + extra))
        if r.random() < 0.3:
            self.call('enqueue_many', '%s, ARRAY[%s]::jsonb[]%s' % (
                kind, ', '.join("'{\"m\": %d}'" % i for i in range(r.randint(1, 20))),
                r.choice(['', ", ARRAY['a','b','a']", ", '{}'", ", ARRAY[NULL, 'x']"])))

    # -- stateful sequences

    def kind_lifecycle(self):
        r = self.rng
        sig = self.make_handler() if r.random() < 0.7 else self.fuzz.pool.pick(r, 'handlers')
        kind = lit('fz.%s' % r.choice('abcdefg'))
        queue = lit(r.choice(['default', 'fz_q1', 'fz_q2'])) if r.random() < 0.5 else None
        self.register(kind, sig, queue)
        self.enqueue_some(kind, r.randint(1, 6))
        if r.random() < 0.6:
            self.call('run_pending', str(r.choice([1, 5, 20, 100])))
        if r.random() < 0.15:
            self.call('unregister_kind', kind)

    def external_worker(self):
        r = self.rng
        queue = lit(r.choice(['fz_ext', 'fz_ext2', 'default']))
        kind = lit('fz.ext%d' % r.randint(0, 2))
        if r.random() < 0.4:
            self.register(kind, None, queue)
        if r.random() < 0.7:
            self.enqueue_some(kind, r.randint(1, 4))
        tx = r.random() < 0.3
        if tx:
            self.sql('BEGIN')
        res = self.call('claim', '%s, %s, %d%s' % (
            queue, lit('w%d' % self.no), r.choice([1, 2, 5, 100]),
            r.choice(['', ", interval '10 ms'", ", interval '1 s'", ", interval '1 hour'", ', NULL',
                      ", NULL, true", ", interval '1 s', false", ", NULL, NULL"])))
        claimed = []
        if res is not None and res.ok:
            names = getattr(res, 'names', [])
            if 'id' in names and 'lease_token' in names:
                claimed = [(row[names.index('id')], row[names.index('lease_token')])
                           for row in res.rows]
        if r.random() < 0.3:
            time.sleep(r.choice([0.01, 0.05]))
        for i, token in claimed or [self.fuzz.pool.pick(r, 'leases') or ('1', '1')]:
            if r.random() < 0.15:
                token = r.choice([str(int(token) + 1), '0', '-1'])
            op = r.random()
            if op < 0.35:
                self.call('complete', '%s, %s%s' % (i, token, r.choice(['', ', NULL', ", '{\"done\": 1}'",
                                                                         ', %s' % self.gen.jsonb()])))
            elif op < 0.55:
                self.call('fail', '%s, %s, %s%s' % (i, token, self.gen.text(),
                                                     r.choice(['', ", interval '1 ms'", ", interval '-1 s'",
                                                               ', NULL', ", interval '1000000 years'"])))
            elif op < 0.65:
                self.call('heartbeat', '%s, %s%s' % (i, token, r.choice(['', ", interval '1 s'", ', NULL',
                                                                          ", interval '-1 day'"])))
            elif op < 0.72:
                self.call('snooze', '%s, %s, %s' % (i, token, self.gen.interval()))
            elif op < 0.82:
                self.call('record_step', '%s, %s, %s, %s' % (i, lit('s%d' % r.randint(0, 2)),
                                                             self.gen.jsonb(), token))
                self.call('step_result', '%s, %s%s' % (i, lit('s%d' % r.randint(0, 2)),
                                                       r.choice(['', ', %s' % token, ', NULL'])))
            elif op < 0.9:
                self.call('external_key', '%s, %s%s' % (i, self.gen.text(),
                                                        r.choice(['', ', %s' % token, ', NULL'])))
            else:
                self.call('complete_many', 'ARRAY[%s]::bigint[], ARRAY[%s]::bigint[]' % (i, token))
        if len(claimed) > 1 and r.random() < 0.5:
            self.call('complete_many', 'ARRAY[%s]::bigint[], ARRAY[%s]::bigint[]' % (
                ', '.join(c[0] for c in claimed), ', '.join(c[1] for c in claimed)))
        if tx:
            self.sql(r.choice(['COMMIT', 'ROLLBACK']))
        if r.random() < 0.1:
            self.call('rescue_leases', '')

    def schedules(self):
        r = self.rng
        name = lit('fz.s%d' % r.randint(0, 3))
        kind = lit('fz.%s' % r.choice('abc'))
        op = r.random()
        if op < 0.5:
            named = []
            for key, gen in (('payload', self.gen.jsonb), ('timezone', lambda: lit(r.choice(TIMEZONES))),
                             ('overlap', lambda: lit(r.choice(['skip', 'queue', 'allow']))),
                             ('misfire', lambda: lit(r.choice(['skip', 'once', 'all']))),
                             ('concurrency_key', lambda: lit('c1')),
                             ('start_at', self.gen.timestamptz)):
                if r.random() < 0.35:
                    named.append('%s => %s' % (key, gen()))
            self.call('schedule', ', '.join([name, lit(r.choice(CRONS)), kind] + named))
        elif op < 0.7:
            self.call('tick_schedules', r.choice(['', 'now()', "now() + interval '1 hour'",
                                                  "now() + interval '10 years'", "'infinity'",
                                                  "'-infinity'", "now() - interval '1 day'",
                                                  "now() + interval '1000 years'"]))
        elif op < 0.8:
            self.call('run_schedule_now', name)
        elif op < 0.88:
            self.call(r.choice(['pause_schedule', 'resume_schedule']), name)
        elif op < 0.95:
            self.call('unschedule', name)
        else:
            self.call('cron_next', '%s, %s, %s' % (lit(r.choice(CRONS)), self.gen.timestamptz(),
                                                   lit(r.choice(TIMEZONES))))

    def make_table(self, t):
        r = self.rng
        kind = r.random()
        if kind < 0.75:
            ddl = ('CREATE TABLE %s (id serial PRIMARY KEY, v text, j jsonb, '
                   'ts timestamptz DEFAULT now())' % t)
        elif kind < 0.85:
            ddl = ('CREATE TABLE %s (id int, v text, j jsonb) PARTITION BY RANGE (id)' % t)
        elif kind < 0.92:
            ddl = 'CREATE VIEW %s AS SELECT 1 AS id, NULL::text AS v, NULL::jsonb AS j' % t
        else:
            ddl = 'CREATE UNLOGGED TABLE %s (id serial, v text, j jsonb)' % t
        self.ddl(ddl, 'GRANT ALL ON %s TO PUBLIC' % t)

    def write_table(self, t):
        r = self.rng
        op = r.random()
        if op < 0.5:
            self.sql("INSERT INTO %s (v, j) SELECT %s, %s FROM generate_series(1, %d)"
                     % (t, self.gen.text(), self.gen.jsonb(), r.choice([1, 1, 3, 50])), 'dml')
        elif op < 0.75:
            self.sql("UPDATE %s SET v = %s WHERE id %% %d = 0" % (t, self.gen.text(), r.randint(1, 4)), 'dml')
        elif op < 0.92:
            self.sql("DELETE FROM %s WHERE id %% %d = 0" % (t, r.randint(1, 4)), 'dml')
        else:
            self.sql("TRUNCATE %s" % t, 'dml')

    def subscriptions(self):
        r = self.rng
        t = 'fuzz.t%d' % r.randint(0, 3)
        name = lit('fz.sub%d' % r.randint(0, 3))
        op = r.random()
        if op < 0.15:
            self.make_table(t)
        elif op < 0.35:
            self.call('subscribe', '%s, %s::regclass, %s%s' % (
                name, lit(t), lit('fz.%s' % r.choice('abcdefg')),
                r.choice(['', ", '{insert}'", ", '{update,delete}'", ", '{truncate}'",
                          ", '{insert,insert}'", ", '{}'", ", NULL"])))
        elif op < 0.85:
            for _ in range(r.randint(1, 4)):
                self.write_table(t)
        elif op < 0.95:
            self.call('unsubscribe', name)
        else:
            self.ddl('CREATE TEMP TABLE IF NOT EXISTS fz_temp (id int, v text)')
            self.call('subscribe', "%s, 'pg_temp.fz_temp'::regclass, 'fz.a'" % name)

    def operator(self):
        r = self.rng
        i = self.gen.job_id()
        reason = self.gen.text() if r.random() < 0.3 else lit('fuzz')
        op = r.randint(0, 10)
        if op == 0:
            self.call('retry', '%s, %s, %s' % (i, reason, self.gen.boolean()))
        elif op == 1:
            self.call('retry_failed', '%s, %s, %s' % (self.gen.kind(), self.gen.timestamptz(), reason))
        elif op == 2:
            self.call('cancel', '%s, %s' % (i, reason))
        elif op == 3:
            self.call('discard', '%s, %s' % (i, reason))
        elif op == 4:
            self.call('resolve', '%s, %s' % (i, reason))
        elif op == 5:
            self.call(r.choice(['pause_queue', 'resume_queue']),
                      '%s, %s' % (self.gen.name_from('queues'), reason))
        elif op == 6:
            self.call('history', i)
        elif op == 7:
            self.call('purge_finished', r.choice(['', 'NULL', "interval '0'", "interval '1 ms'",
                                                  "interval '-1 day'", "interval '1 day'"]))
        elif op == 8:
            self.call('rescue_leases', '')
        elif op == 9:
            self.call('run_pending', r.choice(['', '0', '1', '-1', '1000', 'NULL', '2147483647']))
        else:
            # Every queue resumed now and then, or the fuzzing would starve.
            for q in ('default', 'fz_q1', 'fz_q2', 'fz_ext'):
                self.call('resume_queue', lit(q))

    def transaction(self):
        r = self.rng
        self.sql(r.choice(['BEGIN', 'BEGIN ISOLATION LEVEL REPEATABLE READ',
                           'BEGIN ISOLATION LEVEL SERIALIZABLE', 'BEGIN READ ONLY']))
        for _ in range(r.randint(1, 5)):
            if self.conn.pg.transaction_status == pq.TransactionStatus.INERROR:
                break
            if r.random() < 0.15:
                self.sql(r.choice(['SAVEPOINT sp', 'ROLLBACK TO SAVEPOINT sp', 'RELEASE SAVEPOINT sp']))
            r.choice([self.random_call, self.kind_lifecycle, self.operator, self.subscriptions,
                      self.schedules])()
        self.sql(r.choice(['COMMIT', 'ROLLBACK', 'COMMIT', 'PREPARE TRANSACTION \'x\'']))

    def ddl_churn(self):
        r = self.rng
        op = r.random()
        if op < 0.25:
            self.drop_function('fuzz.%s' % r.choice(['h%d' % r.randint(0, 9), 'p%d' % r.randint(0, 3),
                                                      's%d' % r.randint(0, 2)]))
        elif op < 0.45:
            t = 'fuzz.t%d' % r.randint(0, 3)
            res = self.sql("SELECT to_regclass(%s)::oid" % lit(t), 'lookup')
            self.ddl('DROP %s IF EXISTS %s%s' % (r.choice(['TABLE', 'VIEW']), t,
                                                 r.choice(['', ' CASCADE'])))
            if res.ok and res.rows and res.rows[0][0]:
                with self.fuzz.pool.lock:
                    self.fuzz.pool.dropped_tables.append(res.rows[0][0])
        elif op < 0.6:
            t = 'fuzz.t%d' % r.randint(0, 3)
            self.ddl(r.choice(['ALTER TABLE %s ADD COLUMN IF NOT EXISTS extra int DEFAULT 7',
                               'ALTER TABLE %s DROP COLUMN IF EXISTS extra',
                               'ALTER TABLE %s DROP COLUMN IF EXISTS v',
                               'ALTER TABLE %s ADD COLUMN IF NOT EXISTS v text',
                               'ALTER TABLE %s DISABLE TRIGGER ALL',
                               'ALTER TABLE %s ENABLE TRIGGER ALL',
                               'ALTER TABLE %s RENAME TO t9', 'ALTER TABLE fuzz.t9 RENAME TO t0',
                               'ALTER TABLE %s OWNER TO fuzz_operator']).replace('%s', t))
        elif op < 0.75:
            self.call('unregister_kind', self.gen.kind())
        elif op < 0.85:
            self.ddl('CREATE TABLE fuzz.effects (job bigint, payload jsonb)',
                     'GRANT ALL ON fuzz.effects TO PUBLIC')
        elif op < 0.92:
            self.ddl('DROP TABLE IF EXISTS fuzz.effects')
        else:
            self.ddl("CREATE OR REPLACE FUNCTION pg_temp.h(p jsonb) RETURNS jsonb LANGUAGE sql "
                     "AS 'SELECT p'")
            self.call('register_kind', "'fz.tmp', 'pg_temp.h(jsonb)'::regprocedure")

    def views(self):
        v = self.rng.choice(self.fuzz.views)
        self.sql('SELECT * FROM jobq.%s LIMIT 20' % v, 'view ' + v)

    def session_settings(self):
        r = self.rng
        self.sql(r.choice([
            "SET jobq.rescue_interval = %s" % r.choice(['0', '1', '10', '1000', '2147483647', '-1']),
            "SET jobq.max_payload_size = %s" % r.choice(['1', '100', '1048576', '1073741823']),
            "RESET jobq.max_payload_size",
            "SET search_path = %s" % r.choice(["pg_temp, fuzz", "''", 'fuzz, public', 'jobq, fuzz']),
            "SET timezone = %s" % lit(r.choice(TIMEZONES[:10])),
            "SET DateStyle = %s" % lit(r.choice(['ISO, MDY', 'SQL, DMY', 'German', 'Postgres'])),
            "SET IntervalStyle = %s" % lit(r.choice(['postgres', 'iso_8601', 'sql_standard'])),
            "SET default_transaction_isolation = %s" % lit(r.choice(['serializable', 'read committed'])),
            "SET application_name = %s" % lit(r.choice(['fuzz', 'jobq worker', '🙂'])),
        ]), 'set')

    def superuser_churn(self):
        r = self.rng
        op = r.random()
        now = self.fuzz.elapsed()
        if op < 0.3 and now - self.fuzz.last_extension_churn > self.fuzz.extension_every:
            self.fuzz.last_extension_churn = now
            self.sql("SET lock_timeout = '5s'")
            churn = self.fuzz.extension_churn_begins()
            try:
                res = self.ddl('DROP EXTENSION jobq%s' % r.choice([' CASCADE', ' CASCADE', '']),
                               what='drop extension')
                if res.ok:
                    self.fuzz.stats.count('extension dropped')
                    time.sleep(r.uniform(0, 1.5))
                    if r.random() < 0.3:
                        # One transaction: an update that fails (a lock
                        # timeout, a deadlock with a worker) takes the old
                        # version with it, and the next line makes 0.3.
                        self.ddl("CREATE EXTENSION jobq VERSION '0.1'",
                                 'ALTER EXTENSION jobq UPDATE', what='create extension')
                    else:
                        self.ddl('CREATE EXTENSION jobq', what='create extension')
                self.ddl("CREATE EXTENSION IF NOT EXISTS jobq", what='create extension')
            finally:
                self.fuzz.extension_churn_ends(churn)
            self.sql("SET lock_timeout = '3s'")
        elif op < 0.55:
            setting = r.choice([
                ('jobq.workers_per_database', ['0', '1', '2', '3', '100']),
                ('jobq.poll_interval', ["'1ms'", "'50ms'", "'1s'"]),
                ('jobq.batch_size', ['1', '2', '100', '10000']),
                ('jobq.shutdown_grace', ["'3s'", "'10s'"]),
                ('jobq.retention', ["'60s'", "'7d'"]),
                ('jobq.max_workers', ['1', '8']),
            ])
            self.sql('ALTER SYSTEM SET %s = %s' % (setting[0], r.choice(setting[1])), 'alter system')
            self.sql('SELECT pg_reload_conf()', 'reload')
        elif op < 0.65:
            self.sql('ALTER SYSTEM RESET ALL', 'alter system')
            self.sql('SELECT pg_reload_conf()', 'reload')
        elif op < 0.8:
            # A cancel (SIGINT) to the workers: their handler stops, they go on.
            self.sql("SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                     "WHERE backend_type = 'jobq worker'", 'cancel workers')
        elif op < 0.9:
            self.sql(r.choice(['VACUUM jobq.job', 'ANALYZE jobq.job', 'VACUUM (FULL) jobq.lease',
                               'CHECKPOINT', 'VACUUM jobq.job_key']), 'maintenance')
        else:
            role = r.choice(ROLES)
            self.sql('SET ROLE %s' % role)
            r.choice([self.random_call, self.operator, self.external_worker])()
            self.sql('RESET ROLE')


# ---------------------------------------------------------------------------
# Counts, for the summary

class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.calls = collections.Counter()
        self.ok = collections.Counter()
        self.states = collections.Counter()
        self.pairs = collections.Counter()
        self.events = collections.Counter()
        self.races = collections.Counter()
        self.race_samples = {}

    def record(self, what, res):
        with self.lock:
            key = what or 'other'
            self.calls[key] += 1
            if res.ok:
                self.ok[key] += 1
            elif res.sqlstate:
                self.states[res.sqlstate] += 1
                self.pairs[(key, res.sqlstate)] += 1

    def race(self, what, message, statement):
        key = (what or 'other', re.sub(r'\d+', 'N', message))
        with self.lock:
            self.races[key] += 1
            self.race_samples.setdefault(key, statement)

    def count(self, event):
        with self.lock:
            self.events[event] += 1


# ---------------------------------------------------------------------------
# The run

class Fuzz:
    def __init__(self, args):
        self.args = args
        self.seed = args.seed
        self.stop = threading.Event()
        self.pool = Pool()
        self.stats = Stats()
        self.start_time = time.monotonic()
        self.last_extension_churn = 0.0
        self.churn_lock = threading.Lock()
        self.churns = []       # [start, end or None] of each DROP/CREATE EXTENSION
        self.extension_every = max(10.0, args.seconds / 4)
        self.functions = []
        self.views = []
        base = tempfile.mkdtemp(prefix='jobq-fuzz-sql.', dir=args.tmpdir)
        os.chmod(base, 0o755)
        self.cluster = Cluster(args.pgbin, base, 5432)

    def extension_churn_begins(self):
        with self.churn_lock:
            self.churns.append([time.monotonic(), None])
            return len(self.churns) - 1

    def extension_churn_ends(self, i):
        with self.churn_lock:
            self.churns[i][1] = time.monotonic()

    def during_extension_churn(self, start, end):
        """Whether [start, end] overlaps a DROP/CREATE EXTENSION (1 s margin)."""
        with self.churn_lock:
            return any(start <= (e if e is not None else end) + 1.0 and end >= s - 1.0
                       for s, e in self.churns)

    def elapsed(self):
        return time.monotonic() - self.start_time

    def function(self, name):
        for fn in self.functions:
            if fn.name == name:
                return fn
        return None

    def setup(self):
        c = self.cluster
        c.init(self.args.workers)
        c.start()
        conn = Conn(c.conninfo('fuzz_super'))
        for s in [
            'CREATE EXTENSION jobq',
            'CREATE ROLE fuzz_admin LOGIN IN ROLE jobq_admin',
            'CREATE ROLE fuzz_operator LOGIN IN ROLE jobq_operator, jobq_worker',
            'CREATE ROLE fuzz_producer LOGIN IN ROLE jobq_producer',
            'CREATE ROLE fuzz_nobody LOGIN',
            'CREATE SCHEMA fuzz',
            'GRANT ALL ON SCHEMA fuzz TO PUBLIC',
            'CREATE TABLE fuzz.effects (job bigint, payload jsonb)',
            'GRANT ALL ON fuzz.effects TO PUBLIC',
        ]:
            res = conn.execute(s)
            if not res.ok:
                raise Failure('setup: %s: %s' % (s, res.outcome()))
        self.functions = load_functions(conn)
        res = conn.execute("SELECT relname FROM pg_class WHERE relnamespace = 'jobq'::regnamespace "
                           "AND relkind = 'v' ORDER BY 1")
        self.views = [row[0] for row in res.rows]
        conn.close()
        if not self.functions:
            raise Failure('no function in schema jobq')

    def check(self, sessions):
        """Raise Failure for what the log, the reports or the sessions show."""
        lines = self.cluster.new_log_failures()
        if lines:
            raise Failure('the server log shows:\n  ' + '\n  '.join(lines[:20]))
        reports = self.cluster.asan_reports()
        if reports:
            raise Failure('AddressSanitizer reports: %s' % ', '.join(reports))
        for s in sessions:
            if s.failure:
                raise Failure(s.failure)
            since = s.running_since
            if since is not None and time.monotonic() - since > HANG_SECONDS:
                raise Failure('session %d (%s): a statement has run for more than %d s: %s'
                              % (s.no, s.role, HANG_SECONDS, short(s.current or '', 1000)))

    def final_checks(self):
        """jobq must still work: its workers run a job to completion."""
        conn = Conn(self.cluster.conninfo('fuzz_super'))
        try:
            for s in ["SET statement_timeout = '30s'",
                      'ALTER SYSTEM RESET ALL', 'SELECT pg_reload_conf()',
                      'CREATE EXTENSION IF NOT EXISTS jobq',
                      'ALTER EXTENSION jobq UPDATE',
                      "CREATE OR REPLACE FUNCTION fuzz.final(p jsonb) RETURNS jsonb "
                      "LANGUAGE sql AS 'SELECT p'",
                      "SELECT jobq.register_kind('fz.final', 'fuzz.final(jsonb)', queue => 'fz_final')",
                      "SELECT jobq.resume_queue('fz_final')",
                      # A backlog of slow handlers elsewhere must not delay it.
                      "SELECT jobq.pause_queue(name) FROM jobq.queue WHERE name <> 'fz_final'",
                      "SELECT jobq.enqueue('fz.final', '{\"last\": true}')"]:
                res = conn.execute(s)
                if not res.ok:
                    raise Failure('after the fuzzing, %s failed: %s' % (s, res.outcome()))
            job = res.rows[0][0]
            deadline = time.monotonic() + 90
            state = None
            while time.monotonic() < deadline:
                res = conn.execute('SELECT state FROM jobq.jobs WHERE id = %s' % job)
                state = res.rows[0][0] if res.ok and res.rows else res.outcome()
                if state == 'completed':
                    break
                time.sleep(0.2)
            if state != 'completed':
                res = conn.execute('SELECT * FROM jobq.workers')
                raise Failure('after the fuzzing, the workers did not run a job within 90 s '
                              '(state %s; workers: %s)' % (state, res.rows if res.ok else res.outcome()))
            res = conn.execute("SELECT worker LIKE 'jobq worker %%' FROM jobq.jobs WHERE id = %s" % job)
            if not (res.ok and res.rows and res.rows[0][0] == 't'):
                raise Failure('after the fuzzing, job %s was not run by a background worker: %s'
                              % (job, res.rows if res.ok else res.outcome()))
            self.check_invariants(conn)
            res = conn.execute("SELECT string_agg(state || ' ' || n, ', ' ORDER BY state) FROM "
                               "(SELECT state::text, count(*) AS n FROM jobq.jobs GROUP BY 1) s")
            states = res.rows[0][0] if res.ok and res.rows else res.outcome()
            res = conn.execute("SELECT count(*) FROM jobq.jobs WHERE worker LIKE 'jobq worker %'")
            by_workers = res.rows[0][0] if res.ok and res.rows else res.outcome()
            return states, by_workers
        finally:
            conn.close()

    def check_invariants(self, conn):
        """What must hold of every job at rest: each query of
        sql/invariants.sql lists the rows that break it, but for the one
        that lists the triggers on jobq.job (the suites add one)."""
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            '..', '..', 'sql', 'invariants.sql')
        with open(path) as f:
            text = re.sub(r'--[^\n]*', '', f.read())
        for query in (q.strip() for q in text.split(';')):
            if not query or 'pg_trigger' in query:
                continue
            res = conn.execute(query)
            if not res.ok:
                raise Failure('after the fuzzing, an invariant query failed: %s: %s'
                              % (short(query), res.outcome()))
            if res.rows:
                raise Failure('after the fuzzing, rows break an invariant: %s\n  %s'
                              % (short(query, 1000), '\n  '.join(str(r) for r in res.rows[:20])))
        self.stats.count('invariants checked')

    def report(self, sessions, why):
        out = sys.stdout
        print('\nFUZZ FAILURE (seed %s, after %.1f s): %s' % (self.seed, self.elapsed(), why), file=out)
        for s in sessions:
            print('\n--- session %d (%s): its last %d statements' % (s.no, s.role, len(s.ring)), file=out)
            for line in s.ring:
                print('  ' + line, file=out)
            if s.running_since is not None:
                print('  (still running: %s)' % short(s.current or '', 500), file=out)
        print('\n--- server log, last lines (%s)' % self.cluster.log, file=out)
        for line in self.cluster.log_tail(60):
            print('  ' + line[:600], file=out)
        for f in self.cluster.asan_reports():
            print('\n--- %s' % f, file=out)
            with open(f, errors='replace') as fh:
                for line in fh.read().splitlines()[:80]:
                    print('  ' + line, file=out)
        print('\nThe cluster is kept in %s.  Run again with FUZZ_SQL_SEED=%s.'
              % (self.cluster.dir, self.seed), file=out)

    def summary(self, sessions, final):
        st = self.stats
        n = sum(s.statements for s in sessions)
        print('fuzz: seed %s, %.0f s, %d sessions, %d statements (%d/s)'
              % (self.seed, self.args.seconds, len(sessions), n, n / max(1, self.args.seconds)))
        print('fuzz: jobq functions called (ok/calls):')
        line = []
        for fn in sorted({f.name for f in self.functions}):
            line.append('%s %d/%d' % (fn, st.ok[fn], st.calls[fn]))
        for i in range(0, len(line), 4):
            print('    ' + ', '.join(line[i:i + 4]))
        never = sorted({f.name for f in self.functions if st.ok[f.name] == 0})
        if never:
            print('fuzz: never succeeded: %s' % ', '.join(never))
        print('fuzz: errors by SQLSTATE: %s' % ', '.join(
            '%s %d' % kv for kv in st.states.most_common(25)))
        print('fuzz: most frequent errors: %s' % ', '.join(
            '%s %s %d' % (k[0], k[1], v) for k, v in st.pairs.most_common(12)))
        for (what, msg), n in st.races.items():
            print('fuzz: %d time(s) %s met "%s" (XX000) racing DROP/CREATE EXTENSION, '
                  'PostgreSQL\'s own race, not a failure; e.g. %s'
                  % (n, what, msg, short(st.race_samples[(what, msg)], 200)))
        if st.events:
            print('fuzz: %s' % ', '.join('%s %d' % kv for kv in st.events.items()))
        if final:
            print('fuzz: jobs since the last CREATE EXTENSION: %s; last run by a background '
                  'worker: %s' % final)

    def main(self):
        print('fuzz: seed %s, %s s, %d sessions, server %s, cluster in %s'
              % (self.seed, self.args.seconds, self.args.sessions, self.args.pgbin, self.cluster.dir),
              flush=True)
        sessions = []
        try:
            self.setup()
            print('fuzz: %d functions in schema jobq: %s' % (
                len(self.functions), ', '.join(sorted({f.name for f in self.functions}))), flush=True)
            sessions = [Session(self, i, self.seed) for i in range(self.args.sessions)]
            self.start_time = time.monotonic()
            for s in sessions:
                s.start()
            deadline = self.start_time + self.args.seconds
            while time.monotonic() < deadline and not self.stop.is_set():
                time.sleep(0.5)
                self.check(sessions)
            self.stop.set()
            for s in sessions:
                s.join(HANG_SECONDS)
                if s.is_alive():
                    raise Failure('session %d (%s) did not stop: %s'
                                  % (s.no, s.role, short(s.current or '', 1000)))
            self.check(sessions)
            final = self.final_checks()
            self.check(sessions)
            self.cluster.stop()
            self.check(sessions)
        except Failure as e:
            self.stop.set()
            time.sleep(1)
            try:
                self.cluster.new_log_failures()
            except Exception:
                pass
            self.report(sessions, str(e))
            try:
                self.cluster.stop()
            except Exception:
                pass
            return 1
        except subprocess.CalledProcessError as e:
            print('fuzz: %s failed: %s' % (' '.join(e.cmd), (e.stderr or b'').decode(errors='replace')))
            self.report(sessions, 'the cluster could not be set up or stopped')
            return 1
        self.summary(sessions, final)
        if not self.args.keep:
            shutil.rmtree(self.cluster.dir, ignore_errors=True)
        print('fuzz: no failure')
        return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--pgbin', default=os.environ.get('PGBIN', '/usr/lib/postgresql/15/bin'))
    p.add_argument('--seconds', type=float, default=float(os.environ.get('FUZZ_SQL_SECONDS', 90)))
    p.add_argument('--seed', default=os.environ.get('FUZZ_SQL_SEED') or str(random.SystemRandom().randrange(10**9)))
    p.add_argument('--sessions', type=int, default=int(os.environ.get('FUZZ_SQL_SESSIONS', 3)))
    p.add_argument('--workers', type=int, default=2, help='jobq.workers_per_database')
    p.add_argument('--tmpdir', default=os.environ.get('TMPDIR', '/tmp'))
    p.add_argument('--keep', action='store_true', help='keep the cluster directory')
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    sys.exit(Fuzz(args).main())


if __name__ == '__main__':
    main()
