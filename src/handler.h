/*-------------------------------------------------------------------------
 *
 * src/handler.h
 *		Handlers: lookup and cache, shape, and who may run them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_HANDLER_H
#define JOBQ_HANDLER_H

#include "fmgr.h"

/*
 * The longest handler signature: two quoted names of NAMEDATALEN - 1 bytes
 * whose every character is a doubled quote, a dot and the arguments
 * (JOBQ_BATCH_ARGS at most).
 */
#define JOBQ_HANDLER_SIGNATURE_MAX	(4 * NAMEDATALEN + 32)

/*
 * The arguments in the stored signature of a batch handler, which takes
 * all the jobs of a kind a batch picked in one call.
 */
#define JOBQ_BATCH_ARGS				"(jobq.batch_job[])"

/*
 * A handler ready to call, found by the signature its kind stores, for one
 * role: the call information keeps what a function caches between calls
 * (a SQL function's plans, made with its caller's row security), which
 * must not pass from one role's handler to another's.
 */
typedef struct JobqHandlerKey
{
	Oid			owner;			/* the role it runs as */
	char		signature[JOBQ_HANDLER_SIGNATURE_MAX];
} JobqHandlerKey;

typedef struct JobqHandler
{
	JobqHandlerKey key;			/* hash key */
	Oid			fn_oid;
	FmgrInfo	flinfo;
	bool		returns_jsonb;
	bool		batch;			/* takes jobq.batch_job[], returns
								 * jobq.batch_result[] */
	Oid			batch_job_type; /* the row type of its argument's elements */
} JobqHandler;

/* The shape of a function jobq can call as a handler. */
struct FormData_pg_proc;
extern bool JobqHasHandlerShape(const struct FormData_pg_proc *proc, bool *batch);
extern bool JobqIsBatchSignature(const char *signature);
#define JOBQ_HANDLER_SHAPE_DETAIL \
	"A handler is a function or procedure that takes one jsonb argument and returns jsonb or void, or a function that takes jobq.batch_job[] and returns jobq.batch_result[]."

extern void JobqCheckHandlerOwner(Oid fn_oid, Oid runner);
extern JobqHandler *JobqLookupHandler(const char *signature, Oid owner);
extern void JobqCheckRunner(const char *kind, Oid owner, Oid fn_oid);
extern void JobqCheckHandlerColumn(int col);

#endif							/* JOBQ_HANDLER_H */
