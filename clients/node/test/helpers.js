// clients/node/test/helpers.js: what the tests share.  The cluster comes
// from run.sh (PGHOST, PGPORT, PGUSER: its superuser); each test file makes
// a database of its own, so that files may run side by side.
'use strict'

const { spawn } = require('node:child_process')
const path = require('node:path')
const pg = require('pg')

const ROOT = path.resolve(__dirname, '..')
const CLI = path.join(ROOT, 'bin', 'jobq-worker.js')

// A fresh database with jobq; returns { name, url, sql, end }.
async function freshDatabase (name) {
  const admin = new pg.Client({ database: 'postgres' })
  await admin.connect()
  await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
  await admin.query(`CREATE DATABASE ${name}`)
  await admin.end()
  const pool = new pg.Pool({ database: name, max: 4 })
  // The first CREATE EXTENSION of the cluster makes jobq's roles; two
  // files making theirs at once can collide on a role's name: try again.
  for (let tries = 0; ; tries++) {
    try {
      await pool.query('CREATE EXTENSION jobq')
      break
    } catch (e) {
      if (e.code !== '23505' || tries >= 5) throw e
      await new Promise(resolve => setTimeout(resolve, 200))
    }
  }
  const url = `postgresql:///${name}?host=${encodeURIComponent(process.env.PGHOST)}&port=${process.env.PGPORT}`
  return {
    name,
    url,
    pool,
    sql: async (text, values) => (await pool.query(text, values)).rows,
    one: async (text, values) => (await pool.query(text, values)).rows[0],
    end: () => pool.end()
  }
}

// Poll fn until it returns something truthy; fail after timeoutMs.
async function waitFor (fn, what, timeoutMs = 30000, everyMs = 50) {
  const end = Date.now() + timeoutMs
  for (;;) {
    const v = await fn()
    if (v) return v
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, everyMs))
  }
}

// The CLI in a child process: jobq-worker TASKS ARGS, in database db.
// Returns { proc, output(), exited } (exited: a promise of { code, signal }).
function spawnWorker (db, tasks, args = [], env = {}) {
  const proc = spawn(process.execPath, [CLI, path.join(__dirname, tasks), ...args], {
    env: { ...process.env, PGDATABASE: db.name, ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let out = ''
  proc.stdout.on('data', d => { out += d })
  proc.stderr.on('data', d => { out += d })
  const exited = new Promise(resolve => proc.on('exit', (code, signal) => resolve({ code, signal })))
  return { proc, output: () => out, exited }
}

// A logger that keeps its lines, for assertions on what was logged.
function memoryLogger () {
  const lines = []
  const make = level => (message, fields) => lines.push({ level, message, ...fields })
  return { lines, debug: make('debug'), info: make('info'), warn: make('warn'), error: make('error') }
}

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

module.exports = { freshDatabase, waitFor, spawnWorker, memoryLogger, sleep, ROOT }
