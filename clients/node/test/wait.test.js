// wait(): a producer waits for its job, woken by the commit that finishes it.
'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const pg = require('pg')
const { enqueue, wait } = require('..')
const { freshDatabase, waitFor } = require('./helpers')

let db
test.before(async () => {
  db = await freshDatabase('node_wait')
  await db.sql("SELECT jobq.register_kind('report.build', queue => 'reports', max_attempts => 1)")
})
test.after(() => db.end())

// Whether another session sleeps in jobq.wait().
async function asleep () {
  const row = await db.one(`SELECT count(*)::int AS n FROM pg_stat_activity
                             WHERE wait_event_type = 'Extension' AND query LIKE '%jobq.wait(%'`)
  return row.n > 0
}

async function claim () {
  return db.one("SELECT id::text AS id, lease_token::text AS token FROM jobq.claim('reports', lease => '1 hour')")
}

test('wait resolves when another session completes the job', async () => {
  const client = new pg.Client({ connectionString: db.url })
  await client.connect()
  try {
    const id = await enqueue(client, 'report.build', { month: 11 })
    const job = await claim()
    assert.equal(job.id, id)
    const waiting = wait(client, id, { timeout: 60 })
    await waitFor(asleep, 'the wait to sleep')
    await db.sql('SELECT jobq.complete($1, $2, $3)', [job.id, job.token, JSON.stringify({ rows: 1234 })])
    assert.deepEqual(await waiting,
      { state: 'completed', result: { rows: 1234 }, lastError: null, finished: true })
  } finally {
    await client.end()
  }
})

test('a failure ends the wait with its error; a timeout with the state the job is in', async () => {
  const id = await enqueue(db.pool, 'report.build', { month: 12 })
  assert.deepEqual(await wait(db.pool, id, { timeout: 0.2 }),
    { state: 'pending', result: null, lastError: null, finished: false })
  const job = await claim()
  assert.equal((await wait(db.pool, id, { timeout: 0 })).state, 'running')
  const waiting = wait(db.pool, id)
  await waitFor(asleep, 'the wait to sleep')
  await db.sql("SELECT jobq.fail($1, $2, 'disk full')", [job.id, job.token])
  assert.deepEqual(await waiting, { state: 'failed', result: null, lastError: 'disk full', finished: true })
})

test('wait refuses a bad timeout and a job this transaction enqueued', async () => {
  await assert.rejects(wait(db.pool, '1', { timeout: -1 }), TypeError)
  const client = new pg.Client({ connectionString: db.url })
  await client.connect()
  try {
    await client.query('BEGIN')
    const id = await enqueue(client, 'report.build', {})
    await assert.rejects(wait(client, id, { timeout: 5 }), { code: '25000' })
    await client.query('ROLLBACK')
    await assert.rejects(wait(client, '9223372036854775807', { timeout: 0 }), { code: '42704' })
  } finally {
    await client.end()
  }
})
