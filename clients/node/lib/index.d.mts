// clients/node/lib/index.d.mts: the types of the ESM entry point, which
// are those of the CommonJS one.
import jobq from './index.js'

export * from './index.js'
export default jobq
