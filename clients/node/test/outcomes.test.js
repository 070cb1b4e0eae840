// What a handler's outcome does to its job, with the Worker in this
// process: completion with the handler's writes, snooze, retry-in, a
// failure with its stack, a lost lease, a transactional batch's savepoints.
'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const { Worker, Snooze, RetryIn, LeaseLost, enqueue, enqueueMany } = require('..')
const { freshDatabase, waitFor, memoryLogger } = require('./helpers')

let db
test.before(async () => {
  db = await freshDatabase('node_outcomes')
  await db.sql(`
    CREATE TABLE effects (job_id bigint PRIMARY KEY, note text);
    SELECT jobq.create_queue(q) FROM unnest('{o_done,o_snooze,o_snooze_tx,o_retry,o_bad,o_lost,o_tx,o_none}'::text[]) q;
    SELECT jobq.register_kind('o.done', queue => 'o_done');
    SELECT jobq.register_kind('o.snooze', queue => 'o_snooze');
    SELECT jobq.register_kind('o.snooze_tx', queue => 'o_snooze_tx', max_attempts => 1);
    SELECT jobq.register_kind('o.retry', queue => 'o_retry');
    SELECT jobq.register_kind('o.bad', queue => 'o_bad', max_attempts => 1);
    SELECT jobq.register_kind('o.lost', queue => 'o_lost');
    SELECT jobq.register_kind('o.tx', queue => 'o_tx', max_attempts => 1);
    SELECT jobq.register_kind('o.none', queue => 'o_none', max_attempts => 1);`)
})
test.after(() => db.end())

// Run a worker until check() holds, then stop it; returns the worker.
async function runUntil (worker, check, what) {
  const stop = new AbortController()
  const running = worker.run({ signal: stop.signal })
  try {
    await waitFor(check, what, 30000)
  } finally {
    stop.abort()
    await running
  }
  return worker
}

const job = async id => db.one('SELECT state, attempt, result, last_error FROM jobq.jobs WHERE id = $1', [id])

test('a handler writes through job.client; its writes and the completion commit together', async () => {
  const ids = await enqueueMany(db.pool, 'o.done', [{ n: 1 }, { n: 2 }, { n: 3 }])
  const quiet = await enqueue(db.pool, 'o.done', { quiet: true })
  const worker = new Worker({ connectionString: db.url, queues: ['o_done'], pollInterval: 0.1, logger: memoryLogger() })
  worker.handle('o.done', async job => {
    if (job.payload.quiet) return undefined // no writes, no result: complete_many
    await job.client.query('INSERT INTO effects VALUES ($1, $2)', [job.id, `n=${job.payload.n}`])
    assert.equal(await job.once(`op-${job.id}`), true)
    assert.equal(await job.once(`op-${job.id}`), false)
    return { n: job.payload.n }
  })
  await runUntil(worker, async () => (await db.one(
    "SELECT count(*)::int AS n FROM jobq.jobs WHERE kind = 'o.done' AND state = 'completed'")).n === 4, 'o.done done')
  for (const [i, id] of ids.entries()) {
    assert.deepEqual(await job(id), { state: 'completed', attempt: 1, result: { n: i + 1 }, last_error: null })
  }
  assert.equal((await job(quiet)).state, 'completed')
  assert.equal((await db.one("SELECT count(*)::int AS n FROM effects WHERE note LIKE 'n=%'")).n, 3)
  assert.equal(worker.stats.completed, 4)
})

test('transactional: Snooze gives the job back uncharged too', async t => {
  const s = await enqueue(db.pool, 'o.snooze_tx', {})
  const seen = []
  const worker = new Worker({ connectionString: db.url, queues: ['o_snooze_tx'], pollInterval: 0.1, logger: memoryLogger() })
  worker.handle('o.snooze_tx', async job => {
    seen.push(job.attempt)
    if (seen.length === 1) throw new Snooze(1)
  }, { transactional: true })
  await runUntil(worker, async () => (await job(s)).state === 'completed', 'the snoozed job done')
  // max_attempts 1: a charged snooze would have failed the job.
  assert.deepEqual(seen, [1, 1])
  assert.equal((await job(s)).attempt, 1)
  assert.equal((await db.one('SELECT count(*)::int AS n FROM jobq.job_error WHERE job_id = $1', [s])).n, 0)
  assert.equal(worker.stats.snoozed, 1)
})

test('Snooze gives the job back uncharged; RetryIn charges the attempt and waits', async t => {
  const s = await enqueue(db.pool, 'o.snooze', {})
  const r = await enqueue(db.pool, 'o.retry', {})
  const seen = { snooze: [], retry: [] }
  const worker = new Worker({ connectionString: db.url, queues: ['o_snooze', 'o_retry'], pollInterval: 0.1, logger: memoryLogger() })
  worker.handle('o.snooze', async job => {
    seen.snooze.push([job.attempt, Date.now()])
    if (seen.snooze.length === 1) throw new Snooze(1)
  })
  worker.handle('o.retry', async job => {
    seen.retry.push([job.attempt, Date.now()])
    if (job.attempt === 1) throw new RetryIn(1, 'the API said 429')
  })
  await runUntil(worker, async () => (await db.one(
    "SELECT count(*)::int AS n FROM jobq.jobs WHERE id IN ($1, $2) AND state = 'completed'", [s, r])).n === 2, 'both done')
  // Snoozed: run twice, both times as attempt 1, and it completed on attempt 1.
  assert.deepEqual(seen.snooze.map(([a]) => a), [1, 1])
  assert.equal((await job(s)).attempt, 1)
  assert.equal((await db.one('SELECT count(*)::int AS n FROM jobq.job_error WHERE job_id = $1', [s])).n, 0)
  // Retried: attempt 1 failed with its message, attempt 2 completed.
  assert.deepEqual(seen.retry.map(([a]) => a), [1, 2])
  assert.equal((await job(r)).attempt, 2)
  const err = await db.one('SELECT attempt, outcome, message FROM jobq.job_error WHERE job_id = $1', [r])
  assert.equal(err.attempt, 1)
  assert.match(err.message, /RetryIn: the API said 429/)
  const snoozeGap = seen.snooze[1][1] - seen.snooze[0][1]
  const retryGap = seen.retry[1][1] - seen.retry[0][1]
  t.diagnostic(`snoozed 1 s: ran again after ${snoozeGap} ms; retry in 1 s: after ${retryGap} ms`)
  assert.ok(snoozeGap >= 900 && retryGap >= 900, `both waited about a second (${snoozeGap}, ${retryGap} ms)`)
})

test('a bad payload: the handler\'s error fails the job with its stack in last_error', async () => {
  const id = await enqueue(db.pool, 'o.bad', { items: 'not-an-array' })
  const worker = new Worker({ connectionString: db.url, queues: ['o_bad'], pollInterval: 0.1, logger: memoryLogger() })
  worker.handle('o.bad', async function sumItems (job) {
    return job.payload.items.reduce((a, b) => a + b, 0)
  })
  await runUntil(worker, async () => (await job(id)).state === 'failed', 'o.bad failed')
  const { last_error: e, attempt } = await job(id)
  assert.equal(attempt, 1)
  assert.match(e, /^TypeError: job\.payload\.items\.reduce is not a function\n/)
  assert.match(e, /at .*sumItems .*\(.*outcomes\.test\.js:\d+:\d+\)/, 'the stack names the handler and its file')
  const line = worker.logger.lines.find(l => l.message === 'failed')
  assert.deepEqual([line.kind, line.id, line.attempt, line.state], ['o.bad', id, 1, 'failed'],
    'the log line names kind, id and attempt')
})

test('a lost lease (the job cancelled under the handler): its writes roll back, LeaseLost is reported', async () => {
  const id = await enqueue(db.pool, 'o.lost', {})
  const logger = memoryLogger()
  const worker = new Worker({ connectionString: db.url, queues: ['o_lost'], pollInterval: 0.1, logger })
  let lost = null
  worker.on('leaseLost', (j, e) => { lost = e })
  worker.handle('o.lost', async job => {
    await job.client.query("INSERT INTO effects VALUES ($1, 'lost')", [job.id])
    await db.sql("SELECT jobq.cancel($1, 'test: taken away mid-job')", [job.id])
  })
  await runUntil(worker, () => lost, 'the lease lost')
  assert.ok(lost instanceof LeaseLost)
  assert.equal(lost.jobId, id)
  assert.equal(lost.cause.code, '55000')
  assert.equal((await job(id)).state, 'cancelled')
  assert.equal((await db.one('SELECT count(*)::int AS n FROM effects WHERE job_id = $1', [id])).n, 0,
    'the handler\'s write rolled back')
  assert.ok(logger.lines.some(l => l.level === 'warn' && /lease lost/.test(l.message) && l.id === id))
})

test('transactional: one claim per batch, a savepoint per job: one failure undoes only its own job', async () => {
  const ids = await enqueueMany(db.pool, 'o.tx', [1, 2, 3, 4, 5, 6].map(n => ({ n })))
  const worker = new Worker({ connectionString: db.url, queues: ['o_tx'], concurrency: 1, transactionalBatch: 10, pollInterval: 0.1, logger: memoryLogger() })
  const attempts = []
  worker.handle('o.tx', async job => {
    attempts.push(job.attempt)
    assert.equal(job.leaseToken, null)
    await job.client.query('INSERT INTO effects VALUES ($1, $2)', [job.id, `tx ${job.payload.n}`])
    if (job.payload.n === 3) throw new Error('n = 3 is refused')
    if (job.payload.n === 5) await job.client.query('SELECT 1/0') // an SQL error inside the savepoint
    return job.payload.n === 6 ? { six: true } : undefined
  }, { transactional: true })
  assert.equal(worker.claimMode, 'transactional')
  await runUntil(worker, async () => (await db.one(
    "SELECT count(*)::int AS n FROM jobq.jobs WHERE kind = 'o.tx' AND state IN ('completed', 'failed')")).n === 6, 'o.tx done')
  const rows = await db.sql(`SELECT payload->>'n' AS n, state, attempt, result, worker,
                                    (SELECT note FROM effects WHERE job_id = j.id) AS effect
                               FROM jobq.jobs j WHERE id = ANY ($1::bigint[]) ORDER BY 1`, [ids])
  assert.deepEqual(rows.map(r => [r.n, r.state, r.attempt, r.effect]), [
    ['1', 'completed', 1, 'tx 1'], ['2', 'completed', 1, 'tx 2'], ['3', 'failed', 1, null],
    ['4', 'completed', 1, 'tx 4'], ['5', 'failed', 1, null], ['6', 'completed', 1, 'tx 6']])
  assert.deepEqual(rows[5].result, { six: true })
  assert.equal(rows[0].worker, worker.name)
  assert.match((await db.one("SELECT last_error FROM jobq.jobs WHERE id = $1", [ids[4]])).last_error,
    /division by zero[\s\S]*SQLSTATE: 22012/)
  assert.deepEqual(attempts, [1, 1, 1, 1, 1, 1], 'one batch, each job once')
})

test('transactional handlers have no lease: step and externalKey refuse, once works', async () => {
  const id = await enqueue(db.pool, 'o.tx', { n: 7 })
  const seen = {}
  const worker = new Worker({ connectionString: db.url, queues: ['o_tx'], pollInterval: 0.1, logger: memoryLogger() })
  worker.handle('o.tx', async job => {
    seen.step = await job.step('x', () => 1).catch(e => e.message)
    seen.key = await job.externalKey('x').catch(e => e.message)
    seen.once = await job.once(`tx-once-${job.id}`)
  }, { transactional: true })
  await runUntil(worker, async () => (await job(id)).state === 'completed', 'o.tx 7 done')
  assert.match(seen.step, /job\.step\(\) needs a leased job/)
  assert.match(seen.key, /job\.externalKey\(\) needs a leased job/)
  assert.equal(seen.once, true)
})

test('a job of a kind without a handler here fails with a message that says so', async () => {
  const id = await enqueue(db.pool, 'o.none', {})
  const worker = new Worker({ connectionString: db.url, queues: ['o_none'], pollInterval: 0.1, logger: memoryLogger() })
  worker.handle('o.other', async () => {})
  await runUntil(worker, async () => (await job(id)).state === 'failed', 'o.none failed')
  assert.match((await job(id)).last_error, /no handler for kind "o\.none" in worker/)
})

test('the defaults, in seconds, and bad options refused', async () => {
  const w = new Worker()
  assert.deepEqual([w.queues, w.concurrency, w.leaseSeconds, w.heartbeatSeconds, w.pollInterval, w.shutdownGrace, w.claimMode],
    [['default'], 4, 30, 10, 1, 30, 'leased'])
  assert.throws(() => new Worker({ concurrency: 0 }), /concurrency must be an integer >= 1/)
  assert.throws(() => new Worker({ queues: [] }), /at least one queue/)
  assert.throws(() => new Snooze(-1), /seconds must be a finite number >= 0/)
  assert.throws(() => w.handle('k', 'not a function'), /must be a function/)
  await assert.rejects(w.run(), /no handlers/)
})
