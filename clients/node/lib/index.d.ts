// clients/node/lib/index.d.ts: the types of jobq's Node.js runtime.
// Self-contained: a client is anything with node-postgres' query()
// (pg.Client, pg.PoolClient, pg.Pool), so @types/pg is not needed.

import { EventEmitter } from 'node:events'

/** Job ids and lease tokens are bigint; node-postgres returns them as strings. */
export type JobId = string

export interface QueryResultLike<R = any> {
  rows: R[]
  rowCount: number | null
}

/** Anything that runs a query: pg.Client, pg.PoolClient or pg.Pool. */
export interface Queryable {
  query<R = any>(text: string, values?: unknown[]): Promise<QueryResultLike<R>>
}

export interface EnqueueOptions {
  /** At most one job per (kind, key) while it is retained; a repeat returns its id. */
  idempotencyKey?: string | null
  /** When the job becomes due (default: now). */
  runAt?: Date | string | null
  /** Lower runs first (default 0). */
  priority?: number | null
  /** Default: the kind's queue. */
  queue?: string | null
  /** At most one job with this key runs at a time. */
  concurrencyKey?: string | null
  /** Job ids: the job runs once they have all completed. */
  after?: Array<JobId | number> | null
}

export interface EnqueueManyOptions {
  /** One key (or null) per payload. */
  idempotencyKeys?: Array<string | null> | null
  runAt?: Date | string | null
  priority?: number | null
  queue?: string | null
  /** Job ids: every job runs once they have all completed. */
  after?: Array<JobId | number> | null
}

/** Enqueue one job in the client's current transaction; resolves to its id. */
export function enqueue(client: Queryable, kind: string, payload?: unknown, options?: EnqueueOptions): Promise<JobId>

/** Enqueue one job per payload in one statement; ids in payload order. */
export function enqueueMany(client: Queryable, kind: string, payloads: unknown[], options?: EnqueueManyOptions): Promise<JobId[]>

export interface WaitOptions {
  /** Seconds to wait at most; null or absent: until the job is finished. */
  timeout?: number | null
}

export interface Outcome {
  /** completed, failed, held or cancelled; after a timeout, pending or running. */
  state: 'pending' | 'running' | 'completed' | 'failed' | 'held' | 'cancelled'
  /** The job's JSON result (a completed job's), else null. */
  result: unknown
  /** The error of its last failed attempt, if any. */
  lastError: string | null
  /** Whether the job is done: it runs again only if an operator says so. */
  finished: boolean
}

/** Wait until the job is finished, woken by the commit that finishes it, or until the timeout. */
export function wait(client: Queryable, jobId: JobId, options?: WaitOptions): Promise<Outcome>

/** Throw from a handler: run the job again after `seconds`, without charging the attempt. */
export class Snooze extends Error {
  constructor(seconds: number, message?: string)
  readonly seconds: number
}

/** Throw from a handler: fail this attempt, run the job again after `seconds`. */
export class RetryIn extends Error {
  constructor(seconds: number, message?: string)
  readonly seconds: number
}

/** The job's lease is gone (SQLSTATE 55000); its writes through job.client rolled back. */
export class LeaseLost extends Error {
  constructor(jobId: JobId, cause?: unknown)
  readonly jobId: JobId
  readonly code: '55000'
}

export type LogFields = Record<string, unknown>

/** A pluggable logger: each method takes a message and fields (worker, kind, id, attempt, ...). */
export interface Logger {
  debug(message: string, fields?: LogFields): void
  info(message: string, fields?: LogFields): void
  warn(message: string, fields?: LogFields): void
  error(message: string, fields?: LogFields): void
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error'

/** The default logger: one line per event on the console. */
export function consoleLogger(level?: LogLevel): Logger

/** job.client: queries in the job's transaction, begun at the first query. */
export interface JobClient extends Queryable {
  /** The pg client inside the job's transaction, for libraries that want one. Never COMMIT on it. */
  connection(): Promise<Queryable>
}

export interface Job<P = any> {
  readonly id: JobId
  readonly kind: string
  readonly payload: P
  /** This attempt's number, 1 for the first. */
  readonly attempt: number
  readonly idempotencyKey: string | null
  readonly queue: string
  /** The lease token (leased claims), null for transactional handlers. */
  readonly leaseToken: string | null
  readonly transactional: boolean
  /** Writes that commit with the job's completion, or not at all. */
  readonly client: JobClient
  /** Aborted when the lease is lost or the worker gives up on the job at shutdown. */
  readonly signal: AbortSignal
  /** The worker's logger, with worker, kind, id and attempt on every line. */
  readonly log: Logger
  /** Set once the lease is known to be lost. */
  readonly lost: LeaseLost | null
  /** Run fn once; its (JSON) result is recorded at once and read back by later attempts. Leased only. */
  step<T>(name: string, fn: () => T | Promise<T>): Promise<T>
  /** A stable key for an external API's idempotency header. Leased only. */
  externalKey(name?: string): Promise<string>
  /** True the first time this operation id is recorded, in the job's transaction. */
  once(operationId: string): Promise<boolean>
  /** Renew the lease now (the worker also heartbeats on its own). */
  heartbeat(): Promise<void>
}

export type Handler<P = any> = (job: Job<P>) => unknown | Promise<unknown>

export interface HandleOptions {
  /** The handler writes only to this database, through job.client: claim with jobq.claim_in_transaction. */
  transactional?: boolean
}

export interface WorkerOptions {
  /** Default: the PG* environment variables. */
  connectionString?: string
  /** Further pg.Pool options (ssl, user, ...). */
  pg?: Record<string, unknown>
  /** Default ['default']. */
  queues?: string | string[]
  /** Jobs run at once (leased), or batch transactions at once (transactional). Default 4. */
  concurrency?: number
  /** Jobs per leased claim, at most the free slots. Default: concurrency. */
  batchSize?: number
  /** Jobs per transactional batch. Default 50. */
  transactionalBatch?: number
  /** Lease length in seconds. Default 30. */
  leaseSeconds?: number
  /** Heartbeat period in seconds. Default leaseSeconds / 3; 0: none. */
  heartbeatSeconds?: number
  /** Seconds between claims when the queues are empty. Default 1. */
  pollInterval?: number
  /** Seconds running jobs get to finish at shutdown. Default 30. */
  shutdownGrace?: number
  /** Worker label in jobq.jobs and pg_stat_activity. Default node-<host>-<pid>. */
  name?: string
  logger?: Logger
  /** For the default logger. Default 'info'. */
  logLevel?: LogLevel
}

export interface WorkerStats {
  completed: number
  failed: number
  snoozed: number
  lost: number
  handedBack: number
}

export class Worker extends EventEmitter {
  constructor(options?: WorkerOptions)
  readonly name: string
  readonly queues: string[]
  readonly concurrency: number
  readonly shutdownGrace: number
  readonly log: Logger
  readonly stats: WorkerStats
  /** 'transactional' when every handler is, else 'leased'. */
  readonly claimMode: 'leased' | 'transactional'
  handle<P = any>(kind: string, fn: Handler<P>, options?: HandleOptions): this
  /** Claim and run jobs until signal aborts (or stop()); resolves once stopped. */
  run(options?: { signal?: AbortSignal }): Promise<void>
  stop(): void
  on(event: 'completed', listener: (job: Job, result: unknown) => void): this
  on(event: 'failed', listener: (job: Job, error: unknown, state: string) => void): this
  on(event: 'snoozed', listener: (job: Job, seconds: number) => void): this
  on(event: 'leaseLost', listener: (job: Job, error: LeaseLost) => void): this
  on(event: string | symbol, listener: (...args: any[]) => void): this
}

/** A job as the worker sees it (a class, for instanceof). */
export const Job: { prototype: Job }
