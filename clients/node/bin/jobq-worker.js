#!/usr/bin/env node
// clients/node/bin/jobq-worker.js: run a jobq Worker over a tasks module.
//
//   npx jobq-worker ./tasks.js --queue mail [--queue billing] [--concurrency 4]
//                   [--name mailer-1] [--dsn postgresql://...] [--grace 30]
//                   [--lease 30] [--poll 1] [--log-level info]
//
// The tasks module (CommonJS or ESM) exports, as its default export (or
// module.exports):
//   - an object of handlers by kind: { 'mail.send': async job => {...} },
//     where a value may also be { handler, transactional: true }; or
//   - a function called with the Worker, which registers handlers itself
//     (worker.handle(kind, fn, options)).
// Without --dsn, DATABASE_URL, else the PG* environment variables, say
// where to connect.  SIGTERM or SIGINT stops claiming and gives running
// jobs --grace seconds to finish (then hands them back, uncharged); a
// second signal exits at once.
'use strict'

const path = require('node:path')
const { pathToFileURL } = require('node:url')
const { parseArgs } = require('node:util')
const { Worker } = require('../lib/index.js')

const USAGE = 'usage: jobq-worker TASKS_MODULE [--queue Q ...] [--concurrency N] [--name NAME] ' +
  '[--dsn URL] [--grace SECONDS] [--lease SECONDS] [--poll SECONDS] [--log-level debug|info|warn|error]'

async function main () {
  let parsed
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        queue: { type: 'string', multiple: true },
        concurrency: { type: 'string' },
        name: { type: 'string' },
        dsn: { type: 'string' },
        grace: { type: 'string' },
        lease: { type: 'string' },
        poll: { type: 'string' },
        'log-level': { type: 'string' },
        help: { type: 'boolean', short: 'h' }
      }
    })
  } catch (e) {
    console.error(`jobq-worker: ${e.message}\n${USAGE}`)
    return 2
  }
  const { values: a, positionals } = parsed
  if (a.help) { console.log(USAGE); return 0 }
  if (positionals.length !== 1) { console.error(USAGE); return 2 }
  const num = (v, name) => {
    if (v === undefined) return undefined
    const n = Number(v)
    if (!Number.isFinite(n) || n < 0) throw new TypeError(`--${name} must be a number >= 0, not "${v}"`)
    return n
  }
  const worker = new Worker({
    connectionString: a.dsn || process.env.DATABASE_URL,
    queues: a.queue || ['default'],
    concurrency: num(a.concurrency, 'concurrency'),
    name: a.name,
    shutdownGrace: num(a.grace, 'grace'),
    leaseSeconds: num(a.lease, 'lease'),
    pollInterval: num(a.poll, 'poll'),
    logLevel: a['log-level']
  })
  const mod = await import(pathToFileURL(path.resolve(positionals[0])).href)
  const tasks = mod.default ?? mod
  if (typeof tasks === 'function') {
    await tasks(worker)
  } else if (tasks && typeof tasks === 'object') {
    for (const [kind, h] of Object.entries(tasks)) {
      if (typeof h === 'function') worker.handle(kind, h)
      else if (h && typeof h.handler === 'function') worker.handle(kind, h.handler, h)
      else throw new TypeError(`${positionals[0]}: the export "${kind}" is neither a function nor { handler }`)
    }
  } else {
    throw new TypeError(`${positionals[0]}: export an object of handlers by kind, or a function of the worker`)
  }

  const stop = new AbortController()
  let signals = 0
  const onSignal = sig => {
    if (++signals > 1) {
      worker.log.warn('second signal: exiting at once', { signal: sig })
      process.exit(1)
    }
    worker.log.info('stopping: no new jobs; a second signal exits at once',
      { signal: sig, grace: worker.shutdownGrace })
    stop.abort()
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)
  await worker.run({ signal: stop.signal })
  return 0
}

// Exit once the worker stopped, whatever the tasks module left open (its
// own pools, timers): the worker's jobs are finished or handed back.
main().then(code => process.exit(code), e => {
  console.error(`jobq-worker: ${e && e.stack ? e.stack : e}`)
  process.exit(1)
})
