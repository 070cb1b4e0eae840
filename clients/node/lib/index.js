// clients/node/lib/index.js: jobq from Node.js.
//
// Two halves:
//   - the producer API, enqueue() and enqueueMany(), which run in the
//     caller's client and so in the caller's transaction: a job exists only
//     if that transaction commits; and wait(), which waits until a job is
//     finished;
//   - the Worker, which claims jobs of kinds without an in-database handler
//     and runs a JavaScript handler for each.
//
// Vocabulary (as in jobq's README): a kind names what a job does; a job is
// one piece of work of a kind; an attempt is one run of a job; a lease is a
// claim's hold on a job, proved by its lease token, a secret bigint that
// every report on the job must present.  Job ids and lease tokens are
// bigint: node-postgres returns them as strings, and they stay strings.
//
// Two ways to claim, chosen per worker (see Worker.claimMode):
//   - leased (jobq.claim): the job is leased for leaseSeconds, renewed by
//     heartbeats while the handler runs.  The handler's writes through
//     job.client run in a transaction of their own, and the completion is
//     recorded in it, so both commit or neither does.  Steps, external
//     keys and a shutdown's uncharged hand-back need the lease.
//   - transactional (jobq.claim_in_transaction): one transaction per batch;
//     the row lock is the lease, nothing is written until the batch
//     commits, and each job whose handler uses job.client runs in a
//     savepoint of its own, so that one failure undoes only its job.  About
//     twice as cheap, for handlers that only write to this database.
//
// Nothing here keeps server-side state between transactions: queries are
// unnamed (node-postgres then prepares nothing that outlives them), and no
// SET, temporary table or session advisory lock is used, so a pooler in
// transaction mode (pgbouncer) may send each transaction to another server
// connection.
'use strict'

const { EventEmitter } = require('node:events')
const { hostname } = require('node:os')
const pg = require('pg')

const LEASE_LOST = '55000'

// ------------------------------------------------------------------ errors

// Thrown by a handler: give the job back, to run again after `seconds`,
// without charging the attempt.
class Snooze extends Error {
  constructor (seconds, message) {
    super(message || `snoozed for ${seconds} s`)
    this.name = 'Snooze'
    this.seconds = checkSeconds(seconds, 'Snooze')
  }
}

// Thrown by a handler: fail this attempt and run the job again after
// `seconds` (the attempt is charged; max_attempts still applies).
class RetryIn extends Error {
  constructor (seconds, message) {
    super(message || `retry in ${seconds} s`)
    this.name = 'RetryIn'
    this.seconds = checkSeconds(seconds, 'RetryIn')
  }
}

// The job's lease is gone (it ran out and the job was rescued, or an
// operator cancelled the job): SQLSTATE 55000 from jobq.  The handler's
// writes through job.client are rolled back; whoever holds the job now
// finishes it, so the worker drops it without reporting.
class LeaseLost extends Error {
  constructor (jobId, cause) {
    super(`lease on job ${jobId} lost${cause && cause.message ? ': ' + cause.message : ''}`,
      cause ? { cause } : undefined)
    this.name = 'LeaseLost'
    this.jobId = jobId
    this.code = LEASE_LOST
  }
}

function checkSeconds (seconds, what) {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds < 0) {
    throw new TypeError(`${what}: seconds must be a finite number >= 0, not ${seconds}`)
  }
  return seconds
}

// An interval literal PostgreSQL reads exactly (milliseconds at most).
function interval (seconds) {
  return `${Math.round(seconds * 1000)} milliseconds`
}

// ---------------------------------------------------------------- producer

// enqueue(client, kind, payload, options) -> job id (a string)
// In the caller's transaction: pass the client that runs it.
// "after" is passed by name, and only when given: servers before jobq 0.3
// have no such argument.
function afterIds (after) {
  if (after === null || after === undefined) return null
  if (!Array.isArray(after)) throw new TypeError('after must be an array of job ids')
  return after.map(String)
}

async function enqueue (client, kind, payload = {}, options = {}) {
  const { idempotencyKey = null, runAt = null, priority = 0, queue = null, concurrencyKey = null } = options
  const after = afterIds(options.after)
  const params = [kind, JSON.stringify(payload === undefined ? {} : payload), idempotencyKey,
    toTimestamp(runAt), priority ?? 0, queue, concurrencyKey]
  if (after !== null) params.push(after)
  const { rows } = await client.query(
    'SELECT jobq.enqueue($1, $2::jsonb, $3, coalesce($4::timestamptz, now()), $5, $6, $7' +
      (after !== null ? ', after => $8::bigint[]' : '') + ') AS id', params)
  return rows[0].id
}

// enqueueMany(client, kind, payloads, options) -> job ids, in payload order.
async function enqueueMany (client, kind, payloads, options = {}) {
  const { idempotencyKeys = null, runAt = null, priority = 0, queue = null } = options
  if (!Array.isArray(payloads)) throw new TypeError('enqueueMany: payloads must be an array')
  if (idempotencyKeys !== null && (!Array.isArray(idempotencyKeys) || idempotencyKeys.length !== payloads.length)) {
    throw new TypeError('enqueueMany: idempotencyKeys must be an array as long as payloads')
  }
  const after = afterIds(options.after)
  if (payloads.length === 0) return []
  const params = [kind, payloads.map(p => JSON.stringify(p === undefined ? {} : p)), idempotencyKeys,
    toTimestamp(runAt), priority ?? 0, queue]
  if (after !== null) params.push(after)
  const { rows } = await client.query(
    'SELECT id FROM jobq.enqueue_many($1, $2::jsonb[], $3::text[], coalesce($4::timestamptz, now()), $5, $6' +
      (after !== null ? ', after => $7::bigint[]' : '') + ') AS id', params)
  return rows.map(r => r.id)
}

// wait(client, jobId, { timeout }) -> { state, result, lastError, finished }
// Resolves when the job is finished (completed, failed, held or cancelled),
// woken by the commit that finishes it (jobq.wait), or when `timeout`
// seconds have passed (null: no limit), with the state it is still in.
// One statement waits WAIT_CHUNK_SECONDS at most (a statement holds its
// snapshot while it runs); a longer wait is a loop of them.  Call it after
// the enqueuing transaction committed, outside any REPEATABLE READ one.
const WAIT_CHUNK_SECONDS = 25 // under a statement_timeout of 30 s, a common one
const FINISHED = new Set(['completed', 'failed', 'held', 'cancelled'])

async function wait (client, jobId, options = {}) {
  const { timeout = null } = options
  if (timeout !== null) checkSeconds(timeout, 'wait: timeout')
  const deadline = timeout === null ? null : Date.now() + timeout * 1000
  for (;;) {
    const seconds = deadline === null
      ? WAIT_CHUNK_SECONDS
      : Math.max(0, Math.min(WAIT_CHUNK_SECONDS, (deadline - Date.now()) / 1000))
    const { rows } = await client.query(
      'SELECT state::text AS state, result, last_error FROM jobq.wait($1, $2::interval)',
      [jobId, interval(seconds)])
    const outcome = {
      state: rows[0].state,
      result: rows[0].result,
      lastError: rows[0].last_error,
      finished: FINISHED.has(rows[0].state)
    }
    if (outcome.finished || (deadline !== null && Date.now() >= deadline)) return outcome
  }
}

function toTimestamp (runAt) {
  if (runAt === null || runAt === undefined) return null
  if (runAt instanceof Date) return runAt.toISOString()
  return String(runAt)
}

// ----------------------------------------------------------------- logging

const LEVELS = { debug: 10, info: 20, warn: 30, error: 40 }

// The default logger: one line per event on the console, with the fields
// (worker, kind, id, attempt, ...) as key=value pairs.
function consoleLogger (level = 'info') {
  const min = LEVELS[level] ?? LEVELS.info
  const line = (lvl, message, fields) => {
    const kv = Object.entries(fields || {})
      .filter(([, v]) => v !== undefined && v !== null)
      .map(([k, v]) => `${k}=${typeof v === 'string' && /\s/.test(v) ? JSON.stringify(v) : v}`)
      .join(' ')
    return `jobq ${lvl}: ${message}${kv ? ' ' + kv : ''}`
  }
  const make = lvl => LEVELS[lvl] < min
    ? () => {}
    : (message, fields) => (lvl === 'error' || lvl === 'warn' ? console.error : console.log)(line(lvl, message, fields))
  return { debug: make('debug'), info: make('info'), warn: make('warn'), error: make('error') }
}

// A logger whose every line carries `bound` too (one per job: cheap to make).
class BoundLogger {
  constructor (logger, bound) { this.logger = logger; this.bound = bound }
  _line (lvl, message, fields) {
    const f = this.logger[lvl]
    if (typeof f === 'function') f.call(this.logger, message, fields ? { ...this.bound, ...fields } : { ...this.bound })
  }

  debug (message, fields) { this._line('debug', message, fields) }
  info (message, fields) { this._line('info', message, fields) }
  warn (message, fields) { this._line('warn', message, fields) }
  error (message, fields) { this._line('error', message, fields) }
}
const childLogger = (logger, bound) => new BoundLogger(logger, bound)

// -------------------------------------------------------------------- jobs

// What a handler sees through job.client: query() in the job's
// transaction, begun at the first query (a leased job's own transaction,
// or a savepoint of a transactional batch), so that a handler that writes
// nothing costs no round trip.
class JobClient {
  constructor (job) { this._job = job }

  query (...args) { return this._job._query(...args) }

  // The pg client itself, inside the job's transaction: for libraries that
  // want one.  Do not COMMIT or ROLLBACK on it; return or throw instead.
  async connection () {
    await this._job._begin()
    return this._job._conn
  }
}

class Job {
  constructor (worker, row, transactional, conn) {
    this.id = row.id
    this.kind = row.kind
    this.payload = row.payload
    this.attempt = row.attempt
    this.idempotencyKey = row.idempotency_key
    this.queue = row.queue
    this.leaseToken = row.lease_token ?? null
    this.transactional = transactional
    this.client = new JobClient(this)
    this._log = null // made when job.log is first read
    this._worker = worker
    this._conn = conn || null // a transactional batch's connection
    this._began = false // a BEGIN or SAVEPOINT was sent
    this._beginning = null
    this._abort = null // made when job.signal is first read
    this._keys = null // external keys read so far, made at the first
    this._beat = null // the heartbeat timer of a leased job
    this._beating = null // the heartbeat under way
    this._reporting = false // the handler returned; the outcome is being recorded
    this._handedBack = false // given back at shutdown
    this.lost = null // the LeaseLost, once the lease is known to be gone
  }

  // A logger whose lines carry the worker, kind, id and attempt.
  get log () {
    if (!this._log) {
      this._log = childLogger(this._worker.logger,
        { worker: this._worker.name, kind: this.kind, id: this.id, attempt: this.attempt })
    }
    return this._log
  }

  // Aborted when the lease is lost, or when the grace period of a
  // shutdown is over.
  get signal () { return this._controller().signal }

  _controller () {
    if (!this._abort) this._abort = new AbortController()
    return this._abort
  }

  // The first query begins the transaction; concurrent first queries
  // share the one BEGIN (or SAVEPOINT).
  _begin () {
    if (this.lost) return Promise.reject(this.lost)
    if (!this._beginning) {
      this._began = true
      this._beginning = this.transactional
        ? this._conn.query('SAVEPOINT jobq_job')
        : this._worker._pool.connect().then(async conn => {
          this._conn = conn
          await conn.query('BEGIN')
        })
    }
    return this._beginning
  }

  async _query (...args) {
    await this._begin()
    return this._conn.query(...args)
  }

  _requireLease (what) {
    if (this.transactional) {
      throw new Error(`job.${what}() needs a leased job: kind "${this.kind}" is handled with ` +
        'transactional: true, whose jobs have no lease token (register its handler without it)')
    }
  }

  // A call with the job's lease token, committed at once (outside the
  // job's transaction); 55000 becomes LeaseLost.
  async _leased (text, values) {
    if (this.lost) throw this.lost
    try {
      return (await this._worker._pool.query(text, values)).rows[0]
    } catch (e) {
      if (e.code === LEASE_LOST) throw this._markLost(e)
      throw e
    }
  }

  _markLost (cause) {
    if (!this.lost) {
      this.lost = cause instanceof LeaseLost ? cause : new LeaseLost(this.id, cause)
      this._controller().abort(this.lost)
    }
    return this.lost
  }

  // step(name, fn): fn's result, recorded once as a checkpoint that commits
  // at once; a later attempt gets the recorded result back without calling
  // fn.  Results are JSON (undefined is stored as null).
  async step (name, fn) {
    this._requireLease('step')
    const row = await this._leased(
      'SELECT r IS NOT NULL AS done, r FROM jobq.step_result($1, $2, $3) AS r',
      [this.id, name, this.leaseToken])
    if (row.done) return row.r
    const result = await fn()
    const json = JSON.stringify(result === undefined ? null : result)
    await this._leased('SELECT jobq.record_step($1, $2, $3::jsonb, $4)', [this.id, name, json, this.leaseToken])
    return JSON.parse(json)
  }

  // externalKey(name): a stable key for an external API's idempotency
  // header, the same for every attempt of this job and step.
  async externalKey (name = '') {
    this._requireLease('externalKey')
    if (!this._keys) this._keys = new Map()
    if (!this._keys.has(name)) {
      const row = await this._leased('SELECT jobq.external_key($1, $2, $3) AS k', [this.id, name, this.leaseToken])
      this._keys.set(name, row.k)
    }
    return this._keys.get(name)
  }

  // once(operationId): true the first time; recorded in the job's
  // transaction, so it rolls back with the handler's writes.
  async once (operationId) {
    const { rows } = await this._query('SELECT jobq.once($1) AS first', [operationId])
    return rows[0].first
  }

  // heartbeat(): renew the lease now (the worker also does it on its own).
  async heartbeat () {
    if (this.transactional) return
    await this._leased('SELECT jobq.heartbeat($1, $2)', [this.id, this.leaseToken])
  }
}

// ------------------------------------------------------------------ worker

const DEFAULTS = {
  queues: ['default'],
  concurrency: 4,
  leaseSeconds: 30,
  pollInterval: 1, // seconds, as every duration here
  shutdownGrace: 30,
  transactionalBatch: 50
}

class Worker extends EventEmitter {
  constructor (options = {}) {
    super()
    const o = { ...DEFAULTS }
    for (const [k, v] of Object.entries(options)) if (v !== undefined) o[k] = v
    this.queues = typeof o.queues === 'string' ? [o.queues] : [...o.queues]
    if (this.queues.length === 0) throw new TypeError('Worker: queues must name at least one queue')
    this.concurrency = positiveInt(o.concurrency, 'concurrency')
    this.batchSize = positiveInt(o.batchSize ?? this.concurrency, 'batchSize')
    this.transactionalBatch = positiveInt(o.transactionalBatch, 'transactionalBatch')
    this.leaseSeconds = checkSeconds(o.leaseSeconds, 'leaseSeconds')
    this.heartbeatSeconds = checkSeconds(o.heartbeatSeconds ?? this.leaseSeconds / 3, 'heartbeatSeconds')
    this.pollInterval = checkSeconds(o.pollInterval, 'pollInterval')
    this.shutdownGrace = checkSeconds(o.shutdownGrace, 'shutdownGrace')
    this.name = o.name || `node-${hostname()}-${process.pid}`
    this.logger = o.logger || consoleLogger(o.logLevel)
    this.log = childLogger(this.logger, { worker: this.name })
    this._poolOptions = {
      connectionString: o.connectionString,
      ...(o.pg || {}),
      max: this.concurrency + 2,
      application_name: this.name
    }
    this._handlers = new Map()
    this._pool = null
    this._running = false
    this.stats = { completed: 0, failed: 0, snoozed: 0, lost: 0, handedBack: 0 }
  }

  // handle(kind, fn, { transactional }): run fn(job) for jobs of the kind.
  // transactional: true declares that fn only writes to this database,
  // through job.client: see claimMode.
  handle (kind, fn, options = {}) {
    if (typeof kind !== 'string' || kind === '') throw new TypeError('handle: kind must be a non-empty string')
    if (typeof fn !== 'function') throw new TypeError(`handle: the handler of "${kind}" must be a function`)
    if (this._running) throw new Error('handle: register handlers before run()')
    this._handlers.set(kind, { fn, transactional: options.transactional === true })
    return this
  }

  // jobq.claim_in_transaction hands out jobs of every kind of a queue, so
  // a worker uses it only when every handler it has is transactional; one
  // leased handler makes the whole worker claim with leases.
  get claimMode () {
    if (this._handlers.size === 0) return 'leased'
    for (const h of this._handlers.values()) if (!h.transactional) return 'leased'
    return 'transactional'
  }

  // run({ signal }): claim and run jobs until the signal aborts, then stop
  // claiming, let running handlers finish within shutdownGrace seconds,
  // hand back (uncharged) the jobs of those that did not, and resolve.
  async run ({ signal } = {}) {
    if (this._running) throw new Error('run: this worker is already running')
    if (this._handlers.size === 0) throw new Error('run: no handlers (call worker.handle() first)')
    this._running = true
    const stop = new AbortController()
    this._stop = stop
    const onAbort = () => stop.abort()
    if (signal) {
      if (signal.aborted) stop.abort()
      else signal.addEventListener('abort', onAbort, { once: true })
    }
    this._pool = new pg.Pool(this._poolOptions)
    this._pool.on('error', e => this.log.warn('idle connection failed', { error: e.message }))
    const mode = this.claimMode
    this.log.info('started', { queues: this.queues.join(','), concurrency: this.concurrency, claim: mode })
    try {
      if (mode === 'transactional') await this._runTransactional(stop.signal)
      else await this._runLeased(stop.signal)
    } finally {
      if (signal) signal.removeEventListener('abort', onAbort)
      await this._pool.end().catch(() => {})
      this._pool = null
      this._running = false
      this.log.info('stopped', { ...this.stats })
    }
  }

  // stop(): the same as aborting run()'s signal.
  stop () {
    if (this._stop) this._stop.abort()
  }

  // ------------------------------------------------------------- leased

  async _runLeased (stop) {
    const running = new Set() // promises of the jobs in flight
    this._inflight = new Map() // job id -> { job, done }
    this._completions = [] // { job, resolve, reject } awaiting complete_many
    this._flushing = null
    const stopped = abortPromise(stop)
    let q = 0
    let idleRounds = 0
    while (!stop.aborted) {
      if (running.size >= this.concurrency) {
        await Promise.race([...running, stopped])
        continue
      }
      const want = Math.min(this.batchSize, this.concurrency - running.size)
      const queue = this.queues[q % this.queues.length]
      q++
      let rows
      try {
        rows = (await this._pool.query(
          'SELECT id, kind, payload, attempt, lease_token, idempotency_key, $1::text AS queue' +
          ' FROM jobq.claim($1, $2, $3, $4::interval)',
          [queue, this.name, want, interval(this.leaseSeconds)])).rows
      } catch (e) {
        this.log.error('claim failed', { queue, error: e.message, code: e.code })
        await sleepUnless(this.pollInterval * 1000, stop)
        continue
      }
      if (rows.length === 0) {
        // A round of every queue found nothing: wait, unless jobs are in
        // flight (their end frees a slot, not new work).
        if (++idleRounds >= this.queues.length) {
          idleRounds = 0
          await sleepUnless(this.pollInterval * 1000, stop)
        }
        continue
      }
      idleRounds = 0
      if (rows.length === want) q-- // a full batch: this queue may have more
      for (const row of rows) {
        const job = new Job(this, row, false, null)
        const p = this._runLeasedJob(job).finally(() => { running.delete(p); this._inflight.delete(job.id) })
        this._inflight.set(job.id, { job, done: p })
        running.add(p)
      }
    }
    await this._shutdownLeased(running)
  }

  // Stop: wait for the jobs in flight, up to shutdownGrace; then abort the
  // rest, roll back their transactions and hand their jobs back with
  // jobq.snooze (no attempt charged).
  async _shutdownLeased (running) {
    if (running.size > 0) {
      this.log.info('stopping: waiting for running jobs', { jobs: running.size, grace: this.shutdownGrace })
      const all = Promise.allSettled([...running])
      const timer = sleepUnless(this.shutdownGrace * 1000, null)
      await Promise.race([all, timer.promise])
      timer.cancel()
    }
    for (const { job } of this._inflight.values()) {
      if (job._reporting) continue // its handler returned: its report is under way
      job._handedBack = true
      clearInterval(job._beat)
      job._controller().abort(new Error('worker shutting down'))
      if (job._conn) { job._conn.release(true); job._conn = null } // ends its transaction: rolled back
      try {
        await this._pool.query('SELECT jobq.snooze($1, $2, $3::interval)', [job.id, job.leaseToken, '0'])
        this.stats.handedBack++
        job.log.warn('handed back at shutdown, uncharged (did not finish within the grace period)')
      } catch (e) {
        job.log.error('could not hand back at shutdown; its lease will run out', { error: e.message, code: e.code })
      }
    }
    await (this._flushing || this._flushCompletions())
    // Let the reports under way end before the pool does.
    await Promise.allSettled([...this._inflight.values()].filter(f => f.job._reporting).map(f => f.done))
  }

  async _runLeasedJob (job) {
    const h = this._handlers.get(job.kind)
    if (!h) return this._noHandler(job)
    if (this.heartbeatSeconds > 0) {
      job._beat = setInterval(() => this._heartbeat(job), this.heartbeatSeconds * 1000)
      job._beat.unref()
    }
    let result
    let error = null
    job.log.debug('started')
    try {
      result = await h.fn(job)
    } catch (e) {
      error = e
    } finally {
      clearInterval(job._beat)
    }
    if (job._handedBack) return
    // From here the job is being reported: a shutdown leaves it alone, and
    // a heartbeat still under way must not meet the completion's row lock.
    job._reporting = true
    await job._beating
    try {
      if (error) await this._leasedFailure(job, error)
      else await this._leasedSuccess(job, result)
    } catch (e) {
      if (e instanceof LeaseLost || e.code === LEASE_LOST) return this._lost(job, e)
      job.log.error('could not report the outcome; the lease will run out and the job run again',
        { error: e.message, code: e.code })
    } finally {
      if (job._conn) { job._conn.release(); job._conn = null }
    }
  }

  _heartbeat (job) {
    if (job.lost || job._handedBack || job._reporting) return clearInterval(job._beat)
    if (job._beating) return // the last one has not answered yet
    job._beating = job.heartbeat().catch(e => {
      if (e instanceof LeaseLost) job.log.warn('lease lost (heartbeat refused)', { error: e.cause && e.cause.message })
      else job.log.warn('heartbeat failed', { error: e.message, code: e.code })
    }).finally(() => { job._beating = null })
  }

  async _leasedSuccess (job, result) {
    if (job.lost) { await this._rollback(job); throw job.lost }
    if (job._began) {
      // A handler may have returned without awaiting its first query.
      await job._beginning
      // The handler's writes and the completion commit together.
      try {
        await job._conn.query('SELECT jobq.complete($1, $2, $3::jsonb)',
          [job.id, job.leaseToken, result === undefined ? null : JSON.stringify(result)])
        await job._conn.query('COMMIT')
      } catch (e) {
        await this._rollback(job)
        throw e
      }
    } else if (result === undefined) {
      await this._completeLater(job)
    } else {
      await this._pool.query('SELECT jobq.complete($1, $2, $3::jsonb)',
        [job.id, job.leaseToken, JSON.stringify(result)])
    }
    this.stats.completed++
    this.emit('completed', job, result)
    job.log.debug('completed')
  }

  async _rollback (job) {
    if (job._beginning) await job._beginning.catch(() => {})
    if (!job._conn) return
    try {
      await job._conn.query('ROLLBACK')
    } catch (e) {
      job._conn.release(true)
      job._conn = null
    }
  }

  async _leasedFailure (job, error) {
    await this._rollback(job)
    if (error instanceof LeaseLost || job.lost) throw job.lost || error
    if (error instanceof Snooze) {
      await job._leased('SELECT jobq.snooze($1, $2, $3::interval)', [job.id, job.leaseToken, interval(error.seconds)])
      this.stats.snoozed++
      this.emit('snoozed', job, error.seconds)
      job.log.info('snoozed', { seconds: error.seconds })
      return
    }
    const retryIn = error instanceof RetryIn ? interval(error.seconds) : null
    const row = await job._leased('SELECT jobq.fail($1, $2, $3, $4::interval) AS state',
      [job.id, job.leaseToken, describe(error), retryIn])
    this._failed(job, error, row.state)
  }

  _failed (job, error, state) {
    this.stats.failed++
    this.emit('failed', job, error, state)
    const fields = { error: error && error.message, state }
    if (error instanceof RetryIn) job.log.info('retry later', { ...fields, seconds: error.seconds })
    else job.log.error('failed', fields)
  }

  _lost (job, e) {
    job._markLost(e)
    this.stats.lost++
    this.emit('leaseLost', job, job.lost)
    job.log.warn('lease lost: its writes rolled back, the job left to whoever holds it now',
      { error: (job.lost.cause || job.lost).message })
  }

  // A job of a kind this worker has no handler for fails (charged), so
  // that it ends in jobq.failures instead of cycling between workers.
  async _noHandler (job) {
    job._reporting = true
    const message = `no handler for kind "${job.kind}" in worker ${this.name} (queues ${this.queues.join(', ')})`
    try {
      const row = await job._leased('SELECT jobq.fail($1, $2, $3) AS state', [job.id, job.leaseToken, message])
      this._failed(job, new Error(message), row.state)
    } catch (e) {
      if (e instanceof LeaseLost) return this._lost(job, e)
      job.log.error('could not fail a job without a handler', { error: e.message })
    }
  }

  // Completions without a result or writes go out together, in one
  // complete_many per flush; a job's slot frees when its flush committed.
  _completeLater (job) {
    return new Promise((resolve, reject) => {
      this._completions.push({ job, resolve, reject })
      if (!this._flushing) this._flushing = this._flushCompletions()
    })
  }

  async _flushCompletions () {
    while (this._completions.length > 0) {
      const batch = this._completions.splice(0)
      try {
        await this._pool.query('SELECT jobq.complete_many($1::bigint[], $2::bigint[])',
          [batch.map(c => c.job.id), batch.map(c => c.job.leaseToken)])
        for (const c of batch) c.resolve()
      } catch (e) {
        if (batch.length === 1 || e.code !== LEASE_LOST) {
          for (const c of batch) c.reject(e)
        } else {
          // One lease in the batch is lost: all or nothing, so one by one.
          await Promise.all(batch.map(c => this._pool.query('SELECT jobq.complete($1, $2)', [c.job.id, c.job.leaseToken])
            .then(() => c.resolve(), err => c.reject(err))))
        }
      }
    }
    this._flushing = null
  }

  // ------------------------------------------------------- transactional

  async _runTransactional (stop) {
    const loops = []
    for (let i = 0; i < this.concurrency; i++) loops.push(this._transactionalLoop(stop, i))
    await Promise.all(loops)
  }

  async _transactionalLoop (stop, i) {
    let q = i
    let idleRounds = 0
    while (!stop.aborted) {
      const queue = this.queues[q % this.queues.length]
      q++
      let n
      try {
        n = await this._transactionalBatch(queue, stop)
      } catch (e) {
        this.log.error('batch failed; its jobs are ready again', { queue, error: e.message, code: e.code })
        await sleepUnless(this.pollInterval * 1000, stop)
        continue
      }
      if (n === 0) {
        if (++idleRounds >= this.queues.length) {
          idleRounds = 0
          await sleepUnless(this.pollInterval * 1000, stop)
        }
      } else {
        idleRounds = 0
        if (n === this.transactionalBatch) q--
      }
    }
  }

  // One transaction: claim_in_transaction, each job's handler (in a
  // savepoint if it writes), the failures reported as they happen, the
  // completions at the end, COMMIT.  At shutdown the batch finishes within
  // shutdownGrace; after that its connection is closed, which rolls it all
  // back: every job of the batch is ready again, none charged.
  async _transactionalBatch (queue, stop) {
    const conn = await this._pool.connect()
    let broken = false
    let graceTimer = null
    let expire
    const expired = new Promise((resolve, reject) => { expire = reject })
    expired.catch(() => {})
    const onStop = () => {
      graceTimer = setTimeout(() => {
        broken = true
        this.log.warn('stopping: the batch did not finish within the grace period; rolled back', { queue })
        conn.release(true)
        expire(new Error('shutdown grace period over'))
      }, this.shutdownGrace * 1000)
    }
    stop.addEventListener('abort', onStop, { once: true })
    try {
      // BEGIN and the claim in one round trip (a simple query of two
      // statements: its values are quoted literals), as are the
      // complete_many of the ids and COMMIT at the end.
      const q = conn.escapeLiteral(queue)
      const claimed = await conn.query('BEGIN; SELECT id, kind, payload, attempt, idempotency_key,' +
        ` ${q}::text AS queue FROM jobq.claim_in_transaction(${q}, ${conn.escapeLiteral(this.name)},` +
        ` ${this.transactionalBatch})`)
      const rows = claimed[1].rows
      if (rows.length === 0) {
        await conn.query('COMMIT')
        return 0
      }
      const done = [] // ids completed without a result
      const results = [] // [id, json] completed with one
      const outcomes = []
      for (const row of rows) {
        const job = new Job(this, row, true, conn)
        const h = this._handlers.get(job.kind)
        let result
        let error = null
        try {
          if (!h) throw new Error(`no handler for kind "${job.kind}" in worker ${this.name} (queues ${this.queues.join(', ')})`)
          result = h.fn(job)
          // A handler that returned a promise is waited for, until the
          // grace period of a shutdown is over; one that returned a value
          // is done (no turn of the event loop per job).
          if (result !== null && typeof result === 'object' && typeof result.then === 'function') {
            const running = Promise.resolve(result)
            running.catch(() => {}) // once abandoned at shutdown, nobody awaits it
            result = await Promise.race([running, expired])
          }
          if (job._began) await conn.query('RELEASE SAVEPOINT jobq_job')
        } catch (e) {
          error = e
          if (broken) throw e
          if (job._began) await job._beginning.catch(() => {})
          if (job._began) await conn.query('ROLLBACK TO SAVEPOINT jobq_job; RELEASE SAVEPOINT jobq_job')
        }
        if (error) {
          outcomes.push(await this._transactionalFailure(conn, job, error))
        } else {
          if (result === undefined) done.push(job.id)
          else results.push([job.id, JSON.stringify(result)])
          outcomes.push([job, 'completed', result])
        }
      }
      if (results.length > 0) {
        await conn.query('SELECT jobq.complete(r.id, NULL, r.result)' +
          ' FROM unnest($1::bigint[], $2::jsonb[]) AS r(id, result)',
        [results.map(r => r[0]), results.map(r => r[1])])
      }
      // Ids are bigints the claim returned: digits only, safe as a literal.
      if (!done.every(id => /^[0-9]+$/.test(id))) throw new Error(`unexpected job id in ${done}`)
      await conn.query(done.length > 0
        ? `SELECT jobq.complete_many('{${done.join(',')}}'::bigint[], NULL); COMMIT`
        : 'COMMIT')
      for (const [job, outcome, detail, error] of outcomes) {
        if (outcome === 'completed') {
          this.stats.completed++
          this.emit('completed', job, detail)
          job.log.debug('completed')
        } else if (outcome === 'snoozed') {
          this.stats.snoozed++
          this.emit('snoozed', job, detail)
          job.log.info('snoozed', { seconds: detail })
        } else if (outcome !== null) {
          this._failed(job, error, outcome)
        }
      }
      return rows.length
    } catch (e) {
      if (!broken) {
        await conn.query('ROLLBACK').catch(() => {
          broken = true
          conn.release(true) // a connection that cannot roll back is not reused
        })
      }
      throw e
    } finally {
      stop.removeEventListener('abort', onStop)
      if (graceTimer) clearTimeout(graceTimer)
      if (!broken) conn.release()
    }
  }

  // Report a transactional job's failure, in a savepoint of its own: a
  // report that fails (the job was changed meanwhile) leaves the batch
  // whole.  A Snooze gives the job back uncharged (jobq.snooze takes a
  // NULL token for a job claimed in this transaction).
  async _transactionalFailure (conn, job, error) {
    const seconds = error instanceof Snooze || error instanceof RetryIn ? error.seconds : null
    await conn.query('SAVEPOINT jobq_report')
    try {
      if (error instanceof Snooze) {
        await conn.query('SELECT jobq.snooze($1, NULL, $2::interval)', [job.id, interval(seconds)])
        await conn.query('RELEASE SAVEPOINT jobq_report')
        return [job, 'snoozed', seconds, error]
      }
      const { rows } = await conn.query('SELECT jobq.fail($1, NULL, $2, $3::interval) AS state',
        [job.id, describe(error), seconds === null ? null : interval(seconds)])
      await conn.query('RELEASE SAVEPOINT jobq_report')
      return [job, rows[0].state, null, error]
    } catch (e) {
      await conn.query('ROLLBACK TO SAVEPOINT jobq_report; RELEASE SAVEPOINT jobq_report')
      job.log.error('could not record the failure; the job stays ready', { error: e.message, code: e.code })
      return [job, null, null, error]
    }
  }
}

// What jobq.fail records: the error's stack (which starts with its
// message), and a pg error's detail and hint.
function describe (error) {
  if (!(error instanceof Error)) return `non-error thrown: ${safeString(error)}`
  let text = error.stack || `${error.name}: ${error.message}`
  if (error.detail) text += `\nDETAIL: ${error.detail}`
  if (error.hint) text += `\nHINT: ${error.hint}`
  if (error.code && typeof error.code === 'string') text += `\nSQLSTATE: ${error.code}`
  return text.length > 16000 ? text.slice(0, 16000) + '\n[truncated]' : text || error.name
}

function safeString (v) {
  try { return typeof v === 'string' ? v : JSON.stringify(v) ?? String(v) } catch { return String(v) }
}

function positiveInt (v, what) {
  if (!Number.isInteger(v) || v < 1) throw new TypeError(`Worker: ${what} must be an integer >= 1, not ${v}`)
  return v
}

function abortPromise (signal) {
  return new Promise(resolve => {
    if (signal.aborted) resolve()
    else signal.addEventListener('abort', resolve, { once: true })
  })
}

// Sleep ms, or less if signal aborts; with signal null, returns
// { promise, cancel } instead.
function sleepUnless (ms, signal) {
  let timer
  let onAbort
  const promise = new Promise(resolve => {
    timer = setTimeout(resolve, ms)
    if (signal) {
      onAbort = () => { clearTimeout(timer); resolve() }
      if (signal.aborted) onAbort()
      else signal.addEventListener('abort', onAbort, { once: true })
    }
  }).finally(() => { if (signal && onAbort) signal.removeEventListener('abort', onAbort) })
  if (signal === null) return { promise, cancel: () => clearTimeout(timer) }
  return promise
}

module.exports = {
  enqueue,
  enqueueMany,
  wait,
  Worker,
  Job,
  Snooze,
  RetryIn,
  LeaseLost,
  consoleLogger
}
