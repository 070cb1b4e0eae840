#!/usr/bin/env node
// test/bench/peers/bench.js: one measurement of one system.
//
//   node bench.js setup                 create graphile-worker's and pg-boss's schemas
//   node bench.js config                print the configurations under test (JSON)
//   node bench.js methods               print how each system's latency is measured
//   node bench.js SCENARIO SYSTEM       measure, print "SCENARIO<TAB>SYSTEM<TAB>VALUE" lines
//
// Scenarios: enqueue_1, enqueue_1000, drain, drain_big, latency.
// Systems: floor, jobq, jobq-ext, jobq-node, graphile, graphile-defaults (latency only),
// pgboss, pgq, and floor-returning and floor-function (enqueue_1 only; see systems.js).
// The connection comes from PGHOST, PGPORT and PGUSER; the sizes from
// SECS, DRAIN_JOBS, BIG_PENDING, BIG_SLICE and LATENCY_JOBS.
'use strict'

const { makeSystem, CONFIG, LATENCY_METHOD, CHUNK, now, log } = require('./systems')

const env = process.env
const SIZES = {
  secs: Number(env.SECS || 10),
  batch: 1000,
  drainJobs: Number(env.DRAIN_JOBS || 20000),
  bigPending: Number(env.BIG_PENDING || 1000000),
  bigSlice: Number(env.BIG_SLICE || 100000),
  latencyJobs: Number(env.LATENCY_JOBS || 200),
  latencyEveryMs: 20,
  fillChunk: CHUNK
}

const PAYLOAD = JSON.stringify({ n: 1 })

// Enqueue for SIZES.secs seconds; jobs per second.
async function enqueueFor (sys, perCall, call) {
  const end = now() + SIZES.secs * 1000
  const t0 = now()
  let jobs = 0
  while (now() < end) {
    await call()
    jobs += perCall
  }
  return jobs / ((now() - t0) / 1000)
}

// Pre-enqueued jobs, vacuumed and checkpointed as a resting queue would be.
async function prepare (sys, n) {
  await sys.fill(n)
  await sys.c.query('VACUUM ANALYZE')
  await sys.c.query('CHECKPOINT')
}

function percentile (sorted, p) {
  const i = (sorted.length - 1) * p
  const lo = Math.floor(i)
  const hi = Math.ceil(i)
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (i - lo)
}

const SCENARIOS = {
  async enqueue_1 (sys) {
    return [['', await enqueueFor(sys, 1, () => sys.enqueueOne(PAYLOAD))]]
  },

  async enqueue_1000 (sys) {
    const payloads = Array.from({ length: SIZES.batch }, () => PAYLOAD)
    return [['', await enqueueFor(sys, SIZES.batch, () => sys.enqueueMany(payloads))]]
  },

  async drain (sys) {
    await prepare(sys, SIZES.drainJobs)
    const { jobs, t0, t1 } = await sys.drain(SIZES.drainJobs)
    return [['', jobs / ((t1 - t0) / 1000)]]
  },

  async drain_big (sys) {
    await prepare(sys, SIZES.bigPending)
    const { jobs, t0, t1 } = await sys.drain(SIZES.bigSlice)
    return [['', jobs / ((t1 - t0) / 1000)]]
  },

  async latency (sys) {
    const ms = (await sys.latency(SIZES.latencyJobs, SIZES.latencyEveryMs)).sort((a, b) => a - b)
    if (ms.length < SIZES.latencyJobs) log(`only ${ms.length} of ${SIZES.latencyJobs} jobs ran`)
    // On one clock a job cannot start before its enqueue committed.
    if (ms.length > 0 && ms[0] < 0) log(`${ms.filter(v => v < 0).length} jobs started before their commit timestamp`)
    return [['_p50', percentile(ms, 0.5)], ['_p95', percentile(ms, 0.95)], ['_p99', percentile(ms, 0.99)]]
  }
}

async function measure (scenario, name) {
  const body = SCENARIOS[scenario]
  if (!body) throw new Error(`unknown scenario ${scenario}`)
  const sys = makeSystem(name)
  await sys.open()
  try {
    await sys.reset()
    const results = await body(sys)
    for (const [suffix, value] of results) {
      console.log(`${scenario}${suffix}\t${name}\t${value.toFixed(suffix ? 3 : 0)}`)
    }
  } finally {
    await sys.reset() // leave nothing for autovacuum to chew on during the next measurement
    await sys.close()
  }
}

async function main () {
  const [cmd, system] = process.argv.slice(2)
  if (cmd === 'setup') {
    await makeSystem('graphile').setup()
    await makeSystem('pgboss').setup()
  } else if (cmd === 'config') {
    console.log(JSON.stringify({ sizes: SIZES, ...CONFIG }, null, 2))
  } else if (cmd === 'methods') {
    for (const [sys, method] of Object.entries(LATENCY_METHOD)) console.log(`- ${sys}: ${method}`)
  } else {
    await measure(cmd, system)
  }
}

main().then(() => process.exit(0), err => { log(err); process.exit(1) })
