/*-------------------------------------------------------------------------
 *
 * src/kind_cache.h
 *		The settings of kinds an enqueue or a worker needs, kept across
 *		statements.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_KIND_CACHE_H
#define JOBQ_KIND_CACHE_H

/* What an enqueue needs of a kind's row in jobq.kind. */
typedef struct JobqKindSettings
{
	int32		queue_id;
	int32		max_attempts;
	bool		in_db;			/* it has an in-database handler */
} JobqKindSettings;

/*
 * What running a kind's jobs needs of its row.  The strings belong to the
 * cache: they last until the next lookup.
 */
typedef struct JobqKindRunner
{
	const char *handler;		/* its signature; NULL: no in-database handler */
	Oid			owner;			/* the role its handler runs as */
	int64		timeout_ms;
	int64		backoff_base_us;
	int64		backoff_max_us;
	bool		careful;		/* it declares side effects */
	bool		hold_on_failure;	/* ... and is not retry_safe */
	const char *search_path;	/* its handler's, fixed at register_kind */
} JobqKindRunner;

extern bool JobqLookupKindSettings(Datum kind, JobqKindSettings *settings);
extern bool JobqLookupKindRunner(const char *kind, JobqKindRunner *runner);
extern int64 JobqKindTimeoutMs(Datum d, bool isnull);

#endif							/* JOBQ_KIND_CACHE_H */
