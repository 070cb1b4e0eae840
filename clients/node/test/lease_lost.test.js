// A zombie worker: frozen (SIGSTOP) past its lease, its job is rescued and
// done by another worker; thawed, it learns that its lease is lost (55000),
// its handler's writes roll back, and it does not report on the job.
'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const { enqueue } = require('..')
const { freshDatabase, spawnWorker, waitFor } = require('./helpers')

test('lease lost: a frozen worker\'s late completion is refused and its writes roll back', async t => {
  const db = await freshDatabase('node_lease_lost')
  const spawned = []
  const worker = (name, env = {}) => {
    const w = spawnWorker(db, 'tasks/app.js', ['--queue', 'zombie', '--name', name, '--lease', '2', '--poll', '0.1'],
      { JOBQ_TEST_NAME: name, ...env })
    spawned.push(w)
    return w
  }
  try {
    await db.sql(`
      CREATE TABLE effects (job_id bigint, note text, n int NOT NULL DEFAULT 1);
      CREATE TABLE progress (job_id bigint, what text, worker text);
      SELECT jobq.register_kind('shut.long', queue => 'zombie');`)
    // First run: write, then 4 s of work; later runs: no wait.
    const id = await enqueue(db.pool, 'shut.long', { ms: 4000 })
    const a = worker('zombie-a')
    await waitFor(async () => (await db.one(
      "SELECT count(*)::int AS n FROM progress WHERE job_id = $1 AND what = 'started'", [id])).n === 1, 'the first run')
    a.proc.kill('SIGSTOP')
    const b = worker('zombie-b')
    await waitFor(async () => (await db.one('SELECT state FROM jobq.jobs WHERE id = $1', [id])).state === 'completed',
      'the rescued job to complete', 60000)
    a.proc.kill('SIGCONT')
    await waitFor(() => /lease lost: its writes rolled back/.test(a.output()), 'the zombie to notice', 30000)
    const job = await db.one('SELECT state, attempt, worker, result FROM jobq.jobs WHERE id = $1', [id])
    assert.deepEqual(job, { state: 'completed', attempt: 2, worker: 'zombie-b', result: { slept: 0 } })
    assert.deepEqual(await db.sql('SELECT note FROM effects WHERE job_id = $1', [id]), [{ note: 'attempt 2' }],
      'the zombie\'s write (attempt 1) rolled back')
    const line = a.output().split('\n').find(l => /lease lost: its writes rolled back/.test(l))
    t.diagnostic(`the zombie logged: ${line}`)
    assert.match(line, new RegExp(`kind=shut\\.long id=${id} attempt=1`))
    for (const w of [a, b]) w.proc.kill('SIGTERM')
    assert.deepEqual((await Promise.all([a.exited, b.exited])).map(e => e.code), [0, 0])
  } finally {
    for (const w of spawned) if (w.proc.exitCode === null) { w.proc.kill('SIGCONT'); w.proc.kill('SIGKILL') }
    await db.end()
  }
})
