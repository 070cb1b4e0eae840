// clients/node/test/tasks/app.js: the handlers the process tests run
// through bin/jobq-worker.js.  JOBQ_TEST_TX=1 registers them transactional.
// "First run" means no 'started' mark for the job yet in the progress
// table, which the handlers write on a connection of their own (committed
// at once, as a call to an outside service would be).
'use strict'

const pg = require('pg')

const tx = process.env.JOBQ_TEST_TX === '1'
let side = null
const outside = (text, values) => {
  side = side || new pg.Pool({ max: 2 })
  return side.query(text, values)
}
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

// Mark the job started (outside its transaction); true on its first run.
async function firstRun (job) {
  const { rows } = await outside(
    "INSERT INTO progress (job_id, what, worker) VALUES ($1, 'started', $2) RETURNING" +
    " (SELECT count(*) FROM progress WHERE job_id = $1 AND what = 'started') = 0 AS first",
    [job.id, process.env.JOBQ_TEST_NAME || ''])
  return rows[0].first
}

module.exports = function (worker) {
  const opts = { transactional: tx }

  // Exactly-once effects: a second run of a job would bump n.
  worker.handle('eo.effect', async job => {
    await job.client.query(
      'INSERT INTO effects (job_id, note) VALUES ($1, $2)' +
      ' ON CONFLICT (job_id) DO UPDATE SET n = effects.n + 1', [job.id, worker.name])
  }, opts)

  // Takes payload.ms on its first run, payload.after (default 0) later.
  worker.handle('shut.long', async job => {
    await job.client.query('INSERT INTO effects (job_id, note) VALUES ($1, $2)', [job.id, `attempt ${job.attempt}`])
    const ms = (await firstRun(job)) ? job.payload.ms : (job.payload.after || 0)
    await sleep(ms)
    return { slept: ms }
  }, opts)

  // Writes, then on its first run never returns (the test kills it).
  worker.handle('crash.slow', async job => {
    await job.client.query('INSERT INTO effects (job_id, note) VALUES ($1, $2)', [job.id, `attempt ${job.attempt}`])
    if (await firstRun(job)) await new Promise(() => {})
  }, opts)

  // An external call made once, with a stable key, across a crash: leased
  // only (a leased handler would make the whole worker claim with leases).
  if (tx) return
  worker.handle('steps.charge', async job => {
    const key = await job.externalKey('charge')
    const charge = await job.step('charge', async () => {
      const { rows } = await outside(
        'INSERT INTO api_calls (key, job_id, attempt) VALUES ($1, $2, $3) RETURNING id', [key, job.id, job.attempt])
      return { chargeId: `ch_${rows[0].id}`, key }
    })
    if (await firstRun(job)) await new Promise(() => {})
    await job.client.query('INSERT INTO effects (job_id, note) VALUES ($1, $2)', [job.id, charge.chargeId])
    return { ...charge, keyNow: key }
  })

}
