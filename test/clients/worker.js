#!/usr/bin/env node
// An external jobq worker in Node.js (node-postgres).
//
// It serves one queue of shop.ship_order jobs: for each order it gets a
// shipping quote from a carrier (checkpointed as a step, so a retry reuses
// it), then writes the shipment row and completes the job in one
// transaction, so the shipment exists if and only if the job is completed.
//
//   node worker.js --queue ship_js --until-empty
//   node worker.js --dsn postgresql://shop_worker@db/shop --max-jobs 100
//
// Without --dsn, the usual PG* environment variables (PGHOST, PGDATABASE,
// PGUSER, ...) say where to connect: to the server, or to a connection
// pooler in front of it (pgbouncer in transaction mode works).  The role
// needs the work privilege on the queue (jobq.grant, or jobq_worker) and
// INSERT on shipments.
//
// Job ids and lease tokens are bigint: node-postgres returns them as
// strings, and they are passed back as strings, never as numbers.

import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import pg from 'pg';

const LEASE = '30 seconds'; // how long a claimed job is ours without a heartbeat
const BATCH = 10; // jobs per claim
const RETRY_IN = '1 second'; // when a failed attempt may run again

class CarrierError extends Error {}

// Stands in for a network call that is slow and not free.
async function askCarrierForQuote(payload) {
  await sleep(5);
  return { quote_id: randomUUID(), price_cents: 450 + Math.floor(payload.weight_g / 10) };
}

async function ship(client, job, worker) {
  const { id, lease_token: token, payload } = job;

  // A claim leases the whole batch at once: renew this job's lease now
  // that its turn has come (heartbeats also commit on their own).
  await client.query('SELECT jobq.heartbeat($1, $2)', [id, token]);

  // Step 1, checkpointed: an earlier attempt may already have a quote.
  // record_step runs outside a transaction block, so it commits at once:
  // the quote survives a failure of the steps after it, and a retry does
  // not ask again.  Every call passes the lease token: it, not the
  // connection, is what holds the job.
  let quote = (await client.query("SELECT jobq.step_result($1, 'quote', $2) AS q",
    [id, token])).rows[0].q;
  if (quote === null) {
    quote = await askCarrierForQuote(payload);
    await client.query("SELECT jobq.record_step($1, 'quote', $2, $3)",
      [id, JSON.stringify(quote), token]);
  }

  // Step 2: the shipment and the job's completion commit together.  If
  // anything below throws, both roll back and the job is still ours.
  await client.query('BEGIN');
  try {
    await client.query(
      'INSERT INTO shipments (order_id, job_id, quote_id, price_cents, shipped_by)'
      + ' VALUES ($1, $2, $3, $4, $5)',
      [payload.order, id, quote.quote_id, quote.price_cents, worker]);
    if (payload.fail_first_attempt && job.attempt === 1) {
      throw new CarrierError('carrier API answered 503 (a deliberate first failure)');
    }
    await client.query('SELECT jobq.complete($1, $2, $3)',
      [id, token, JSON.stringify({ quote_id: quote.quote_id })]);
    await client.query('COMMIT');
  } catch (e) {
    await client.query('ROLLBACK');
    throw e;
  }
}

// Run one job; on an error, record the failed attempt.  True if it completed.
async function handle(client, job, worker) {
  try {
    await ship(client, job, worker);
    return true;
  } catch (e) {
    if (e.code === '55000') {
      // Our lease ended (we were too slow, and it was rescued) or the job
      // was cancelled.  Our writes rolled back; whoever holds the job now
      // finishes it.  Drop it: calling fail would only be refused too.
      console.error(`${worker}: job ${job.id}: lease lost, dropped: ${e.message}`);
      return false;
    }
    if (!(e instanceof CarrierError) && !(e instanceof pg.DatabaseError)) throw e;
    // The shipment's transaction has rolled back.  Give the job back: it
    // runs again after RETRY_IN, until the kind's max_attempts are spent.
    try {
      const { rows } = await client.query('SELECT jobq.fail($1, $2, $3, $4) AS state',
        [job.id, job.lease_token, e.message, RETRY_IN]);
      console.error(`${worker}: job ${job.id} attempt ${job.attempt} failed (${e.message});`
        + ` now ${rows[0].state}`);
    } catch (e2) {
      if (e2.code !== '55000') throw e2;
      console.error(`${worker}: job ${job.id}: lease lost, dropped: ${e2.message}`);
    }
    return false;
  }
}

async function main() {
  const { values: args } = parseArgs({
    options: {
      dsn: { type: 'string', default: process.env.DATABASE_URL },
      queue: { type: 'string', default: 'default' },
      name: { type: 'string', default: `js-${hostname()}-${process.pid}` },
      'max-jobs': { type: 'string', default: '0' }, // exit after this many attempts; 0: no limit
      'until-empty': { type: 'boolean', default: false }, // exit once nothing to claim for --idle s
      idle: { type: 'string', default: '3' },
    },
  });
  const maxJobs = Number(args['max-jobs']);
  const idleMs = Number(args.idle) * 1000;

  // A lease is its token's, not this connection's: each call may run in
  // another server connection (behind a pooler), and if this process dies,
  // its jobs run again when their leases (LEASE) run out.  Outside
  // BEGIN ... COMMIT every statement commits by itself.  Queries are not
  // named, so node-postgres prepares none that outlive them: a pooler in
  // transaction mode may send the next to another server connection.
  const client = new pg.Client({ connectionString: args.dsn, application_name: args.name });
  await client.connect();
  let completed = 0;
  let attempts = 0;
  let lastClaimed = Date.now();
  try {
    while (!maxJobs || attempts < maxJobs) {
      const limit = maxJobs ? Math.min(BATCH, maxJobs - attempts) : BATCH;
      const { rows: jobs } = await client.query(
        'SELECT id, payload, attempt, lease_token FROM jobq.claim($1, $2, $3, $4)',
        [args.queue, args.name, limit, LEASE]);
      if (jobs.length === 0) {
        // External workers poll.  A failed job comes back after RETRY_IN,
        // so --idle must be longer than that.
        if (args['until-empty'] && Date.now() - lastClaimed >= idleMs) break;
        await sleep(200);
        continue;
      }
      lastClaimed = Date.now();
      for (const job of jobs) {
        if (await handle(client, job, args.name)) completed += 1;
        attempts += 1;
      }
    }
  } finally {
    await client.end();
  }
  console.log(`${args.name}: ${completed} completed, ${attempts - completed} failed or lost`);
}

await main();
