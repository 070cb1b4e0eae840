// Four worker processes (two leased, two transactional) share 2,000 jobs
// whose handler's write would show a second run: each job's effect
// happens once, and every job completes.
'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const { enqueueMany } = require('..')
const { freshDatabase, spawnWorker, waitFor } = require('./helpers')

test('exactly-once effects: 4 concurrent workers, 2,000 jobs', async t => {
  const db = await freshDatabase('node_exactly_once')
  const workers = []
  try {
    await db.sql(`
      CREATE TABLE effects (job_id bigint PRIMARY KEY, note text, n int NOT NULL DEFAULT 1);
      CREATE TABLE progress (job_id bigint, what text, worker text);
      SELECT jobq.register_kind('eo.effect', queue => 'eo');`)
    for (const [i, tx] of [[1, '0'], [2, '0'], [3, '1'], [4, '1']]) {
      const name = `eo-${tx === '1' ? 'tx' : 'leased'}-${i}`
      workers.push(spawnWorker(db, 'tasks/app.js',
        ['--queue', 'eo', '--name', name, '--concurrency', '4', '--poll', '0.05', '--lease', '10'],
        { JOBQ_TEST_TX: tx }))
    }
    await waitFor(async () => (await db.one(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE 'eo-%'")).n >= 4,
    'the 4 workers to connect', 30000)
    const t0 = Date.now()
    for (let i = 0; i < 2000; i += 250) {
      await enqueueMany(db.pool, 'eo.effect', Array.from({ length: 250 }, (_, j) => ({ n: i + j })))
    }
    await waitFor(async () => (await db.one(
      "SELECT count(*)::int AS n FROM jobq.jobs WHERE state = 'completed'")).n === 2000, '2,000 completed jobs', 120000, 100)
    const ms = Date.now() - t0
    for (const w of workers) w.proc.kill('SIGTERM')
    const exits = await Promise.all(workers.map(w => w.exited))
    assert.deepEqual(exits.map(e => e.code), [0, 0, 0, 0], 'every worker stopped cleanly')

    const r = await db.one(`SELECT (SELECT count(*)::int FROM jobq.jobs) AS jobs,
                                   (SELECT count(*)::int FROM jobq.jobs WHERE state = 'completed' AND attempt = 1) AS first_try,
                                   (SELECT count(*)::int FROM effects) AS effects,
                                   (SELECT count(*)::int FROM effects WHERE n <> 1) AS repeated,
                                   (SELECT count(*)::int FROM jobq.job_error) AS errors,
                                   (SELECT count(*)::int FROM effects e JOIN jobq.jobs j ON j.id = e.job_id
                                     WHERE e.note = j.worker) AS by_completer`)
    assert.deepEqual(r, { jobs: 2000, first_try: 2000, effects: 2000, repeated: 0, errors: 0, by_completer: 2000 })
    const by = await db.sql('SELECT worker, count(*)::int AS n FROM jobq.jobs GROUP BY 1 ORDER BY 1')
    t.diagnostic(`2,000 jobs in ${ms} ms; by worker: ${by.map(b => `${b.worker} ${b.n}`).join(', ')}`)
    assert.ok(by.some(b => b.worker.startsWith('eo-tx')) && by.some(b => b.worker.startsWith('eo-leased')),
      'both kinds of claim took jobs')
  } finally {
    for (const w of workers) if (w.proc.exitCode === null) w.proc.kill('SIGKILL')
    await db.end()
  }
})
