// Type-checked by producer.test.js: the CommonJS entry point's types.
import jobq = require('jobq')

const worker = new jobq.Worker({ connectionString: 'postgresql:///app', logLevel: 'warn' })
worker.handle('noop', () => undefined, { transactional: true })
const stop = new AbortController()
export const done: Promise<void> = worker.run({ signal: stop.signal })
export const stats: number = worker.stats.completed
