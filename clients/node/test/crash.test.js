// A worker process SIGKILLed mid-job: its job is rescued and done once,
// and a job's steps and external keys survive the crash.
'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const { enqueue } = require('..')
const { freshDatabase, spawnWorker, waitFor } = require('./helpers')

let db
const spawned = []
test.before(async () => {
  db = await freshDatabase('node_crash')
  await db.sql(`
    CREATE TABLE effects (job_id bigint, note text, n int NOT NULL DEFAULT 1);
    CREATE TABLE progress (job_id bigint, what text, worker text);
    CREATE TABLE api_calls (id serial, key text UNIQUE, job_id bigint, attempt int);
    SELECT jobq.register_kind('crash.slow', queue => 'crash');
    SELECT jobq.register_kind('steps.charge', queue => 'steps', side_effects => '{payment}', retry_safe => true);`)
})
test.after(async () => {
  for (const w of spawned) if (w.proc.exitCode === null) w.proc.kill('SIGKILL')
  await db.end()
})

function worker (name, queue, extra = [], env = {}) {
  const w = spawnWorker(db, 'tasks/app.js',
    ['--queue', queue, '--name', name, '--lease', '2', '--poll', '0.1', ...extra], { JOBQ_TEST_NAME: name, ...env })
  spawned.push(w)
  return w
}

const started = id => db.one("SELECT count(*)::int AS n FROM progress WHERE job_id = $1 AND what = 'started'", [id])

async function killMidJob (t, kind, queue, tx) {
  const env = { JOBQ_TEST_TX: tx ? '1' : '0' }
  const id = await enqueue(db.pool, kind, {})
  const a = worker(`${queue}-a`, queue, [], env)
  await waitFor(async () => (await started(id)).n === 1, 'the first run to start', 30000)
  a.proc.kill('SIGKILL')
  const killedAt = Date.now()
  assert.equal((await a.exited).signal, 'SIGKILL')
  const b = worker(`${queue}-b`, queue, [], env)
  await waitFor(async () => (await db.one('SELECT state FROM jobq.jobs WHERE id = $1', [id])).state === 'completed',
    'the job to be rescued and completed', 60000)
  t.diagnostic(`${kind}${tx ? ' (transactional)' : ''}: completed ${Date.now() - killedAt} ms after the SIGKILL`)
  b.proc.kill('SIGTERM')
  assert.equal((await b.exited).code, 0)
  return id
}

test('leased: a worker SIGKILLed mid-job; the lease runs out, the job is rescued and done once', async t => {
  const id = await killMidJob(t, 'crash.slow', 'crash', false)
  const job = await db.one('SELECT attempt, worker FROM jobq.jobs WHERE id = $1', [id])
  assert.deepEqual(job, { attempt: 2, worker: 'crash-b' })
  assert.deepEqual(await db.sql('SELECT note FROM effects WHERE job_id = $1', [id]), [{ note: 'attempt 2' }],
    'the killed attempt\'s write never committed; the rescue\'s did, once')
})

test('transactional: a worker SIGKILLed mid-batch; the job is ready again at once, uncharged, and done once', async t => {
  const id = await killMidJob(t, 'crash.slow', 'crash', true)
  const job = await db.one('SELECT attempt, worker FROM jobq.jobs WHERE id = $1', [id])
  assert.deepEqual(job, { attempt: 1, worker: 'crash-b' }, 'the killed claim charged nothing')
  assert.deepEqual(await db.sql('SELECT note FROM effects WHERE job_id = $1', [id]), [{ note: 'attempt 1' }])
})

test('steps and external keys across a crash: the external call is made once, with one key', async t => {
  const id = await killMidJob(t, 'steps.charge', 'steps', false)
  const calls = await db.sql('SELECT key, attempt FROM api_calls WHERE job_id = $1', [id])
  assert.equal(calls.length, 1, 'one call to the outside service')
  assert.equal(calls[0].attempt, 1)
  const job = await db.one("SELECT attempt, state, result, jobq.step_result(id, 'charge') AS step FROM jobq.jobs WHERE id = $1", [id])
  assert.equal(job.attempt, 2)
  assert.match(calls[0].key, /^jobq-[0-9a-f]{64}$/)
  assert.equal(job.result.key, calls[0].key, 'attempt 1 sent this key')
  assert.equal(job.result.keyNow, calls[0].key, 'attempt 2 derived the same key')
  assert.deepEqual(job.step, { chargeId: job.result.chargeId, key: calls[0].key }, 'attempt 2 read the step back')
  assert.deepEqual(await db.sql('SELECT note FROM effects WHERE job_id = $1', [id]), [{ note: job.result.chargeId }])
})
