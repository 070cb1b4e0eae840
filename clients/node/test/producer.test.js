// The producer API: enqueue and enqueueMany in the caller's transaction,
// and the package's entry points (CommonJS, ESM, types).
'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const { execFileSync } = require('node:child_process')
const path = require('node:path')
const pg = require('pg')
const { enqueue, enqueueMany } = require('..')
const { freshDatabase, ROOT } = require('./helpers')

let db
test.before(async () => {
  db = await freshDatabase('node_producer')
  await db.sql("SELECT jobq.register_kind('mail.send', queue => 'mail')")
  await db.sql("SELECT jobq.create_queue('other')")
})
test.after(() => db.end())

test('a job exists only if the enqueuing transaction commits', async () => {
  const client = new pg.Client({ connectionString: db.url })
  await client.connect()
  try {
    await client.query('BEGIN')
    const rolledBack = await enqueue(client, 'mail.send', { to: 'a@example.org' })
    assert.match(rolledBack, /^\d+$/, 'the id is a bigint as a string')
    await client.query('ROLLBACK')
    await client.query('BEGIN')
    const id = await enqueue(client, 'mail.send', { to: 'b@example.org' })
    await client.query('COMMIT')
    const rows = await db.sql("SELECT id::text, payload->>'to' AS to, queue FROM jobq.jobs WHERE kind = 'mail.send'")
    assert.deepEqual(rows, [{ id, to: 'b@example.org', queue: 'mail' }])
  } finally {
    await client.end()
  }
})

test('enqueue options: idempotency key, run_at, priority, queue, concurrency key', async () => {
  const runAt = new Date(Date.now() + 3600 * 1000)
  const opts = { idempotencyKey: 'order-42', runAt, priority: -5, queue: 'other', concurrencyKey: 'acct-1' }
  const id = await enqueue(db.pool, 'mail.send', { order: 42 }, opts)
  assert.equal(await enqueue(db.pool, 'mail.send', { order: 42 }, opts), id, 'a repeat returns the same id')
  const row = await db.one(`SELECT idempotency_key, priority, queue, concurrency_key,
                                   abs(extract(epoch FROM run_at) - $2) < 1 AS run_at_ok
                              FROM jobq.jobs WHERE id = $1`, [id, runAt.getTime() / 1000])
  assert.deepEqual(row, { idempotency_key: 'order-42', priority: -5, queue: 'other', concurrency_key: 'acct-1', run_at_ok: true })
  await assert.rejects(enqueue(db.pool, 'mail.send', { order: 43 }, opts), { code: '23505' },
    'the same key with another payload is an error')
  await assert.rejects(enqueue(db.pool, 'no.such_kind', {}), { code: '42704' })
})

test('after: jobs that wait until the jobs named have completed', async () => {
  const first = await enqueue(db.pool, 'mail.send', { step: 1 })
  const second = await enqueue(db.pool, 'mail.send', { step: 2 }, { after: [first] })
  const rest = await enqueueMany(db.pool, 'mail.send', [{ step: 3 }, { step: 4 }], { after: [first, Number(second)] })
  const rows = await db.sql(`SELECT state::text FROM jobq.jobs WHERE id = ANY ($1::bigint[]) ORDER BY id`,
    [[first, second, ...rest]])
  assert.deepEqual(rows.map(r => r.state), ['pending', 'waiting', 'waiting', 'waiting'])
  await assert.rejects(enqueue(db.pool, 'mail.send', {}, { after: first }), TypeError)
})

test('enqueueMany: one statement, ids in payload order, keys per payload', async () => {
  const ids = await enqueueMany(db.pool, 'mail.send', [{ n: 1 }, { n: 2 }, { n: 3 }],
    { idempotencyKeys: ['m-1', null, 'm-3'], queue: 'other' })
  assert.equal(ids.length, 3)
  const rows = await db.sql(`SELECT payload->>'n' AS n, idempotency_key AS k FROM jobq.jobs
                              WHERE id = ANY ($1::bigint[]) ORDER BY array_position($1::bigint[], id)`, [ids])
  assert.deepEqual(rows, [{ n: '1', k: 'm-1' }, { n: '2', k: null }, { n: '3', k: 'm-3' }])
  const again = await enqueueMany(db.pool, 'mail.send', [{ n: 1 }], { idempotencyKeys: ['m-1'], queue: 'other' })
  assert.deepEqual(again, [ids[0]])
  assert.deepEqual(await enqueueMany(db.pool, 'mail.send', []), [])
})

test('CommonJS and ESM entry points export the same classes', () => {
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', `
    import { Worker, Snooze, RetryIn, LeaseLost, enqueue, enqueueMany, wait } from 'jobq'
    import { createRequire } from 'node:module'
    const cjs = createRequire(import.meta.url)('jobq')
    console.log([Worker === cjs.Worker, Snooze === cjs.Snooze, RetryIn === cjs.RetryIn,
                 LeaseLost === cjs.LeaseLost, enqueue === cjs.enqueue, enqueueMany === cjs.enqueueMany,
                 wait === cjs.wait].join(' '))
  `], { cwd: ROOT, encoding: 'utf8' })
  assert.equal(out.trim(), 'true true true true true true true')
})

test('the types check (tsc, strict) against a worker written in TypeScript', () => {
  const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc')
  execFileSync(process.execPath, [tsc, '-p', path.join(__dirname, 'types')], { cwd: ROOT, encoding: 'utf8' })
})
