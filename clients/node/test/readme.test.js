// README.md's examples run as written: its first SQL block sets up a fresh
// database, its producer block enqueues, and its ten-line worker, saved as
// worker.mjs, runs the jobs and stops on SIGTERM.
'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { spawn, execFileSync } = require('node:child_process')
const { freshDatabase, waitFor, ROOT } = require('./helpers')

const blocks = lang => [...fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8')
  .matchAll(new RegExp('```' + lang + '\\n([\\s\\S]*?)```', 'g'))].map(m => m[1])

test('the README\'s worker, producer and SQL run as written', async t => {
  const db = await freshDatabase('node_readme')
  const dir = fs.mkdtempSync(path.join(__dirname, 'readme-'))
  try {
    const [setup] = blocks('sql')
    await db.sql(setup)
    const [worker, producer] = blocks('js')
    assert.match(worker, /^\/\/ worker\.mjs/)
    assert.ok(worker.trim().split('\n').length <= 11, 'ten lines and a comment')
    fs.writeFileSync(path.join(dir, 'worker.mjs'), worker)
    fs.writeFileSync(path.join(dir, 'producer.mjs'), producer + '\nawait client.end()\n')
    const env = { ...process.env, PGDATABASE: db.name }
    execFileSync(process.execPath, [path.join(dir, 'producer.mjs')], { env, encoding: 'utf8' })
    const jobs = await db.sql("SELECT count(*)::int AS n FROM jobq.jobs WHERE kind = 'mail.send_receipt'")
    assert.equal(jobs[0].n, 3)
    const proc = spawn(process.execPath, [path.join(dir, 'worker.mjs')],
      { env: { ...env, DATABASE_URL: db.url }, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    proc.stdout.on('data', d => { out += d })
    proc.stderr.on('data', d => { out += d })
    const exited = new Promise(resolve => proc.on('exit', code => resolve(code)))
    // Two are due now; the third runs in a minute.
    await waitFor(async () => (await db.one('SELECT count(*)::int AS n FROM receipts')).n === 2, 'two receipts', 30000)
    proc.kill('SIGTERM')
    assert.equal(await exited, 0, out)
    const rows = await db.sql(`SELECT j.state, r.sent_to FROM jobq.jobs j LEFT JOIN receipts r ON r.job_id = j.id
                                ORDER BY j.id`)
    assert.deepEqual(rows, [{ state: 'pending', sent_to: null }, { state: 'completed', sent_to: 'a@x' },
      { state: 'completed', sent_to: 'b@x' }])
    t.diagnostic(out.trim().split('\n').join(' | '))
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
    await db.end()
  }
})
