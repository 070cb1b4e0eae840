/*-------------------------------------------------------------------------
 *
 * src/kind_cache.h
 *		The settings of kinds an enqueue needs, kept across statements.
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

extern bool JobqLookupKindSettings(Datum kind, JobqKindSettings *settings);

#endif							/* JOBQ_KIND_CACHE_H */
