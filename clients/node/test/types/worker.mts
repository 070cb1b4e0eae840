// Type-checked by producer.test.js: the ESM entry point's types.
import pg from 'pg'
import { Worker, Snooze, RetryIn, LeaseLost, enqueue, enqueueMany, wait, type Job, type Outcome } from 'jobq'

interface Receipt { to: string }

const worker = new Worker({ queues: ['mail'], concurrency: 2, shutdownGrace: 10 })
worker.handle<Receipt>('mail.send_receipt', async (job: Job<Receipt>) => {
  const key: string = await job.externalKey('send')
  const sent = await job.step('send', async () => ({ id: `${job.payload.to}:${key}` }))
  if (job.attempt > 3) throw new RetryIn(60)
  if (sent.id === '') throw new Snooze(5)
  await job.client.query('INSERT INTO sent (job_id, message_id) VALUES ($1, $2)', [job.id, sent.id])
  job.log.info('sent', { to: job.payload.to })
  return { messageId: sent.id }
})
worker.handle('ledger.post', async job => {
  if (await job.once(`post:${job.id}`)) await job.client.query('SELECT 1')
}, { transactional: true })
worker.on('leaseLost', (job, e: LeaseLost) => console.log(job.id, e.jobId))

export async function main (client: pg.Client, signal: AbortSignal): Promise<void> {
  const id: string = await enqueue(client, 'mail.send_receipt', { to: 'a@example.org' },
    { idempotencyKey: 'r-1', runAt: new Date(), concurrencyKey: 'acct' })
  const ids: string[] = await enqueueMany(client, 'mail.send_receipt', [{ to: 'b' }], { queue: 'mail' })
  const outcome: Outcome = await wait(client, id, { timeout: 5 })
  const done: boolean = outcome.finished && outcome.state === 'completed'
  console.log(id, ids, worker.claimMode, done, outcome.result, outcome.lastError)
  await worker.run({ signal })
}
