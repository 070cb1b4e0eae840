// Shutdown: SIGTERM (the CLI) or an aborted signal (run({ signal })) with a
// long job in flight: it finishes within the grace period, or its job is
// handed back uncharged; a second signal exits at once.
'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const { Worker, enqueue } = require('..')
const { freshDatabase, spawnWorker, waitFor, memoryLogger, sleep } = require('./helpers')

let db
const spawned = []
test.before(async () => {
  db = await freshDatabase('node_shutdown')
  await db.sql(`
    CREATE TABLE effects (job_id bigint, note text, n int NOT NULL DEFAULT 1);
    CREATE TABLE progress (job_id bigint, what text, worker text);
    SELECT jobq.register_kind('shut.long', queue => 'shut');`)
})
test.after(async () => {
  for (const w of spawned) if (w.proc.exitCode === null) w.proc.kill('SIGKILL')
  await db.end()
})

function worker (name, extra = [], env = {}) {
  const w = spawnWorker(db, 'tasks/app.js',
    ['--queue', 'shut', '--name', name, '--lease', '3', '--poll', '0.1', ...extra], { JOBQ_TEST_NAME: name, ...env })
  spawned.push(w)
  return w
}

const started = id => waitFor(async () => (await db.one(
  "SELECT count(*)::int AS n FROM progress WHERE job_id = $1 AND what = 'started'", [id])).n === 1, 'the job to start')
const jobRow = id => db.one('SELECT state, attempt, result FROM jobq.jobs WHERE id = $1', [id])
const effects = async id => (await db.sql('SELECT note FROM effects WHERE job_id = $1 ORDER BY note', [id])).map(r => r.note)

test('SIGTERM: a running job finishes within the grace period, then the worker exits 0', async t => {
  const id = await enqueue(db.pool, 'shut.long', { ms: 1500 })
  const w = worker('shut-1', ['--grace', '60'])
  await started(id)
  const t0 = Date.now()
  w.proc.kill('SIGTERM')
  const exit = await w.exited
  t.diagnostic(`exited ${Date.now() - t0} ms after SIGTERM (job of 1,500 ms, grace 60 s)`)
  assert.equal(exit.code, 0)
  assert.deepEqual(await jobRow(id), { state: 'completed', attempt: 1, result: { slept: 1500 } })
  assert.deepEqual(await effects(id), ['attempt 1'])
  assert.match(w.output(), /stopping: no new jobs/)
})

for (const tx of [false, true]) {
  const how = tx ? 'transactional' : 'leased'
  test(`SIGTERM (${how}): a job longer than the grace period is handed back uncharged, its writes rolled back`, async t => {
    const id = await enqueue(db.pool, 'shut.long', { ms: 600000 })
    const env = { JOBQ_TEST_TX: tx ? '1' : '0' }
    const w = worker(`shut-${how}`, ['--grace', '1'], env)
    await started(id)
    const t0 = Date.now()
    w.proc.kill('SIGTERM')
    const exit = await w.exited
    const ms = Date.now() - t0
    t.diagnostic(`${how}: exited ${ms} ms after SIGTERM (grace 1 s)`)
    assert.equal(exit.code, 0)
    assert.ok(ms < 30000, `it did not wait for the job (${ms} ms)`)
    assert.deepEqual(await jobRow(id), { state: 'pending', attempt: 0, result: null }, 'back, uncharged')
    assert.deepEqual(await effects(id), [], 'the handler\'s write rolled back')
    assert.match(w.output(), tx ? /did not finish within the grace period; rolled back/ : /handed back at shutdown, uncharged/)
    // The next worker runs it as attempt 1.
    const next = worker(`shut-${how}-next`, [], env)
    await waitFor(async () => (await jobRow(id)).state === 'completed', 'the job to complete')
    next.proc.kill('SIGTERM')
    await next.exited
    assert.deepEqual(await jobRow(id), { state: 'completed', attempt: 1, result: { slept: 0 } })
    assert.deepEqual(await effects(id), ['attempt 1'])
  })
}

test('a second signal exits at once', async t => {
  const id = await enqueue(db.pool, 'shut.long', { ms: 600000 })
  const w = worker('shut-twice', ['--grace', '600'])
  await started(id)
  const t0 = Date.now()
  w.proc.kill('SIGTERM')
  await waitFor(() => /stopping: no new jobs/.test(w.output()), 'the first signal to be seen')
  w.proc.kill('SIGINT')
  const exit = await w.exited
  t.diagnostic(`exited ${Date.now() - t0} ms after the first signal (grace 600 s)`)
  assert.equal(exit.code, 1)
  assert.match(w.output(), /second signal: exiting at once/)
  // Its lease runs out (3 s) and the job runs again, attempt 2.
  const next = worker('shut-twice-next')
  await waitFor(async () => (await jobRow(id)).state === 'completed', 'the job to be rescued and completed')
  next.proc.kill('SIGTERM')
  await next.exited
  assert.equal((await jobRow(id)).attempt, 2)
})

test('run({ signal }): abort stops claiming; a job past the grace is handed back, and run() resolves', async t => {
  const id = await enqueue(db.pool, 'shut.long', { ms: 600000 })
  const other = await enqueue(db.pool, 'shut.long', { ms: 0 }, { runAt: new Date(Date.now() + 1500) })
  const logger = memoryLogger()
  const w = new Worker({ connectionString: db.url, queues: ['shut'], pollInterval: 0.1, shutdownGrace: 0.5, concurrency: 2, logger })
  let signalSeen = null
  w.handle('shut.long', async job => {
    await job.client.query('INSERT INTO effects (job_id, note) VALUES ($1, $2)', [job.id, 'in-process'])
    await db.sql("INSERT INTO progress VALUES ($1, 'started', 'in-process')", [job.id])
    await new Promise(resolve => job.signal.addEventListener('abort', resolve))
    signalSeen = job.signal.reason.message
    await new Promise(() => {}) // ignores the abort: only the grace period ends it
  })
  const stop = new AbortController()
  const running = w.run({ signal: stop.signal })
  await started(id)
  stop.abort()
  const t0 = Date.now()
  await running
  t.diagnostic(`run() resolved ${Date.now() - t0} ms after abort (grace 0.5 s)`)
  assert.equal(signalSeen, 'worker shutting down', 'job.signal told the handler')
  assert.deepEqual(await jobRow(id), { state: 'pending', attempt: 0, result: null })
  assert.deepEqual(await effects(id), [])
  await sleep(2000)
  assert.deepEqual(await jobRow(other), { state: 'pending', attempt: 0, result: null }, 'nothing claimed after the abort')
  assert.equal(w.stats.handedBack, 1)
  assert.ok(logger.lines.some(l => /handed back/.test(l.message) && l.id === id && l.kind === 'shut.long' && l.attempt === 1))
})
