// clients/node/lib/index.mjs: the ESM entry point; the code is the
// CommonJS module's (one copy of the classes, so instanceof agrees).
import jobq from './index.js'

export const { enqueue, enqueueMany, wait, Worker, Job, Snooze, RetryIn, LeaseLost, consoleLogger } = jobq
export default jobq
