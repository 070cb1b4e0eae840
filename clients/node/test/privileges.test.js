// A worker role with nothing but jobq_worker and its own table's rights
// runs leased handlers (heartbeats, steps, external keys, snooze) and
// transactional ones; a producer role with jobq_producer enqueues.
'use strict'

const test = require('node:test')
const assert = require('node:assert/strict')
const { Worker, Snooze, enqueue } = require('..')
const { freshDatabase, waitFor, memoryLogger } = require('./helpers')

test('least privilege: a jobq_worker role runs both kinds of claim; a jobq_producer role enqueues', async () => {
  const db = await freshDatabase('node_privileges')
  try {
    await db.sql(`
      DO $$ BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'node_app_worker') THEN
          CREATE ROLE node_app_worker LOGIN IN ROLE jobq_worker;
        END IF;
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'node_app_producer') THEN
          CREATE ROLE node_app_producer LOGIN IN ROLE jobq_producer;
        END IF;
      END $$;
      CREATE TABLE effects (job_id bigint PRIMARY KEY, note text);
      GRANT INSERT ON effects TO node_app_worker;
      SELECT jobq.register_kind('p.leased', queue => 'p_leased');
      SELECT jobq.register_kind('p.tx', queue => 'p_tx');`)
    const producer = new (require('pg').Pool)({ database: db.name, user: 'node_app_producer', max: 1 })
    const leased = await enqueue(producer, 'p.leased', { n: 1 })
    const tx = await enqueue(producer, 'p.tx', { n: 2 })
    await producer.end()
    await assert.rejects(db.sql('SET ROLE node_app_producer; SELECT jobq.claim(\'p_leased\')'), { code: '42501' })
    await db.sql('RESET ROLE')

    const run = async (w, id) => {
      const stop = new AbortController()
      const running = w.run({ signal: stop.signal })
      await waitFor(async () => (await db.one('SELECT state FROM jobq.jobs WHERE id = $1', [id])).state === 'completed',
        `job ${id} to complete`, 30000)
      stop.abort()
      await running
    }
    const opts = { connectionString: db.url, pg: { user: 'node_app_worker' }, pollInterval: 0.1, heartbeatSeconds: 0.2, logger: memoryLogger() }
    let runs = 0
    const w1 = new Worker({ ...opts, queues: ['p_leased'] })
    w1.handle('p.leased', async job => {
      if (runs++ === 0) throw new Snooze(0)
      const key = await job.step('key', () => job.externalKey('k'))
      await new Promise(resolve => setTimeout(resolve, 500)) // a few heartbeats
      await job.client.query('INSERT INTO effects VALUES ($1, $2)', [job.id, key])
    })
    await run(w1, leased)
    const w2 = new Worker({ ...opts, queues: ['p_tx'] })
    w2.handle('p.tx', async job => {
      await job.client.query("INSERT INTO effects VALUES ($1, 'tx')", [job.id])
    }, { transactional: true })
    await run(w2, tx)
    const rows = await db.sql('SELECT j.attempt, e.note FROM jobq.jobs j JOIN effects e ON e.job_id = j.id ORDER BY j.id')
    assert.equal(rows.length, 2)
    assert.equal(rows[0].attempt, 1, 'the snooze charged nothing')
    assert.match(rows[0].note, /^jobq-[0-9a-f]{64}$/)
    assert.deepEqual(rows[1], { attempt: 1, note: 'tx' })
    for (const w of [w1, w2]) {
      assert.deepEqual(w.logger.lines.filter(l => l.level === 'warn' || l.level === 'error'), [], 'no warning, no error')
    }
  } finally {
    await db.end()
  }
})
