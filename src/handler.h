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
 * whose every character is a doubled quote, a dot and "(jsonb)".
 */
#define JOBQ_HANDLER_SIGNATURE_MAX	(4 * NAMEDATALEN + 16)

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
} JobqHandler;

/* The shape of a function jobq can call as a handler. */
struct FormData_pg_proc;
extern bool JobqHasHandlerShape(const struct FormData_pg_proc *proc);
#define JOBQ_HANDLER_SHAPE_DETAIL \
	"A handler is a function or procedure that takes one jsonb argument and returns jsonb or void."

extern void JobqCheckHandlerOwner(Oid fn_oid, Oid runner);
extern JobqHandler *JobqLookupHandler(const char *signature, Oid owner);
extern void JobqCheckRunner(const char *kind, Oid owner, Oid fn_oid);
extern void JobqCheckHandlerColumn(int col);

#endif							/* JOBQ_HANDLER_H */
