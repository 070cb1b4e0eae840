/*-------------------------------------------------------------------------
 *
 * src/pick.h
 *		Picking ready jobs, with the concurrency-key rounds.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_PICK_H
#define JOBQ_PICK_H

#include "invoke.h"

/*
 * Most picks one claim or batch makes: the first, then picks that replace
 * the jobs skipped for a busy key with the next ones in line.
 */
#define JOBQ_KEY_PICK_ROUNDS	4

/*
 * One pick of jobs with concurrency keys (JobqPickWithKeys): the caller's
 * callbacks fetch the jobs, decide whether a job may take its key, and
 * keep the jobs the pick keeps.
 */
typedef struct JobqKeyPick JobqKeyPick;

struct JobqKeyPick
{
	/*
	 * Lock and fetch up to max_jobs more ready jobs, none of the ids in
	 * "excluded" (an int8[], or (Datum) 0 for none), set ids and keys for
	 * them, and return how many.
	 */
	int			(*fetch) (JobqKeyPick *pick, int max_jobs, Datum excluded);

	/*
	 * With a slot of job i's key locked by this transaction: whether the job
	 * may take it (no standing lease holds it; a claim also holds it for its
	 * lease).
	 */
	bool		(*take_key) (JobqKeyPick *pick, int i, const char *key, int slot);

	/* Keep job i of the last fetch as the pick's job number "at". */
	void		(*keep) (JobqKeyPick *pick, int i, int at);

	void	   *arg;			/* the caller's own state */

	/* Set by fetch, for the jobs it fetched. */
	int64	   *ids;
	char	  **keys;			/* NULL entries: no key; NULL: none has one */

	/* Set by JobqPickWithKeys. */
	int			taking;			/* the job of the last fetch whose key it
								 * takes */
	int			deferred;		/* jobs left behind keys whose every slot the
								 * pick took */
	bool		took_keys;		/* the pick holds at least one key */
};

extern int	JobqPickWithKeys(JobqKeyPick *pick, int max_jobs);
extern int	JobqPickRunnableJobs(int max_jobs, Oid runner, BatchJob **jobs_out,
								 int *deferred);

#endif							/* JOBQ_PICK_H */
