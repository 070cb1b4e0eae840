// Through pgbouncer in transaction pooling mode, which closes its server
// connections every second while the workers run: a leased and a
// transactional worker share 300 jobs, each done once, no lease lost.
'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawn } = require('node:child_process')
const pg = require('pg')
const { enqueueMany } = require('..')
const { freshDatabase, spawnWorker, waitFor } = require('./helpers')

const PGBOUNCER = '/usr/sbin/pgbouncer'

test('through pgbouncer (transaction pooling, server connections recycled every second)', {
  skip: !fs.existsSync(PGBOUNCER) && 'no pgbouncer (Debian package pgbouncer)'
}, async t => {
  const db = await freshDatabase('node_pgbouncer')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jobq-node-bouncer.'))
  const user = os.userInfo().username
  fs.writeFileSync(path.join(dir, 'users.txt'), `"${user}" ""\n`)
  fs.writeFileSync(path.join(dir, 'pgbouncer.ini'), `[databases]
${db.name} = host=${process.env.PGHOST} port=${process.env.PGPORT} dbname=${db.name}

[pgbouncer]
listen_addr =
listen_port = 6432
unix_socket_dir = ${dir}
auth_type = trust
auth_file = ${dir}/users.txt
pool_mode = transaction
default_pool_size = 6
server_lifetime = 1
server_idle_timeout = 1
logfile = ${dir}/pgbouncer.log
pidfile = ${dir}/pgbouncer.pid
`)
  const bouncer = spawn(PGBOUNCER, [path.join(dir, 'pgbouncer.ini')], { stdio: 'ignore' })
  const workers = []
  try {
    await waitFor(async () => {
      const c = new pg.Client({ host: dir, port: 6432, database: db.name })
      try { await c.connect(); await c.query('SELECT 1'); return true } catch { return false } finally { await c.end().catch(() => {}) }
    }, 'pgbouncer to answer', 15000, 100)
    await db.sql(`
      CREATE TABLE effects (job_id bigint PRIMARY KEY, note text, n int NOT NULL DEFAULT 1);
      SELECT jobq.register_kind('eo.effect', queue => 'pooled');`)
    const env = { PGHOST: dir, PGPORT: '6432' }
    workers.push(spawnWorker(db, 'tasks/app.js', ['--queue', 'pooled', '--name', 'pooled-leased', '--poll', '0.05',
      '--concurrency', '3', '--lease', '5'], { ...env, JOBQ_TEST_TX: '0' }))
    workers.push(spawnWorker(db, 'tasks/app.js', ['--queue', 'pooled', '--name', 'pooled-tx', '--poll', '0.05',
      '--concurrency', '2'], { ...env, JOBQ_TEST_TX: '1' }))
    // Slowly, so that the run outlives several server connections.
    for (let i = 0; i < 300; i += 20) {
      await enqueueMany(db.pool, 'eo.effect', Array.from({ length: 20 }, (_, j) => ({ n: i + j })))
      await new Promise(resolve => setTimeout(resolve, 150))
    }
    await waitFor(async () => (await db.one(
      "SELECT count(*)::int AS n FROM jobq.jobs WHERE state = 'completed'")).n === 300, '300 completed jobs', 60000, 100)
    for (const w of workers) w.proc.kill('SIGTERM')
    assert.deepEqual((await Promise.all(workers.map(w => w.exited))).map(e => e.code), [0, 0])
    const r = await db.one(`SELECT (SELECT count(*)::int FROM effects WHERE n = 1) AS once,
                                   (SELECT count(*)::int FROM jobq.jobs WHERE attempt = 1) AS first_try,
                                   (SELECT count(*)::int FROM jobq.job_error) AS errors`)
    assert.deepEqual(r, { once: 300, first_try: 300, errors: 0 })
    const out = workers.map(w => w.output()).join('')
    assert.doesNotMatch(out, /lease lost|jobq (warn|error):/)
    const by = await db.sql('SELECT worker, count(*)::int AS n FROM jobq.jobs GROUP BY 1 ORDER BY 1')
    const recycled = (fs.readFileSync(path.join(dir, 'pgbouncer.log'), 'utf8').match(/lifetime/g) || []).length
    t.diagnostic(`by worker: ${by.map(b => `${b.worker} ${b.n}`).join(', ')}; pgbouncer closed ${recycled} server connections for their lifetime meanwhile`)
  } finally {
    for (const w of workers) if (w.proc.exitCode === null) w.proc.kill('SIGKILL')
    bouncer.kill('SIGTERM')
    await new Promise(resolve => bouncer.once('exit', resolve))
    fs.rmSync(dir, { recursive: true, force: true })
    await db.end()
  }
})
