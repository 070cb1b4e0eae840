/*-------------------------------------------------------------------------
 *
 * src/concurrency.h
 *		Concurrency keys: at most one running job per key, or as many as
 *		its limit.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_CONCURRENCY_H
#define JOBQ_CONCURRENCY_H

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"

/* The most jobs a concurrency key may run at once (jobq.set_limit). */
#define JOBQ_MAX_KEY_LIMIT		1000

/* The bounds of a key's rate limit (jobq.set_rate_limit). */
#define JOBQ_MAX_RATE_STARTS	10000
#define JOBQ_MAX_RATE_SPAN_USECS	((int64) 24 * 60 * 60 * 1000000)

/* What JobqTakeRateStart found. */
typedef enum JobqRateOutcome
{
	JOBQ_RATE_STARTED,			/* the start is recorded */
	JOBQ_RATE_WAIT,				/* too many starts within the span */
	JOBQ_RATE_BUSY				/* another transaction is starting one */
} JobqRateOutcome;

/*
 * JOBQ_KEY_FREE(alias) is a condition on a jobq.job row: it has no
 * concurrency key, or fewer jobs hold its key under standing leases than
 * the key's limit and its rate limit lets one more start (as of the
 * transaction's start).  JOBQ_KEY_FREE_BEFORE_03 is the same for objects older
 * than 0.3, which have no limits: no job holds the key.
 */
#define JOBQ_KEY_FREE(alias) \
	" (" alias ".concurrency_key IS NULL OR ((" \
	"   SELECT pg_catalog.count(*) FROM jobq.concurrency_lock c JOIN jobq.job h" \
	"   ON h.id = c.job_id AND h.lease_token = c.lease_token AND h.state = 'running'" \
	"   WHERE c.key = " alias ".concurrency_key) < coalesce((" \
	"   SELECT l.max_running FROM jobq.concurrency_limit l" \
	"   WHERE l.key = " alias ".concurrency_key), 1)" \
	"   AND NOT EXISTS (SELECT FROM jobq.rate_limit r" \
	"   WHERE r.key = " alias ".concurrency_key" \
	"   AND pg_catalog.cardinality(r.starts) >= r.max_starts" \
	"   AND r.starts[pg_catalog.cardinality(r.starts) + 1 - r.max_starts]" \
	"     > pg_catalog.now() - r.per)))"
#define JOBQ_KEY_FREE_BEFORE_03(alias) \
	" (" alias ".concurrency_key IS NULL OR NOT EXISTS (" \
	"   SELECT FROM jobq.concurrency_lock c JOIN jobq.job h ON h.id = c.job_id" \
	"   AND h.lease_token = c.lease_token AND h.state = 'running'" \
	"   WHERE c.key = " alias ".concurrency_key))"

/*
 * Whether the job a pick or lease is taking may hold slot "slot" of its
 * key, which this transaction has locked: no standing lease holds that
 * slot (and a lease records that its job holds it now).
 */
typedef bool (*JobqTakeKeySlot) (void *arg, const char *key, int slot);

/* What limits a key (JobqLookupKeyLimits). */
typedef struct JobqKeyLimits
{
	int			max_running;	/* its jobq.set_limit, or 1 */
	bool		rated;			/* it has a jobq.set_rate_limit */
} JobqKeyLimits;

/* A slot of a key a pick took. */
typedef struct JobqTakenSlot
{
	const char *key;
	int			slot;
} JobqTakenSlot;

extern JobqKeyLimits JobqLookupKeyLimits(const char *key);
extern int	JobqTakeConcurrencySlot(const char *key, int limit, List *taken,
									JobqTakeKeySlot take, void *arg);
extern int	JobqSlotsTakenHere(List *taken, const char *key);
extern bool JobqHoldConcurrencyKey(Datum key, int slot, int64 job_id, int64 lease_token);
extern bool JobqConcurrencyKeyLeased(Datum key, int slot);
extern JobqRateOutcome JobqTakeRateStart(const char *key);
extern void JobqNoteRateWindows(void);
extern TimestampTz JobqNextRateStart(void);

#endif							/* JOBQ_CONCURRENCY_H */
