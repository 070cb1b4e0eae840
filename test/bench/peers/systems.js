// test/bench/peers/systems.js: one adapter per benchmarked system.
//
// Every adapter has the same shape, so that bench.js measures them all
// the same way:
//   open() / close()          connect / disconnect its producer side
//   reset()                   empty its queue (TRUNCATE or recreate)
//   enqueueOne(payload)       one job, one transaction
//   enqueueMany(payloads)     many jobs, one transaction
//   fill(n)                   n jobs in chunks (untimed preparation)
//   drain(n)                  consume n pre-enqueued jobs, returning
//                             { jobs, t0, t1 } in epoch milliseconds
//   latency(n, everyMs)       enqueue n jobs at a steady pace and return
//                             each one's commit -> handler-start delay in ms
//
// Latency is measured on one clock, the server's (track_commit_timestamp
// is on): from pg_xact_commit_timestamp() of the enqueuing transaction to
// a clock_timestamp() taken as the job starts (LATENCY_METHOD says how,
// per system).
// jobq-node is clients/node's Worker, the runtime this repository ships.
// Systems without a handler of their own (the floor, PgQ, jobq's external
// worker) do their drain as a client loop here.
'use strict'

const fs = require('fs')
const os = require('os')
const path = require('path')
const { spawn } = require('child_process')
const { Client } = require('pg')
const { performance } = require('perf_hooks')
const { run, runMigrations, makeWorkerUtils, Logger } = require('graphile-worker')
const PgBoss = require('pg-boss')

const env = process.env
const now = () => performance.timeOrigin + performance.now()
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))
const log = (...args) => console.error(...args)

// Connection settings of one system's database.
const dbConf = database => ({ host: env.PGHOST, port: Number(env.PGPORT), user: env.PGUSER, database })

// The same as a connection string, for clients that take one.
const nodeUrl = database =>
  `postgresql:///${database}?host=${encodeURIComponent(env.PGHOST)}&port=${env.PGPORT}&user=${env.PGUSER}`

async function connect (database) {
  const client = new Client(dbConf(database))
  await client.connect()
  return client
}

// Chunk size of untimed fills: also PgQ's batch size (a tick per chunk).
const CHUNK = 10000

// The configurations under test; bench.js prints them into the report.
const CONFIG = {
  floor: {
    drainClients: 2,
    drain: 'DELETE … WHERE id IN (SELECT id … ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED)'
  },
  jobqExternal: { clients: 2, claim: 100, complete: 'complete_many, same transaction' },
  jobqExternalTx: { clients: 2, claim: 'claim_in_transaction 100', complete: 'complete_many, same transaction' },
  // clients/node: two Worker objects, each running two batch transactions
  // at once (concurrency 2: one commits while the other claims), a no-op
  // handler with transactional: true, batches of up to 500 jobs
  // (graphile-worker's local queue above holds as many).
  jobqNode: { workers: 2, concurrency: 2, transactionalBatch: 500, transactional: true, pollInterval: 0.05 },
  // clients/python's worker: processes of `python -m jobq worker`.
  jobqPy: { workers: 2, batchSize: 500, pollInterval: 0.05 },
  // The configuration of graphile-worker's performance documentation.
  graphile: {
    concurrentJobs: 24,
    maxPoolSize: 25,
    localQueue: { size: 500 },
    completeJobBatchDelay: 0,
    failJobBatchDelay: 0,
    pollInterval: 2000,
    preparedStatements: true
  },
  // Its defaults, for latency only: no local queue, completions one by one.
  graphileDefaults: { concurrentJobs: 1, maxPoolSize: 10, pollInterval: 2000, preparedStatements: true },
  // pg-boss 10 has no teamSize: concurrency is several work() calls.
  pgboss: { workers: 4, batchSize: 1000, pollingIntervalSeconds: 0.5, supervise: false, schedule: false },
  // PgQ's consumer sleeps this long when next_batch finds nothing.
  pgq: { consumerIdleSleepMs: 10 }
}

// n payloads in chunks of CHUNK, each passed to enqueueMany.
async function fillInChunks (n, enqueueMany) {
  for (let i = 0; i < n; i += CHUNK) {
    await enqueueMany(Array.from({ length: Math.min(CHUNK, n - i) }, (_, j) => JSON.stringify({ n: i + j })))
  }
}

// A client-side drain: `clients` connections run `step` until n jobs are
// done; step(client, i) returns how many jobs it finished.
async function clientDrain (database, clients, n, step) {
  const conns = await Promise.all(Array.from({ length: clients }, () => connect(database)))
  let done = 0
  const t0 = now()
  await Promise.all(conns.map(async (client, i) => {
    while (done < n) {
      const k = await step(client, i)
      if (k === 0) break
      done += k
    }
  }))
  const t1 = now()
  await Promise.all(conns.map(c => c.end()))
  return { jobs: done, t0, t1 }
}

// Steady producer: one job every everyMs; enqueue(k) returns the xid of
// the transaction that enqueued job k.  Returns the xids by key.
async function paced (n, everyMs, enqueue) {
  const xids = new Map()
  const start = now()
  for (let k = 1; k <= n; k++) {
    const wait = start + k * everyMs - now()
    if (wait > 0) await sleep(wait)
    xids.set(k, await enqueue(k))
  }
  return xids
}

// How each system's latency is measured: what stands for the enqueue's
// commit and for the job's start.  bench.js prints it into the report.
const LATENCY_METHOD = {
  floor: 'pg_xact_commit_timestamp() of an INSERT INTO floor_q that also sends pg_notify() → clock_timestamp() of an INSERT a LISTENing Node client sends when the notification arrives (one client-to-server trip late): a consumer woken at commit, the least latency a system that waits for the commit can show',
  jobq: 'pg_xact_commit_timestamp() of the transaction of jobq.enqueue() → clock_timestamp() written by the SQL handler as it starts (inside the worker\'s transaction)',
  graphile: 'pg_xact_commit_timestamp() of the transaction of graphile_worker.add_job() (the SQL function addJob calls) → clock_timestamp() of an INSERT the Node task sends as it starts (one client-to-server trip late)',
  pgboss: 'pg_xact_commit_timestamp() of the transaction of send() (its db option: our connection, the xid read before COMMIT) → clock_timestamp() of an INSERT the Node handler sends as it starts, one per batch (one client-to-server trip late)',
  pgq: 'pg_xact_commit_timestamp() of each event\'s ev_txid → clock_timestamp() of the consumer\'s pgq.get_batch_events() that returns it (the consumer starts on the event as the rows arrive)'
}

// The xid of the current transaction, as text (node-postgres has no xid8).
const XID = 'pg_current_xact_id()::text AS xid'

// A connection for Node handlers to record their start on, whose commits
// do not wait for the WAL flush: with one job every 20 ms on one
// connection, a handler's record would otherwise wait for the last one's
// flush before reading the clock.
async function stampClient (database) {
  const client = await connect(database)
  await client.query('SET synchronous_commit = off')
  return client
}

// Commit -> start in ms, on the server: waits (10 s at most) until
// `table` (k int, started_at timestamptz) has a row for every key of
// xids, the enqueuing transactions' xids by key, then joins the two.
async function serverLatencies (client, table, xids) {
  for (let tries = 0; tries < 200; tries++) {
    if ((await client.query(`SELECT count(*)::int AS n FROM ${table}`)).rows[0].n >= xids.size) break
    await sleep(50)
  }
  const ks = [...xids.keys()]
  const { rows } = await client.query(`
    SELECT extract(epoch FROM s.started_at - pg_xact_commit_timestamp(xid(e.xid))) * 1000 AS ms
      FROM ${table} s JOIN unnest($1::bigint[], $2::xid8[]) AS e (k, xid) ON e.k = s.k`,
  [ks, ks.map(k => xids.get(k))])
  return rows.map(r => Number(r.ms))
}

// ---------------------------------------------------------------- floor

// Its single enqueue comes in three shapes (enqueue_node.sh compares them):
// 'plain', a bare INSERT, the floor of every report; 'returning', which
// also returns the new row's id, as every queue's enqueue does; and
// 'function', the same INSERT ... RETURNING in a SQL function called by a
// SELECT, as a queue's enqueue function is called.
const FLOOR_ENQUEUE = {
  plain: 'INSERT INTO floor_q (payload) VALUES ($1)',
  returning: 'INSERT INTO floor_q (payload) VALUES ($1) RETURNING id',
  function: 'SELECT floor_enqueue($1)'
}

class Floor {
  constructor (shape = 'plain') {
    this.db = 'bench_floor'
    this.shape = shape
    this.enqueueSql = FLOOR_ENQUEUE[shape]
  }

  async open () {
    this.c = await connect(this.db)
    if (this.shape !== 'function') return
    await this.c.query(`CREATE OR REPLACE FUNCTION floor_enqueue(p jsonb) RETURNS bigint
      LANGUAGE sql AS 'INSERT INTO floor_q (payload) VALUES (p) RETURNING id'`)
  }

  async close () { await this.c.end() }
  async reset () { await this.c.query('TRUNCATE floor_q') }
  async enqueueOne (p) { await this.c.query(this.enqueueSql, [p]) }
  async enqueueMany (ps) {
    await this.c.query('INSERT INTO floor_q (payload) SELECT * FROM unnest($1::jsonb[])', [ps])
  }

  fill (n) { return fillInChunks(n, ps => this.enqueueMany(ps)) }

  // A consumer woken by the commit itself: LISTEN, and record the start of
  // each notified job from another connection.
  async latency (n, everyMs) {
    await this.c.query('CREATE TABLE IF NOT EXISTS latency (k bigint PRIMARY KEY, started_at timestamptz NOT NULL)')
    await this.c.query('TRUNCATE latency')
    const listener = await connect(this.db)
    const stamp = await stampClient(this.db)
    listener.on('notification', msg => {
      stamp.query('INSERT INTO latency VALUES ($1, clock_timestamp())', [Number(msg.payload)])
        .catch(err => log('floor latency:', err.message))
    })
    await listener.query('LISTEN floor_latency')
    const xids = await paced(n, everyMs, async k => (await this.c.query(
      `WITH job AS (INSERT INTO floor_q (payload) VALUES (jsonb_build_object('k', $1::int)))
       SELECT pg_notify('floor_latency', $1::text), ${XID}`, [k])).rows[0].xid)
    const ms = await serverLatencies(this.c, 'latency', xids)
    await listener.end()
    await stamp.end()
    return ms
  }

  drain (n) {
    return clientDrain(this.db, CONFIG.floor.drainClients, n, async client =>
      (await client.query(`DELETE FROM floor_q WHERE id IN
          (SELECT id FROM floor_q ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED)`)).rowCount)
  }
}

// ----------------------------------------------------------------- jobq

// Enqueue scenarios use a kind without a handler, so no worker runs them.
// how: 'workers' (the background workers), 'external' (a client loop of
// claim + complete_many) or 'node' (clients/node's Worker).
class Jobq {
  constructor (how) {
    this.db = 'bench_jobq'
    this.how = how
    this.external = how !== 'workers'
    this.kind = { workers: 'bench.noop', external: 'bench.ext', 'external-tx': 'bench.ext', node: 'bench.node', py: 'bench.py' }[how]
  }

  async open () { this.c = await connect(this.db) }
  async close () { await this.c.end() }
  async reset () {
    await this.c.query('TRUNCATE jobq.job, jobq.lease, jobq.job_error, jobq.job_key, latency')
  }

  async enqueueOne (p) { await this.c.query("SELECT jobq.enqueue('bench.ext', $1)", [p]) }
  async enqueueMany (ps, kind = 'bench.ext') {
    await this.c.query('SELECT count(*) FROM jobq.enqueue_many($1, $2::jsonb[])', [kind, ps])
  }

  // The in-database kind's queue stays paused while it fills.
  async fill (n) {
    if (!this.external) await this.c.query("SELECT jobq.pause_queue('bench')")
    await fillInChunks(n, ps => this.enqueueMany(ps, this.kind))
  }

  drain (n) {
    if (this.how === 'node') return this.drainNode(n)
    if (this.how === 'py') return this.drainPy(n)
    if (this.how === 'external-tx') return this.drainExternalTx(n)
    return this.external ? this.drainExternal(n) : this.drainWorkers(n)
  }

  // clients/node's runtime: CONFIG.jobqNode.workers Worker objects (each
  // as a separate process would have it: its own pool), a no-op handler
  // declared transactional, so each batch is one transaction of
  // claim_in_transaction + complete_many, in two round trips.  Timed from the first handler
  // call to the 'completed' event that made the count, which the Worker
  // emits after its batch committed.
  async drainNode (n) {
    const { Worker } = require('jobq')
    const { workers, ...options } = CONFIG.jobqNode
    let done = 0; let t0 = 0; let t1 = 0; let finished
    const allDone = new Promise(resolve => { finished = resolve })
    const stop = new AbortController()
    const silent = { debug () {}, info () {}, warn (m, f) { log('jobq-node:', m, f) }, error (m, f) { log('jobq-node:', m, f) } }
    const runs = Array.from({ length: workers }, (_, i) => {
      const w = new Worker({ ...options, connectionString: nodeUrl(this.db), queues: ['bench_node'], name: `bench-node-${i}`, logger: silent })
      w.handle('bench.node', () => { if (t0 === 0) t0 = now() }, { transactional: options.transactional })
      w.on('completed', () => { if (++done === n) { t1 = now(); finished() } })
      return w.run({ signal: stop.signal })
    })
    await allDone
    stop.abort()
    await Promise.all(runs)
    return { jobs: n, t0, t1 }
  }

  // clients/python's runtime: CONFIG.jobqPy.workers processes of `python -m
  // jobq worker` (JOBQ_PYTHON, a venv peers.sh made) with a no-op handler
  // declared transactional.  The queue is paused while they start; timed
  // on the server from the first job's start (its claim) to the n-th
  // finish, both recorded in the jobs by their completion.
  async drainPy (n) {
    const { workers, batchSize, pollInterval } = CONFIG.jobqPy
    const app = fs.mkdtempSync(path.join(os.tmpdir(), 'jobq-bench-py-'))
    fs.writeFileSync(path.join(app, 'bench_py_app.py'),
      'import jobq\n\n@jobq.handler("bench.py", transactional=True)\ndef noop(job):\n    return None\n')
    await this.c.query("SELECT jobq.pause_queue('bench_py')")
    const dsn = `host=${env.PGHOST} port=${env.PGPORT} user=${env.PGUSER} dbname=${this.db}`
    const procs = Array.from({ length: workers }, () => spawn(env.JOBQ_PYTHON || 'python3',
      ['-m', 'jobq', 'worker', 'bench_py_app', '--dsn', dsn, '--queue', 'bench_py',
        '--batch-size', String(batchSize), '--poll-interval', String(pollInterval), '--log-level', 'WARNING'],
      { cwd: app, env: { ...env, PYTHONPATH: app }, stdio: ['ignore', 'inherit', 'inherit'] }))
    const exited = procs.map(p => new Promise(resolve => p.once('exit', resolve)))
    try {
      while ((await this.c.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND application_name LIKE 'py-%'",
        [this.db])).rows[0].n < workers) await sleep(20)
      await this.c.query("SELECT jobq.resume_queue('bench_py')")
      while ((await this.c.query("SELECT count(*)::int AS n FROM jobq.job WHERE kind = 'bench.py' AND state = 'completed'")).rows[0].n < n) await sleep(20)
    } finally {
      for (const p of procs) p.kill('SIGTERM')
      await Promise.all(exited)
      fs.rmSync(app, { recursive: true, force: true })
    }
    const { rows } = await this.c.query(`
      SELECT extract(epoch FROM (SELECT min(started_at) FROM jobq.job WHERE kind = 'bench.py' AND state = 'completed')) * 1000 AS t0,
             extract(epoch FROM (SELECT finished_at FROM jobq.job WHERE kind = 'bench.py' AND state = 'completed'
                                  ORDER BY finished_at OFFSET $1 - 1 LIMIT 1)) * 1000 AS t1`, [n])
    return { jobs: n, t0: Number(rows[0].t0), t1: Number(rows[0].t1) }
  }

  // An external worker: claim 100 and complete them in one transaction.
  drainExternal (n) {
    return clientDrain(this.db, CONFIG.jobqExternal.clients, n, async (client, i) => {
      await client.query('BEGIN')
      const { rows } = await client.query("SELECT id, lease_token FROM jobq.claim('bench_ext', $1, 100)", [`w${i}`])
      if (rows.length > 0) {
        await client.query('SELECT jobq.complete_many($1::bigint[], $2::bigint[])',
          [rows.map(r => r.id), rows.map(r => r.lease_token)])
      }
      await client.query('COMMIT')
      return rows.length
    })
  }

  // An external worker that does its work in the claiming transaction:
  // claim_in_transaction 100 (the row locks are the lease) and complete
  // them in the same transaction, the floor's loop with jobq's calls.
  drainExternalTx (n) {
    return clientDrain(this.db, CONFIG.jobqExternalTx.clients, n, async (client) => {
      await client.query('BEGIN')
      const { rows } = await client.query("SELECT id FROM jobq.claim_in_transaction('bench_ext', NULL, 100)")
      if (rows.length > 0) {
        await client.query('SELECT jobq.complete_many($1::bigint[], NULL)', [rows.map(r => r.id)])
      }
      await client.query('COMMIT')
      return rows.length
    })
  }

  // The background workers: resume the queue, follow their completion
  // counters (shared memory, cheap to read), pause the queue once n are
  // done, then read the exact times from the jobs: the first start and
  // the n-th finish.  The queue stays paused: the rest is left undone.
  async drainWorkers (n) {
    const completed = async () =>
      Number((await this.c.query('SELECT coalesce(sum(jobs_completed), 0) AS n FROM jobq.workers')).rows[0].n)
    const base = await completed()
    await this.c.query("SELECT jobq.resume_queue('bench')")
    while (await completed() - base < n) await sleep(20)
    await this.c.query("SELECT jobq.pause_queue('bench')")
    while ((await this.c.query('SELECT count(*)::int AS n FROM jobq.running')).rows[0].n > 0) await sleep(20)
    const { rows } = await this.c.query(`
      SELECT extract(epoch FROM (SELECT min(started_at) FROM jobq.job WHERE state = 'completed')) * 1000 AS t0,
             extract(epoch FROM (SELECT finished_at FROM jobq.job WHERE state = 'completed'
                                  ORDER BY finished_at OFFSET $1 - 1 LIMIT 1)) * 1000 AS t1`, [n])
    return { jobs: n, t0: Number(rows[0].t0), t1: Number(rows[0].t1) }
  }

  // The handler records clock_timestamp() when it starts.
  async latency (n, everyMs) {
    const xids = await paced(n, everyMs, async k => (await this.c.query(
      `SELECT jobq.enqueue('bench.latency', jsonb_build_object('k', $1::int)), ${XID}`, [k])).rows[0].xid)
    return serverLatencies(this.c, 'latency', xids)
  }
}

// ------------------------------------------------------ graphile-worker

const quiet = new Logger(() => (level, message) => { if (level === 'error') log('graphile-worker:', message) })

class Graphile {
  constructor (config) { this.db = 'bench_graphile'; this.config = config }
  get options () {
    const { pollInterval, preparedStatements, ...preset } = this.config
    return {
      connectionString: `postgres:///${this.db}?host=${env.PGHOST}&port=${env.PGPORT}&user=${env.PGUSER}`,
      logger: quiet,
      noHandleSignals: true,
      pollInterval,
      preset: { worker: { ...preset, preparedStatements } }
    }
  }

  async setup () { await runMigrations(this.options) }

  async open () {
    this.c = await connect(this.db)
    this.utils = await makeWorkerUtils({ ...this.options, maxPoolSize: 2 })
  }

  async close () { await this.utils.release(); await this.c.end() }
  async reset () {
    await this.c.query('TRUNCATE graphile_worker._private_jobs, graphile_worker._private_job_queues, bench_started')
  }
  async enqueueOne (p) { await this.utils.addJob('noop', JSON.parse(p)) }
  async enqueueMany (ps) {
    await this.utils.addJobs(ps.map(p => ({ identifier: 'noop', payload: JSON.parse(p) })))
  }

  fill (n) { return fillInChunks(n, ps => this.enqueueMany(ps)) }
  // A runner in the documented high-throughput configuration; its
  // handlers count themselves.
  async withRunner (taskList, body) {
    const runner = await run(this.options, taskList)
    try { return await body() } finally { await runner.stop() }
  }

  async drain (n) {
    let done = 0; let t0 = 0; let t1 = 0; let finished
    const allDone = new Promise(resolve => { finished = resolve })
    const noop = async () => {
      if (done === 0) t0 = now()
      if (++done === n) { t1 = now(); finished() }
    }
    await this.withRunner({ noop }, () => allDone)
    return { jobs: n, t0, t1 }
  }

  // The task's first act is to record the server's clock, on a
  // connection of its own; the producer calls add_job() as addJob() does,
  // on our connection, to learn its transaction's xid.
  async latency (n, everyMs) {
    const stamp = await stampClient(this.db)
    const lat = async payload => {
      await stamp.query('INSERT INTO bench_started VALUES ($1, clock_timestamp())', [payload.k])
    }
    try {
      return await this.withRunner({ lat }, async () => {
        await sleep(500) // let the runner start listening
        const xids = await paced(n, everyMs, async k => (await this.c.query(
          `SELECT graphile_worker.add_job(identifier => 'lat', payload => json_build_object('k', $1::int)), ${XID}`,
          [k])).rows[0].xid)
        return serverLatencies(this.c, 'bench_started', xids)
      })
    } finally {
      await stamp.end()
    }
  }
}

// -------------------------------------------------------------- pg-boss

class Boss {
  constructor () { this.db = 'bench_pgboss' }
  async boss () {
    const boss = new PgBoss({ ...dbConf(this.db), supervise: CONFIG.pgboss.supervise, schedule: CONFIG.pgboss.schedule })
    boss.on('error', e => log('pg-boss:', e.message))
    await boss.start()
    return boss
  }

  async setup () {
    const boss = await this.boss()
    for (const q of ['noop', 'lat']) if (!await boss.getQueue(q)) await boss.createQueue(q)
    await boss.stop({ graceful: false })
  }

  async open () { this.c = await connect(this.db); this.b = await this.boss() }
  async close () { await this.b.stop({ graceful: false }); await this.c.end() }
  async reset () { await this.c.query('TRUNCATE pgboss.job, pgboss.archive, bench_started') }
  async enqueueOne (p) { await this.b.send('noop', JSON.parse(p)) }
  async enqueueMany (ps) { await this.b.insert(ps.map(p => ({ name: 'noop', data: JSON.parse(p) }))) }
  fill (n) { return fillInChunks(n, ps => this.enqueueMany(ps)) }
  // Several polling workers; each handler call gets a batch.
  async withWorkers (queue, handler, body) {
    const { workers, batchSize, pollingIntervalSeconds } = CONFIG.pgboss
    for (let i = 0; i < workers; i++) await this.b.work(queue, { batchSize, pollingIntervalSeconds }, handler)
    try { return await body() } finally { await this.b.offWork(queue) }
  }

  async drain (n) {
    let done = 0; let t0 = 0; let t1 = 0; let finished
    const allDone = new Promise(resolve => { finished = resolve })
    const handler = async jobs => {
      if (done === 0) t0 = now()
      done += jobs.length
      if (done >= n && t1 === 0) { t1 = now(); finished() }
    }
    await this.withWorkers('noop', handler, () => allDone)
    return { jobs: done, t0, t1 }
  }

  // The handler's first act is to record the server's clock for its
  // batch, on a connection of its own; send() runs on our connection (its
  // db option), in a transaction whose xid we read before COMMIT.
  async latency (n, everyMs) {
    const stamp = await stampClient(this.db)
    const handler = async jobs => {
      await stamp.query('INSERT INTO bench_started SELECT unnest($1::int[]), clock_timestamp()', [jobs.map(j => j.data.k)])
    }
    const db = { executeSql: (text, values) => this.c.query(text, values) }
    try {
      return await this.withWorkers('lat', handler, async () => {
        const xids = await paced(n, everyMs, async k => {
          await this.c.query('BEGIN')
          await this.b.send('lat', { k }, { db })
          const { xid } = (await this.c.query(`SELECT ${XID}`)).rows[0]
          await this.c.query('COMMIT')
          return xid
        })
        return serverLatencies(this.c, 'bench_started', xids)
      })
    } finally {
      await stamp.end()
    }
  }
}

// ------------------------------------------------------------------ PgQ

// The queues are created once (peers.sh); a reset moves the consumer to
// the latest tick and empties the event tables.  (Dropping a queue races
// with pgqd, which then stops ticking the database for a while.)
class Pgq {
  constructor () { this.db = 'bench_pgq' }
  async open () { this.c = await connect(this.db) }
  async close () { await this.c.end() }
  async reset () {
    for (const q of ['bench', 'lat']) {
      await this.c.query("SELECT pgq.unregister_consumer($1, 'c')", [q])
      await this.c.query("SELECT pgq.register_consumer($1, 'c')", [q])
      const { rows } = await this.c.query('SELECT queue_data_pfx FROM pgq.queue WHERE queue_name = $1', [q])
      await this.c.query(`TRUNCATE ${rows[0].queue_data_pfx}`) // with its inherited tables
    }
  }

  async enqueueOne (p) { await this.c.query("SELECT pgq.insert_event('bench', 'noop', $1)", [p]) }
  async enqueueMany (ps) {
    await this.c.query("SELECT count(pgq.insert_event('bench', 'noop', p)) FROM unnest($1::text[]) p", [ps])
  }

  // A tick after each chunk, forced (pgqd may have ticked while the
  // chunk's transaction was open, counting its uncommitted events, and
  // would then wait ticker_max_lag before the next tick).  force_tick
  // asks pgqd for a tick; calling pgq.ticker beside pgqd is unsafe.
  async fill (n) {
    const forceTick = async () => (await this.c.query("SELECT pgq.force_tick('bench') AS t")).rows[0].t
    await fillInChunks(n, async ps => {
      await this.enqueueMany(ps)
      const before = await forceTick()
      while (await forceTick() === before) await sleep(10)
    })
  }

  // One consumer: next_batch, get_batch_events, finish_batch, commit.
  // With `latency`, each event comes with its commit -> fetch time in ms.
  async consume (client, queue, onEvents, latency = false) {
    await client.query('BEGIN')
    const batch = (await client.query("SELECT pgq.next_batch($1, 'c') AS b", [queue])).rows[0].b
    let k = 0
    if (batch !== null) {
      const { rows } = await client.query(latency
        ? `SELECT ev_id, ev_data, extract(epoch FROM clock_timestamp()
                  - pg_xact_commit_timestamp(xid(ev_txid::text::xid8))) * 1000 AS ms
             FROM pgq.get_batch_events($1)`
        : 'SELECT ev_id, ev_data FROM pgq.get_batch_events($1)', [batch])
      onEvents(rows)
      k = rows.length
      await client.query('SELECT pgq.finish_batch($1)', [batch])
    }
    await client.query('COMMIT')
    return { batch, k }
  }

  drain (n) {
    return clientDrain(this.db, 1, n, async client => {
      for (;;) {
        const { batch, k } = await this.consume(client, 'bench', () => {})
        if (batch === null) return 0
        if (k > 0) return k
      }
    })
  }

  // Every event carries its producer's transaction id (ev_txid): the
  // consumer's fetch computes the latency on the server.
  async latency (n, everyMs) {
    const ms = new Map()
    const consumer = await connect(this.db)
    let stop = false
    const loop = (async () => {
      while (!stop) {
        const { batch } = await this.consume(consumer, 'lat', rows => {
          for (const r of rows) ms.set(Number(r.ev_data), Number(r.ms))
        }, true)
        if (batch === null) await sleep(CONFIG.pgq.consumerIdleSleepMs)
      }
    })()
    await paced(n, everyMs, k => this.c.query("SELECT pgq.insert_event('lat', 'lat', $1)", [String(k)]))
    for (let tries = 0; ms.size < n && tries < 200; tries++) await sleep(50)
    stop = true
    await loop
    await consumer.end()
    return [...ms.values()]
  }
}

function makeSystem (name) {
  switch (name) {
    case 'floor': return new Floor()
    case 'floor-returning': return new Floor('returning')
    case 'floor-function': return new Floor('function')
    case 'jobq': return new Jobq('workers')
    case 'jobq-ext': return new Jobq('external')
    case 'jobq-ext-tx': return new Jobq('external-tx')
    case 'jobq-node': return new Jobq('node')
    case 'jobq-py': return new Jobq('py')
    case 'graphile': return new Graphile(CONFIG.graphile)
    case 'graphile-defaults': return new Graphile(CONFIG.graphileDefaults)
    case 'pgboss': return new Boss()
    case 'pgq': return new Pgq()
    default: throw new Error(`unknown system ${name}`)
  }
}

module.exports = { makeSystem, connect, CONFIG, LATENCY_METHOD, CHUNK, now, sleep, log }
