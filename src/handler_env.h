/*-------------------------------------------------------------------------
 *
 * src/handler_env.h
 *		The environment a handler runs in, and what it may leave behind.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_HANDLER_ENV_H
#define JOBQ_HANDLER_ENV_H

/* What JobqEnterHandlerEnv changed, for JobqLeaveHandlerEnv to undo. */
typedef struct JobqHandlerEnv
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
	SubTransactionId subid;		/* the handler's portals are from here on */
	MemoryContext newest_portal;	/* the newest portal's memory before it */
} JobqHandlerEnv;

extern void JobqAdoptHandlerSearchPath(void);
extern void JobqBeginHandlerSession(void);
extern void JobqEnterHandlerEnv(JobqHandlerEnv *env, Oid owner, const char *search_path);
extern void JobqLeaveHandlerEnv(JobqHandlerEnv *env);
extern void JobqCleanUpAfterFailedHandler(void);

#endif							/* JOBQ_HANDLER_ENV_H */
