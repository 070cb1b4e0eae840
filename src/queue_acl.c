/*-------------------------------------------------------------------------
 *
 * src/queue_acl.c
 *		Who may produce into, work on and operate each queue.
 *
 * A queue privilege is one of
 *	produce		enqueue jobs into the queue (enqueue, enqueue_many);
 *	work		claim the queue's jobs and report on them (claim, complete,
 *				complete_many, fail, heartbeat, snooze; the idempotency
 *				toolkit on a job whose lease the session holds), and run its
 *				due in-database jobs with run_pending;
 *	operate		read the queue's jobs in the views and act on them (retry,
 *				retry_failed, cancel, discard, resolve, history, pause_queue,
 *				resume_queue, and run_pending too).
 * A role has a privilege on a queue when it has the privileges of (in
 * PostgreSQL's sense: pg_has_role(..., 'USAGE')) a role that was granted it
 * on that queue with jobq.grant(), or of the privilege's shorthand role,
 * which stands for every queue: jobq_producer, jobq_worker and
 * jobq_operator (jobq_admin is a member of all three).  Superusers have
 * every privilege.  The shorthands keep deployments made before per-queue
 * privileges working, and cost nothing to check: a member of the shorthand
 * never reads jobq.queue_grant.
 *
 * The functions that touch a queue's jobs are executable by PUBLIC and
 * make these checks themselves, as PostgreSQL's own functions check the
 * privileges on the object they are given: a role with a grant on one
 * queue needs nothing else.  Revoking EXECUTE from PUBLIC limits jobq to
 * the members of the four roles, which keep their own EXECUTE grants.
 *
 * jobq.queue_grant holds one row per (queue, privilege, grantee); pg_dump
 * keeps it, naming the grantee by role name.  PostgreSQL does not tell
 * jobq about DROP ROLE: a dropped role's grants grant nothing (no role
 * has its privileges) and are forgotten at the next grant or revoke.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/syscache.h"

#include "jobq.h"
#include "operators.h"
#include "queue_acl.h"
#include "queues.h"

static const char *const privilege_names[JOBQ_QUEUE_PRIVILEGES] = {
	"produce", "work", "operate"
};

/* The role that stands for each privilege on every queue. */
static const char *const shorthand_roles[JOBQ_QUEUE_PRIVILEGES] = {
	"jobq_producer", "jobq_worker", "jobq_operator"
};

static SPIPlanPtr plan_has_grant;
static SPIPlanPtr plan_job_denied;
static SPIPlanPtr plan_job_denied_old;
static SPIPlanPtr plan_insert_grant;
static SPIPlanPtr plan_delete_grant;
static SPIPlanPtr plan_forget_dropped;
static SPIPlanPtr plan_job_queue;
static SPIPlanPtr plan_some_grant;

/* The name of a privilege, as in jobq.grant() and jobq.queue_privileges. */
const char *
JobqQueuePrivilegeName(JobqQueuePrivilege privilege)
{
	Assert(privilege >= 0 && privilege < JOBQ_QUEUE_PRIVILEGES);
	return privilege_names[privilege];
}

/*
 * Whether a role has a privilege on every queue: it is a superuser, or has
 * the privileges of the privilege's shorthand role.  Reads only the role
 * caches; may run anywhere in a transaction.
 */
bool
JobqHasAllQueues(Oid role, JobqQueuePrivilege privilege)
{
	Oid			shorthand;

	if (superuser_arg(role))
		return true;
	shorthand = get_role_oid(shorthand_roles[privilege], true);
	return OidIsValid(shorthand) && has_privs_of_role(role, shorthand);
}

/*
 * Whether a role has a privilege on the queue with this id.  Must run
 * between JobqBeginAccess and JobqEndAccess.
 */
bool
JobqHasQueuePrivilege(int32 queue_id, Oid role, JobqQueuePrivilege privilege)
{
	Oid			argtypes[3] = {INT4OID, TEXTOID, OIDOID};
	Datum		values[3];

	Assert(JobqInsideAccess());

	if (JobqHasAllQueues(role, privilege))
		return true;
	/* Objects older than per-queue privileges have no grants to read. */
	if (!JobqObjectsAreCurrent())
		return false;
	values[0] = Int32GetDatum(queue_id);
	values[1] = CStringGetTextDatum(privilege_names[privilege]);
	values[2] = ObjectIdGetDatum(role);
	JobqPreparePlan(&plan_has_grant,
					"SELECT FROM jobq.queue_grant g"
					" WHERE g.queue_id = $1 AND g.privilege = $2"
					"   AND pg_catalog.pg_has_role($3, g.grantee::pg_catalog.oid, 'USAGE')"
					" LIMIT 1",
					3, argtypes);
	return JobqExecutePlan(plan_has_grant, values, NULL, SPI_OK_SELECT, 1) == 1;
}

/*
 * Whether a role may produce into or operate the queue with this id: the
 * roles that may wait on its jobs (jobq.wait) and enqueue after them.
 * Must run between JobqBeginAccess and JobqEndAccess.
 */
bool
JobqMayReachQueueJobs(int32 queue_id, Oid role)
{
	return JobqHasQueuePrivilege(queue_id, role, JOBQ_PRODUCE) ||
		JobqHasQueuePrivilege(queue_id, role, JOBQ_OPERATE);
}

/*
 * Raise the error for a role that lacks a privilege on a queue (42501).
 * job_id, if not 0, is the job that led there.
 */
void
JobqReportQueuePrivilege(const char *queue, Oid role, JobqQueuePrivilege privilege,
						 int64 job_id)
{
	const char *rolename = GetUserNameFromId(role, false);

	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied for queue \"%s\"", queue),
			 job_id != 0
			 ? errdetail("Job %lld is in queue \"%s\"; role \"%s\" lacks the %s privilege on it.",
						 (long long) job_id, queue, rolename, privilege_names[privilege])
			 : errdetail("Role \"%s\" lacks the %s privilege on it.",
						 rolename, privilege_names[privilege]),
			 errhint("A member of jobq_admin can grant it, with jobq.grant('%s', '%s', '{%s}'), or grant role %s for every queue.",
					 queue, rolename, privilege_names[privilege],
					 shorthand_roles[privilege])));
}

/*
 * Raise 42501 unless a role has a privilege on the queue with this id and
 * name.  Must run between JobqBeginAccess and JobqEndAccess.
 */
void
JobqCheckQueuePrivilege(int32 queue_id, const char *queue, Oid role,
						JobqQueuePrivilege privilege)
{
	Assert(JobqInsideAccess());

	if (!JobqHasQueuePrivilege(queue_id, role, privilege))
		JobqReportQueuePrivilege(queue, role, privilege, 0);
}

/*
 * Look up a queue by name for a role that needs a privilege on it: raise
 * 42704 if it does not exist and 42501 if the role lacks the privilege.
 * Returns its id, and sets *paused if given.  The name must have been
 * checked.  Must run between JobqBeginAccess and JobqEndAccess.
 */
int32
JobqQueueForPrivilege(Datum name, Oid role, JobqQueuePrivilege privilege, bool *paused)
{
	int32		id = JobqFindQueue(name, paused);
	char	   *queue = TextDatumGetCString(name);

	Assert(JobqInsideAccess());

	if (id == 0)
		JobqReportUnknownQueue(queue);
	JobqCheckQueuePrivilege(id, queue, role, privilege);
	return id;
}

/*
 * Raise 42501 unless a role has a privilege on the queues of the jobs
 * whose ids the int8[] "ids" lists; the error names the first job (by id)
 * it lacks it for.  Jobs that do not exist are left to the caller to
 * report.  Must run between JobqBeginAccess and JobqEndAccess.
 */
void
JobqCheckJobsPrivilege(Datum ids, Oid role, JobqQueuePrivilege privilege)
{
	Oid			argtypes[3] = {INT8ARRAYOID, TEXTOID, OIDOID};
	Datum		values[3];
	bool		isnull;

	Assert(JobqInsideAccess());

	if (JobqHasAllQueues(role, privilege))
		return;
	values[0] = ids;
	values[1] = CStringGetTextDatum(privilege_names[privilege]);
	values[2] = ObjectIdGetDatum(role);
	if (JobqObjectsAreCurrent())
	{
		JobqPreparePlan(&plan_job_denied,
						"SELECT j.id, q.name FROM jobq.job j"
						" JOIN jobq.queue q ON q.id = j.queue_id"
						" WHERE j.id = ANY ($1)"
						"   AND NOT EXISTS (SELECT FROM jobq.queue_grant g"
						"     WHERE g.queue_id = j.queue_id AND g.privilege = $2"
						"       AND pg_catalog.pg_has_role($3, g.grantee::pg_catalog.oid, 'USAGE'))"
						" ORDER BY j.id LIMIT 1",
						3, argtypes);
		if (JobqExecutePlan(plan_job_denied, values, NULL, SPI_OK_SELECT, 1) == 0)
			return;
	}
	else
	{
		/* Objects older than per-queue privileges have no grants. */
		JobqPreparePlan(&plan_job_denied_old,
						"SELECT j.id, q.name FROM jobq.job j"
						" JOIN jobq.queue q ON q.id = j.queue_id"
						" WHERE j.id = ANY ($1) ORDER BY j.id LIMIT 1",
						1, argtypes);
		if (JobqExecutePlan(plan_job_denied_old, values, NULL, SPI_OK_SELECT, 1) == 0)
			return;
	}
	JobqReportQueuePrivilege(TextDatumGetCString(JobqGetDatum(0, 2, &isnull)), role,
							 privilege, JobqGetInt64(0, 1));
}

/* JobqCheckJobsPrivilege for one job. */
void
JobqCheckJobPrivilege(int64 job_id, Oid role, JobqQueuePrivilege privilege)
{
	Datum		id = Int64GetDatum(job_id);

	if (JobqHasAllQueues(role, privilege))
		return;
	JobqCheckJobsPrivilege(PointerGetDatum(construct_array(&id, 1, INT8OID, 8,
														   FLOAT8PASSBYVAL,
														   TYPALIGN_DOUBLE)),
						   role, privilege);
}

/*
 * Whether a role has a privilege on the queue of an existing job (false if
 * there is no such job, unless it has the privilege on every queue).
 * Must run between JobqBeginAccess and JobqEndAccess.
 */
bool
JobqHasJobPrivilege(int64 job_id, Oid role, JobqQueuePrivilege privilege)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(job_id)};

	Assert(JobqInsideAccess());

	if (JobqHasAllQueues(role, privilege))
		return true;
	JobqPreparePlan(&plan_job_queue,
					"SELECT queue_id FROM jobq.job WHERE id = $1", 1, argtypes);
	if (JobqExecutePlan(plan_job_queue, values, NULL, SPI_OK_SELECT, 1) == 0)
		return false;
	return JobqHasQueuePrivilege(JobqGetInt32(0, 1), role, privilege);
}

/*
 * Raise 42501 unless a role has, on at least one queue, one of the
 * privileges in "mask" (bits 1 << JobqQueuePrivilege): for the functions
 * that act on every queue the caller may use, which would otherwise do
 * nothing without a word.  "function" and "may" name the function and the
 * privileges for the message.  Must run between JobqBeginAccess and
 * JobqEndAccess.
 */
void
JobqCheckSomeQueue(Oid role, int mask, const char *function, const char *may)
{
	Oid			argtypes[2] = {OIDOID, TEXTARRAYOID};
	Datum		values[2];
	Datum		names[JOBQ_QUEUE_PRIVILEGES];
	int			n = 0;
	int			p;

	Assert(JobqInsideAccess());

	for (p = 0; p < JOBQ_QUEUE_PRIVILEGES; p++)
		if ((mask & (1 << p)) != 0)
		{
			if (JobqHasAllQueues(role, (JobqQueuePrivilege) p))
				return;
			names[n++] = CStringGetTextDatum(privilege_names[p]);
		}
	if (JobqObjectsAreCurrent())
	{
		values[0] = ObjectIdGetDatum(role);
		values[1] = PointerGetDatum(construct_array(names, n, TEXTOID, -1, false,
													TYPALIGN_INT));
		JobqPreparePlan(&plan_some_grant,
						"SELECT FROM jobq.queue_grant g"
						" WHERE g.privilege = ANY ($2)"
						"   AND pg_catalog.pg_has_role($1, g.grantee::pg_catalog.oid, 'USAGE')"
						" LIMIT 1",
						2, argtypes);
		if (JobqExecutePlan(plan_some_grant, values, NULL, SPI_OK_SELECT, 1) == 1)
			return;
	}
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied for every queue"),
			 errdetail("%s acts on the queues role \"%s\" may %s, and there is none.",
					   function, GetUserNameFromId(role, false), may),
			 errhint("A member of jobq_admin grants privileges on a queue with jobq.grant().")));
}

/*
 * Read the privileges argument of grant and revoke into flags, one per
 * JobqQueuePrivilege; "all" stands for the three.
 */
static void
read_privileges(FunctionCallInfo fcinfo, int argno, bool *wanted)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;
	int			p;

	JobqCheckNotNull(fcinfo, argno, "privileges");
	n = JobqDeconstructArray(PG_GETARG_ARRAYTYPE_P(argno), TEXTOID, "privileges", false,
							 &elems, &nulls);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"privileges\" must not be empty"),
				 errhint("Queue privileges are produce, work, operate and all.")));
	memset(wanted, 0, sizeof(bool) * JOBQ_QUEUE_PRIVILEGES);
	for (i = 0; i < n; i++)
	{
		char	   *name = TextDatumGetCString(elems[i]);
		bool		known = false;

		if (strcmp(name, "all") == 0)
		{
			for (p = 0; p < JOBQ_QUEUE_PRIVILEGES; p++)
				wanted[p] = true;
			continue;
		}
		for (p = 0; p < JOBQ_QUEUE_PRIVILEGES; p++)
			if (strcmp(name, privilege_names[p]) == 0)
				wanted[p] = known = true;
		if (!known)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unrecognized queue privilege \"%s\"", name),
					 errhint("Queue privileges are produce, work, operate and all.")));
	}
}

/* Read the role argument of grant and revoke: an existing role. */
static Oid
read_role(FunctionCallInfo fcinfo, int argno)
{
	Oid			role;

	JobqCheckNotNull(fcinfo, argno, "role");
	role = PG_GETARG_OID(argno);
	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(role)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role with OID %u does not exist", role)));
	return role;
}

/* The privileges listed in wanted, as "work, operate". */
static char *
privilege_list(const bool *wanted)
{
	StringInfoData buf;
	int			p;

	initStringInfo(&buf);
	for (p = 0; p < JOBQ_QUEUE_PRIVILEGES; p++)
		if (wanted[p])
			appendStringInfo(&buf, "%s%s", buf.len > 0 ? ", " : "", privilege_names[p]);
	return buf.data;
}

/*
 * Forget the grants of roles that no longer exist (PostgreSQL does not
 * tell jobq about DROP ROLE): a new role must never get an old one's
 * grants by reusing its OID.  Between JobqBeginAccess and JobqEndAccess.
 */
static void
forget_dropped_grantees(void)
{
	Assert(JobqInsideAccess());

	JobqPreparePlan(&plan_forget_dropped,
					"DELETE FROM jobq.queue_grant g WHERE NOT EXISTS ("
					"  SELECT FROM pg_catalog.pg_authid a"
					"  WHERE a.oid = g.grantee::pg_catalog.oid)",
					0, NULL);
	JobqExecutePlan(plan_forget_dropped, NULL, NULL, SPI_OK_DELETE, 0);
}

/*
 * The body of jobq.grant() (grant true) and jobq.revoke(): change the
 * rows of one queue and role, and log what changed.
 */
static void
change_grants(FunctionCallInfo fcinfo, bool grant)
{
	JobqAccess	access;
	Oid			argtypes[4] = {INT4OID, TEXTOID, OIDOID, NAMEOID};
	Datum		values[4];
	bool		wanted[JOBQ_QUEUE_PRIVILEGES];
	bool		changed[JOBQ_QUEUE_PRIVILEGES];
	bool		any = false;
	char	   *queue;
	Oid			role;
	int			p;

	JobqCheckNotNull(fcinfo, 0, "queue");
	queue = text_to_cstring(PG_GETARG_TEXT_PP(0));
	JobqCheckQueueName(queue);
	role = read_role(fcinfo, 1);
	read_privileges(fcinfo, 2, wanted);
	JobqRequireCurrentObjects(grant ? "jobq.grant()" : "jobq.revoke()");

	JobqBeginAccess(&access);
	values[0] = Int32GetDatum(JobqQueueId(PG_GETARG_DATUM(0), false));
	values[2] = ObjectIdGetDatum(role);
	values[3] = JobqNameDatum(GetUserNameFromId(access.caller, false));
	forget_dropped_grantees();
	if (grant)
		JobqPreparePlan(&plan_insert_grant,
						"INSERT INTO jobq.queue_grant (queue_id, privilege, grantee, granted_by)"
						" VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
						4, argtypes);
	else
		JobqPreparePlan(&plan_delete_grant,
						"DELETE FROM jobq.queue_grant"
						" WHERE queue_id = $1 AND privilege = $2 AND grantee = $3",
						3, argtypes);
	for (p = 0; p < JOBQ_QUEUE_PRIVILEGES; p++)
	{
		changed[p] = false;
		if (!wanted[p])
			continue;
		values[1] = CStringGetTextDatum(privilege_names[p]);
		changed[p] = JobqExecutePlan(grant ? plan_insert_grant : plan_delete_grant,
									 values, NULL,
									 grant ? SPI_OK_INSERT : SPI_OK_DELETE, 0) > 0;
		any |= changed[p];
	}
	if (any)
		JobqLogOperatorAction(access.caller, grant ? "grant" : "revoke", NULL, 0, queue,
							  psprintf("%s %s role %s", privilege_list(changed),
									   grant ? "to" : "from",
									   quote_identifier(GetUserNameFromId(role, false))));
	JobqEndAccess(&access);
}

PG_FUNCTION_INFO_V1(jobq_grant);

/*
 * jobq.grant(queue, role, privileges)
 *
 * Grant privileges on a queue to a role (and so to every role that has
 * its privileges).  Granting what is granted already changes nothing.
 * EXECUTE is jobq_admin's: that is the check.
 */
Datum
jobq_grant(PG_FUNCTION_ARGS)
{
	JobqRequirePrimary("jobq.grant()");
	change_grants(fcinfo, true);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(jobq_revoke);

/*
 * jobq.revoke(queue, role, privileges)
 *
 * Revoke privileges on a queue from a role.  Revoking what was not granted
 * changes nothing; a role keeps what it has through other roles,
 * shorthands included, as with REVOKE.
 */
Datum
jobq_revoke(PG_FUNCTION_ARGS)
{
	JobqRequirePrimary("jobq.revoke()");
	change_grants(fcinfo, false);
	PG_RETURN_VOID();
}
