/*-------------------------------------------------------------------------
 *
 * src/schedules.c
 *		Schedules: named recurring work, fired by the database itself.
 *
 * A schedule remembers the first slot (fire time) it has not handled yet,
 * next_fire_at.  Evaluating it at "now" handles every slot up to now, in
 * one transaction with the row locked: it enqueues the jobs, records what
 * happened and moves next_fire_at past now.  Each job is enqueued with the
 * idempotency key "<name>@<slot in UTC>", so even two evaluators that both
 * got past the row lock, or an evaluator rerun after a crash, cannot fire
 * one slot twice.
 *
 * Policies:
 *	misfire, for slots that were missed (the server was down, or no worker
 *	ran): a slot is on time if it is at most JOBQ_SCHEDULE_GRACE old when
 *	evaluated, and missed otherwise, as are all but the newest of several
 *	due slots.
 *		skip	only an on-time slot fires; missed slots are recorded.
 *		once	one job fires for all the due slots (the newest).
 *		all		every due slot fires, oldest first, at most
 *				JOBQ_SCHEDULE_CATCHUP_MAX of them (the newest).  Each firing
 *				goes through the overlap policy, so with skip or queue the
 *				first catch-up job stops the others: "all" wants "allow".
 *	overlap, when a slot comes while the schedule's previous job is not
 *	finished (pending, running or held):
 *		skip	the slot is recorded as skipped.
 *		queue	the job is enqueued to run after the previous one (both
 *				carry the schedule's concurrency key), unless one is already
 *				waiting.
 *		allow	the job is enqueued regardless.
 *
 * The background workers evaluate due schedules once per poll interval,
 * one evaluator per database at a time (a jobq lock); the SQL
 * function jobq.tick_schedules(now) does the same at a given time.
 *
 * Owners: a schedule belongs to the role that created it, as a kind does.
 * Replacing, pausing, resuming, running now or dropping it needs that
 * role's privileges (has_privs_of_role: the role, its members,
 * superusers), and each of these changes is logged in jobq.operator_log
 * with the schedule's name.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/datum.h"
#include "utils/timestamp.h"

#include "cron.h"
#include "enqueue.h"
#include "jobq.h"
#include "queue_acl.h"
#include "schedules.h"
#include "shmem.h"

#define JOBQ_SCHEDULE_NAME_MAX		100
#define JOBQ_SCHEDULE_GRACE			(60 * USECS_PER_SEC)
#define JOBQ_SCHEDULE_CATCHUP_MAX	100
#define JOBQ_SCHEDULE_EVENTS_KEPT	100
/* How far back missed slots of a cron expression are looked for. */
#define JOBQ_SCHEDULE_LOOKBACK		(INT64CONST(31) * USECS_PER_DAY)

/* The due slots of a schedule: the newest ones, oldest first. */
typedef struct DueSlots
{
	TimestampTz slots[JOBQ_SCHEDULE_CATCHUP_MAX];
	int			nkept;			/* in slots[] */
	int64		total;			/* due slots found */
	bool		clipped;		/* older slots were not counted */
} DueSlots;

/* One schedule row, as evaluated. */
typedef struct Schedule
{
	Datum		name;			/* text */
	char	   *name_str;
	char	   *cron_text;
	char	   *tz_name;
	JobqCron	cron;			/* parsed by prepare_schedule */
	pg_tz	   *tz;
	Datum		kind;			/* text */
	Datum		payload;		/* jsonb */
	char		overlap;		/* 's'kip, 'q'ueue, 'a'llow */
	char		misfire;		/* 's'kip, 'o'nce, 'a'll */
	Datum		concurrency_key;	/* text, or 0 */
	TimestampTz next_fire_at;
	int64		last_job_id;	/* 0 if none */
	TimestampTz last_fire_at;	/* NO_SLOT if none */
	Oid			owner;			/* the role that created it */
} Schedule;

/* "No slot": never 0, which is a real time (2000-01-01 00:00 UTC). */
#define NO_SLOT DT_NOBEGIN

static SPIPlanPtr plan_due_worker;
static SPIPlanPtr plan_due_worker_old;
static SPIPlanPtr plan_due_sql;
static SPIPlanPtr plan_due_sql_old;
static SPIPlanPtr plan_kind_queue;
static SPIPlanPtr plan_job_state;
static SPIPlanPtr plan_job_locked;
static SPIPlanPtr plan_event;
static SPIPlanPtr plan_prune;
static SPIPlanPtr plan_advance;
static SPIPlanPtr plan_kind_exists;
static SPIPlanPtr plan_upsert;
static SPIPlanPtr plan_current;
static SPIPlanPtr plan_pause;
static SPIPlanPtr plan_unschedule;
static SPIPlanPtr plan_one;
static SPIPlanPtr plan_failed;
static SPIPlanPtr plan_slot_job;
static SPIPlanPtr plan_owner;
static SPIPlanPtr plan_log;

static Oid	schedule_owner(Datum name);
static void check_schedule_owner(const Schedule *s, Oid caller, const char *action);
static void log_schedule_action(Oid caller, const char *action, Datum name, int64 job_id);

/* The policy letter of an overlap or misfire argument, checked. */
static char
policy_arg(const char *value, const char *argname, const char *const *accepted)
{
	int			i;

	for (i = 0; accepted[i] != NULL; i++)
		if (strcmp(value, accepted[i]) == 0)
			return accepted[i][0];
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid %s policy \"%s\"", argname, value),
			 errhint("The %s policy is one of %s, %s and %s.", argname,
					 accepted[0], accepted[1], accepted[2])));
	return 0;					/* not reached */
}

static const char *const overlap_policies[] = {"skip", "queue", "allow", NULL};
static const char *const misfire_policies[] = {"skip", "once", "all", NULL};

/* The idempotency key of a slot: "<name>@YYYY-MM-DDTHH:MM:SSZ". */
static char *
slot_key(const char *name, TimestampTz slot)
{
	struct pg_tm tm;
	fsec_t		fsec;

	if (timestamp2tm(slot, NULL, &tm, &fsec, NULL, NULL) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
	return psprintf("%s@%04d-%02d-%02dT%02d:%02d:%02dZ", name, tm.tm_year, tm.tm_mon,
					tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* The first slot after "after", or DT_NOEND. */
static TimestampTz
next_slot(Schedule *s, TimestampTz after)
{
	return JobqCronNextFire(&s->cron, after, s->tz);
}

/* Keep a due slot, dropping the oldest kept one when full. */
static void
keep_slot(DueSlots *due, TimestampTz slot)
{
	if (due->nkept == JOBQ_SCHEDULE_CATCHUP_MAX)
	{
		memmove(&due->slots[0], &due->slots[1],
				sizeof(TimestampTz) * (JOBQ_SCHEDULE_CATCHUP_MAX - 1));
		due->nkept--;
	}
	due->slots[due->nkept++] = slot;
	due->total++;
}

/* The slots from next_fire_at to now, the newest kept. */
static void
collect_due_slots(Schedule *s, TimestampTz now, DueSlots *due)
{
	TimestampTz slot = s->next_fire_at;

	memset(due, 0, sizeof(*due));
	if (s->cron.every_seconds > 0)
	{
		/* @every: slots are evenly spaced; count them, keep the newest. */
		int64		period = s->cron.every_seconds * USECS_PER_SEC;
		TimestampTz next = next_slot(s, now);
		TimestampTz newest;
		int64		total;
		int			i;

		if (TIMESTAMP_IS_NOEND(next))
			return;				/* at the end of time: nothing is due */
		newest = next - period;
		if (newest < slot)
			return;
		total = (newest - slot) / period + 1;
		for (i = (int) Min(total, JOBQ_SCHEDULE_CATCHUP_MAX) - 1; i >= 0; i--)
			due->slots[due->nkept++] = newest - i * period;
		due->total = total;
		return;
	}

	/* A cron expression: walk the slots, from at most a month back. */
	if (now - slot > JOBQ_SCHEDULE_LOOKBACK)
	{
		due->clipped = true;
		slot = next_slot(s, now - JOBQ_SCHEDULE_LOOKBACK);
	}
	while (slot <= now)
	{
		keep_slot(due, slot);
		CHECK_FOR_INTERRUPTS();
		slot = next_slot(s, slot);
	}
}

/* The state of the schedule's previous job, or NULL if gone or none. */
static char *
previous_job_state(Schedule *s)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(s->last_job_id)};
	bool		isnull;
	char	   *state;

	if (s->last_job_id == 0)
		return NULL;
	JobqPreparePlan(&plan_job_state,
					"SELECT state::text FROM jobq.job WHERE id = $1", 1, argtypes);
	if (JobqExecutePlan(plan_job_state, values, NULL, SPI_OK_SELECT, 0) == 0)
		return NULL;
	state = TextDatumGetCString(JobqGetDatum(0, 1, &isnull));

	/*
	 * A pending job whose row another transaction has locked is being run by
	 * a worker's batch (its claim is the row lock, not yet committed).
	 */
	if (strcmp(state, "pending") == 0)
	{
		JobqPreparePlan(&plan_job_locked,
						"SELECT FROM jobq.job WHERE id = $1 FOR KEY SHARE SKIP LOCKED",
						1, argtypes);
		if (JobqExecutePlan(plan_job_locked, values, NULL, SPI_OK_SELECT, 0) == 0)
			state = "running";
	}
	return state;
}

/* Record an event of a schedule. */
static void
record_event(Schedule *s, TimestampTz slot, const char *event, int64 job_id,
			 const char *detail)
{
	Oid			argtypes[5] = {TEXTOID, TIMESTAMPTZOID, TEXTOID, INT8OID, TEXTOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

	values[0] = s->name;
	values[1] = TimestampTzGetDatum(slot);
	nulls[1] = slot != NO_SLOT ? ' ' : 'n';
	values[2] = CStringGetTextDatum(event);
	values[3] = Int64GetDatum(job_id);
	nulls[3] = job_id ? ' ' : 'n';
	values[4] = detail ? CStringGetTextDatum(detail) : (Datum) 0;
	nulls[4] = detail ? ' ' : 'n';
	JobqPreparePlan(&plan_event,
					"INSERT INTO jobq.schedule_event (schedule, slot, event, job_id, detail)"
					" VALUES ($1, $2, $3, $4, $5)",
					5, argtypes);
	JobqExecutePlan(plan_event, values, nulls, SPI_OK_INSERT, 0);
}

/* Keep only the newest events of a schedule. */
static void
prune_events(Datum name)
{
	Oid			argtypes[2] = {TEXTOID, INT4OID};
	Datum		values[2] = {name, Int32GetDatum(JOBQ_SCHEDULE_EVENTS_KEPT)};

	JobqPreparePlan(&plan_prune,
					"DELETE FROM jobq.schedule_event WHERE schedule = $1 AND id <= ("
					"  SELECT id FROM jobq.schedule_event WHERE schedule = $1"
					"  ORDER BY id DESC OFFSET $2 LIMIT 1)",
					2, argtypes);
	JobqExecutePlan(plan_prune, values, NULL, SPI_OK_DELETE, 0);
}

/*
 * Raise 42501 unless the schedule's owner may produce into its kind's
 * queue: a schedule enqueues on its owner's behalf, and a privilege
 * revoked after the schedule was made must stop it.  (An owner of
 * InvalidOid is that of objects older than 0.3, which have none.)  A kind
 * that is gone is left to enqueue to report.
 */
static void
check_owner_may_produce(Schedule *s)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {s->kind};
	bool		isnull;

	if (!OidIsValid(s->owner))
		return;
	JobqPreparePlan(&plan_kind_queue,
					"SELECT queue_id, queue FROM jobq.kind WHERE name = $1",
					1, argtypes);
	if (JobqExecutePlan(plan_kind_queue, values, NULL, SPI_OK_SELECT, 0) != 1)
		return;
	JobqCheckQueuePrivilege(JobqGetInt32(0, 1),
							TextDatumGetCString(JobqGetDatum(0, 2, &isnull)),
							s->owner, JOBQ_PRODUCE);
}

/*
 * Enqueue the job of one slot (or of a manual run, with its own key) and
 * return its id.  A key that exists already returns the job that holds it:
 * the slot fired before.  Must run between JobqBeginAccess and
 * JobqEndAccess.
 *
 * The owner's produce privilege is checked first, then the enqueue makes
 * every check jobq.enqueue() makes, with jobq's owner (the role the access
 * layer runs as) as the producer, as a call of jobq.enqueue() from here
 * would (see enqueue.h).
 */
static int64
fire(Schedule *s, TimestampTz run_at, const char *key)
{
	JobqEnqueueRequest request;

	Assert(JobqInsideAccess());

	check_owner_may_produce(s);
	JobqInitEnqueueRequest(&request, s->kind, s->payload, GetUserId());
	request.idempotency_key = CStringGetTextDatum(key);
	request.run_at = run_at;
	if (s->concurrency_key != (Datum) 0)
		request.concurrency_key = s->concurrency_key;
	else if (s->overlap == 'q')
		request.concurrency_key =
			CStringGetTextDatum(psprintf("jobq.schedule:%s", s->name_str));
	JobqCheckEnqueueRequest(&request);
	s->last_job_id = JobqEnqueue(&request);
	return s->last_job_id;
}

/* The job that holds a slot's key already, or 0. */
static int64
slot_job(Schedule *s, const char *key)
{
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Datum		values[2] = {s->kind, CStringGetTextDatum(key)};

	JobqPreparePlan(&plan_slot_job,
					"SELECT job_id FROM jobq.job_key WHERE kind = $1 AND key = $2",
					2, argtypes);
	if (JobqExecutePlan(plan_slot_job, values, NULL, SPI_OK_SELECT, 1) == 0)
		return 0;
	return JobqGetInt64(0, 1);
}

/*
 * Fire one slot unless the overlap policy says otherwise; "event" names a
 * firing ("fired", "caught_up").  Returns whether a job was enqueued.
 */
static bool
fire_slot(Schedule *s, TimestampTz slot, const char *event, const char **outcome)
{
	char	   *prev = previous_job_state(s);
	char	   *key;
	bool		unfinished = prev != NULL &&
	(strcmp(prev, "pending") == 0 || strcmp(prev, "running") == 0 ||
	 strcmp(prev, "held") == 0);
	int64		job_id;

	if (unfinished && (s->overlap == 's' ||
					   (s->overlap == 'q' && strcmp(prev, "pending") == 0)))
	{
		record_event(s, slot, "skipped_overlap", s->last_job_id,
					 psprintf("job %lld is still %s", (long long) s->last_job_id, prev));
		*outcome = "skipped_overlap";
		return false;
	}
	key = slot_key(s->name_str, slot);
	job_id = slot_job(s, key);
	if (job_id != 0)
	{
		/* An evaluator that read a stale schedule: the slot has its job. */
		s->last_job_id = job_id;
		record_event(s, slot, "already_fired", job_id, NULL);
		*outcome = "already_fired";
		return false;
	}
	job_id = fire(s, slot, key);
	record_event(s, slot, event, job_id, NULL);
	s->last_fire_at = slot;
	*outcome = event;
	return true;
}

/*
 * Evaluate one due schedule at "now": fire its slots as its policies say,
 * record what happened, and move next_fire_at past now.  The row is
 * locked.  Returns how many jobs were enqueued.
 */
static int
evaluate(Schedule *s, TimestampTz now)
{
	DueSlots	due;
	int			fired = 0;
	int64		missed = 0;
	const char *outcome = NULL;
	Oid			argtypes[5] = {TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID, TEXTOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	TimestampTz next;

	collect_due_slots(s, now, &due);
	if (due.nkept > 0)
	{
		TimestampTz newest = due.slots[due.nkept - 1];
		bool		on_time = now - newest <= JOBQ_SCHEDULE_GRACE;
		int			i;

		switch (s->misfire)
		{
			case 's':
				missed = due.total - (on_time ? 1 : 0);
				if (on_time)
					fired += fire_slot(s, newest, "fired", &outcome);
				break;
			case 'o':
				missed = due.total - 1;
				fired += fire_slot(s, newest,
								   due.total == 1 && on_time ? "fired" : "caught_up",
								   &outcome);
				break;
			default:
				missed = due.total - due.nkept;
				for (i = 0; i < due.nkept; i++)
					fired += fire_slot(s, due.slots[i],
									   i == due.nkept - 1 && on_time ? "fired" : "caught_up",
									   &outcome);
				break;
		}
		if (missed > 0)
		{
			record_event(s, due.slots[0], "missed", 0,
						 psprintf("%s%lld slot%s not run (misfire policy %s)",
								  due.clipped ? "more than " : "", (long long) missed,
								  missed == 1 ? "" : "s",
								  s->misfire == 's' ? "skip" : s->misfire == 'o' ? "once" : "all"));
			if (fired == 0 && outcome == NULL)
				outcome = "missed";
		}
	}

	next = next_slot(s, now);
	values[0] = s->name;
	values[1] = TimestampTzGetDatum(next);
	nulls[1] = TIMESTAMP_IS_NOEND(next) ? 'n' : ' ';
	values[2] = TimestampTzGetDatum(s->last_fire_at);
	nulls[2] = s->last_fire_at != NO_SLOT ? ' ' : 'n';
	values[3] = Int64GetDatum(s->last_job_id);
	nulls[3] = s->last_job_id ? ' ' : 'n';
	values[4] = outcome ? CStringGetTextDatum(outcome) : (Datum) 0;
	nulls[4] = outcome ? ' ' : 'n';
	JobqPreparePlan(&plan_advance,
					"UPDATE jobq.schedule SET next_fire_at = $2, last_fire_at = $3,"
					" last_job_id = $4, last_outcome = coalesce($5, last_outcome),"
					" last_evaluated_at = pg_catalog.clock_timestamp()"
					" WHERE name = $1",
					5, argtypes);
	JobqExecutePlan(plan_advance, values, nulls, SPI_OK_UPDATE, 0);
	prune_events(s->name);
	return fired;
}

/* Read the schedule of SPI result row "row" (columns as in SCHEDULE_COLUMNS). */
#define SCHEDULE_COLUMNS \
	"name, cron, timezone, kind, payload, overlap, misfire, concurrency_key," \
	" next_fire_at, last_job_id, last_fire_at"

/* Parse what read_schedule read; errors if the zone is gone, for one. */
static void
prepare_schedule(Schedule *s)
{
	JobqParseCron(s->cron_text, &s->cron);
	s->tz = JobqLookupTimezone(s->tz_name);
}

static void
read_schedule(int row, Schedule *s)
{
	bool		isnull;
	Datum		d;

	s->name = datumCopy(JobqGetDatum(row, 1, &isnull), false, -1);
	s->name_str = TextDatumGetCString(s->name);
	s->cron_text = TextDatumGetCString(JobqGetDatum(row, 2, &isnull));
	s->tz_name = TextDatumGetCString(JobqGetDatum(row, 3, &isnull));
	s->kind = datumCopy(JobqGetDatum(row, 4, &isnull), false, -1);
	s->payload = datumCopy(JobqGetDatum(row, 5, &isnull), false, -1);
	s->overlap = TextDatumGetCString(JobqGetDatum(row, 6, &isnull))[0];
	s->misfire = TextDatumGetCString(JobqGetDatum(row, 7, &isnull))[0];
	d = JobqGetDatum(row, 8, &isnull);
	s->concurrency_key = isnull ? (Datum) 0 : datumCopy(d, false, -1);
	s->next_fire_at = DatumGetTimestampTz(JobqGetDatum(row, 9, &isnull));
	d = JobqGetDatum(row, 10, &isnull);
	s->last_job_id = isnull ? 0 : DatumGetInt64(d);
	d = JobqGetDatum(row, 11, &isnull);
	s->last_fire_at = isnull ? NO_SLOT : DatumGetTimestampTz(d);
}

/*
 * Record that a schedule could not be evaluated: log "edata" as a WARNING
 * with its SQLSTATE, record a "failed" event, and move next_fire_at.  The
 * failed subtransaction must have been rolled back.  Must run between
 * JobqBeginAccess and JobqEndAccess.
 */
static void
record_failure(Schedule *s, TimestampTz now, ErrorData *edata)
{
	Oid			argtypes[3] = {TEXTOID, TEXTOID, TIMESTAMPTZOID};
	Datum		values[3];
	TimestampTz next;

	Assert(JobqInsideAccess());

	ereport(WARNING,
			(errcode(edata->sqlerrcode),
			 errmsg("jobq schedule \"%s\" could not fire: %s", s->name_str,
					edata->message)));
	record_event(s, s->next_fire_at, "failed", 0, edata->message);

	/*
	 * A conflict or a shortage passes: the slots stay due for the next
	 * evaluation.  Otherwise try again at the next slot, or in a minute if
	 * there is none.
	 */
	if (edata->sqlerrcode == ERRCODE_T_R_SERIALIZATION_FAILURE ||
		edata->sqlerrcode == ERRCODE_T_R_DEADLOCK_DETECTED ||
		edata->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE ||
		ERRCODE_TO_CATEGORY(edata->sqlerrcode) == ERRCODE_INSUFFICIENT_RESOURCES)
		next = s->next_fire_at;
	else
		next = s->tz != NULL ? next_slot(s, now) : NO_SLOT;
	if (next == NO_SLOT || TIMESTAMP_IS_NOEND(next))
		next = now + 60 * USECS_PER_SEC;
	values[0] = s->name;
	values[1] = CStringGetTextDatum(edata->message);
	values[2] = TimestampTzGetDatum(next);
	JobqPreparePlan(&plan_failed,
					"UPDATE jobq.schedule SET last_outcome = 'failed: ' || $2,"
					" last_evaluated_at = pg_catalog.clock_timestamp(), next_fire_at = $3"
					" WHERE name = $1",
					3, argtypes);
	JobqExecutePlan(plan_failed, values, NULL, SPI_OK_UPDATE, 0);
}

/*
 * Evaluate one schedule in a subtransaction: a schedule that cannot fire
 * (its payload grew past jobq.max_payload_size, its time zone vanished...)
 * must not stop the others, nor the worker.  Its error is logged and
 * recorded as a "failed" event, and it moves on to its next slot.
 *
 * The catch block only takes the error and rolls the subtransaction back
 * (as PL/pgSQL's exception blocks do); the failure is recorded after
 * PG_END_TRY, in the outer transaction, where an error of that bookkeeping
 * is an ordinary error of the caller's.  Cancels, shutdowns and timeouts
 * are the caller's, not the schedule's: they are raised again.
 */
static int
evaluate_safely(Schedule *s, TimestampTz now)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile int fired = 0;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		prepare_schedule(s);
		fired = evaluate(s, now);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_END_TRY();

	if (edata == NULL)
	{
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		return fired;
	}

	if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
		ERRCODE_TO_CATEGORY(edata->sqlerrcode) == ERRCODE_OPERATOR_INTERVENTION)
		ReThrowError(edata);
	record_failure(s, now, edata);
	FreeErrorData(edata);
	return 0;
}

/*
 * Evaluate every due schedule at "now"; returns how many jobs were
 * enqueued.  A background worker passes from_worker: it evaluates only if
 * no other evaluator is at work, and skips schedules locked by one; SQL
 * callers wait for the rows instead, and name their role as "caller".
 * Must run between JobqBeginAccess and JobqEndAccess.
 */
int
JobqTickSchedules(TimestampTz now, bool from_worker, Oid caller)
{
	Oid			argtypes[2] = {TIMESTAMPTZOID, OIDOID};
	Datum		values[2] = {TimestampTzGetDatum(now), ObjectIdGetDatum(caller)};
	bool		current = JobqObjectsAreCurrent();
	SPIPlanPtr *plan;
	Schedule   *due;
	int			rows;
	int			fired = 0;
	int			i;

	Assert(JobqInsideAccess());

	if (from_worker)
	{
		LOCKTAG		tag;

		SET_LOCKTAG_JOBQ(tag, JOBQ_LOCK_SCHEDULER, 0);
		if (LockAcquire(&tag, ExclusiveLock, false, true) == LOCKACQUIRE_NOT_AVAIL)
			return 0;
	}

	/*
	 * Rows are read once, locked; each is then evaluated on its own.  A SQL
	 * caller evaluates only the schedules whose owner's privileges it has:
	 * with a "now" of its choosing it would otherwise fire other roles' slots
	 * early.  (Objects older than 0.3 have no owners.)
	 */
	if (from_worker && current)
		JobqPreparePlan(plan = &plan_due_worker,
						"SELECT " SCHEDULE_COLUMNS ", owner::pg_catalog.oid"
						" FROM jobq.schedule"
						" WHERE NOT paused AND next_fire_at <= $1"
						" ORDER BY next_fire_at FOR UPDATE SKIP LOCKED",
						1, argtypes);
	else if (from_worker)
		JobqPreparePlan(plan = &plan_due_worker_old,
						"SELECT " SCHEDULE_COLUMNS ", 0::pg_catalog.oid"
						" FROM jobq.schedule"
						" WHERE NOT paused AND next_fire_at <= $1"
						" ORDER BY next_fire_at FOR UPDATE SKIP LOCKED",
						1, argtypes);
	else if (current)
		JobqPreparePlan(plan = &plan_due_sql,
						"SELECT " SCHEDULE_COLUMNS ", owner::pg_catalog.oid"
						" FROM jobq.schedule"
						" WHERE NOT paused AND next_fire_at <= $1"
						"   AND pg_catalog.pg_has_role($2, owner::pg_catalog.oid, 'USAGE')"
						" ORDER BY next_fire_at FOR UPDATE",
						2, argtypes);
	else
		JobqPreparePlan(plan = &plan_due_sql_old,
						"SELECT " SCHEDULE_COLUMNS ", 0::pg_catalog.oid"
						" FROM jobq.schedule"
						" WHERE NOT paused AND next_fire_at <= $1"
						" ORDER BY next_fire_at FOR UPDATE",
						1, argtypes);
	rows = JobqExecutePlan(*plan, values, NULL, SPI_OK_SELECT, 0);
	due = palloc0(sizeof(Schedule) * Max(rows, 1));
	for (i = 0; i < rows; i++)
	{
		bool		isnull;

		read_schedule(i, &due[i]);
		due[i].owner = DatumGetObjectId(JobqGetDatum(i, 12, &isnull));
	}
	for (i = 0; i < rows; i++)
		fired += evaluate_safely(&due[i], now);
	pfree(due);
	return fired;
}

PG_FUNCTION_INFO_V1(jobq_schedule);

/*
 * jobq.schedule(name, cron, kind, payload, timezone, overlap, misfire,
 *				 concurrency_key, start_at)
 *
 * Create or replace a schedule; returns its next fire time.  Replacing
 * keeps the schedule's place (its next slot, last run and pause), due
 * slots included, unless the expression or the time zone changes or
 * start_at is given.
 */
Datum
jobq_schedule(PG_FUNCTION_ARGS)
{
	JobqAccess	access;
	char	   *name;
	char	   *cron_text;
	char	   *tz_name;
	JobqCron	cron;
	pg_tz	   *tz;
	Schedule	probe = {0};
	TimestampTz start_at;
	TimestampTz next;
	Oid			kind_types[1] = {TEXTOID};
	Oid			argtypes[12] = {TEXTOID, TEXTOID, TEXTOID, JSONBOID, TEXTOID, TEXTOID,
	TEXTOID, TEXTOID, TIMESTAMPTZOID, NAMEOID, BOOLOID, OIDOID};
	Datum		values[12];
	char		nulls[12] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool		isnull;
	bool		created;

	JobqRequirePrimary("jobq.schedule()");
	JobqCheckNotNull(fcinfo, 0, "name");
	JobqCheckNotNull(fcinfo, 1, "cron");
	JobqCheckNotNull(fcinfo, 2, "kind");
	JobqCheckNotNull(fcinfo, 3, "payload");
	JobqCheckNotNull(fcinfo, 4, "timezone");
	JobqCheckNotNull(fcinfo, 5, "overlap");
	JobqCheckNotNull(fcinfo, 6, "misfire");
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	JobqCheckName(name, "schedule", JOBQ_SCHEDULE_NAME_MAX);
	cron_text = text_to_cstring(PG_GETARG_TEXT_PP(1));
	JobqParseCron(cron_text, &cron);
	JobqCheckKindName(text_to_cstring(PG_GETARG_TEXT_PP(2)));
	JobqCheckJsonbSize(PG_GETARG_DATUM(3), "payload");
	tz_name = text_to_cstring(PG_GETARG_TEXT_PP(4));
	tz = JobqLookupTimezone(tz_name);
	(void) policy_arg(text_to_cstring(PG_GETARG_TEXT_PP(5)), "overlap", overlap_policies);
	(void) policy_arg(text_to_cstring(PG_GETARG_TEXT_PP(6)), "misfire", misfire_policies);
	if (!PG_ARGISNULL(7))
		JobqCheckText(text_to_cstring(PG_GETARG_TEXT_PP(7)), "concurrency key", JOBQ_KEY_MAX);
	start_at = PG_ARGISNULL(8) ? GetCurrentTransactionStartTimestamp() : PG_GETARG_TIMESTAMPTZ(8);
	if (TIMESTAMP_NOT_FINITE(start_at))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"start_at\" must be a finite timestamp")));
	probe.cron = cron;
	probe.tz = tz;
	next = next_slot(&probe, start_at - 1); /* a slot at start_at counts */
	if (TIMESTAMP_IS_NOEND(next))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cron expression \"%s\" never fires after %s", cron_text,
						timestamptz_to_str(start_at))));

	JobqRequireCurrentObjects("jobq.schedule()");
	JobqBeginAccess(&access);
	JobqPreparePlan(&plan_kind_exists,
					"SELECT FROM jobq.kind WHERE name = $1 FOR KEY SHARE", 1, kind_types);
	values[0] = PG_GETARG_DATUM(2);
	if (JobqExecutePlan(plan_kind_exists, values, NULL, SPI_OK_SELECT, 0) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("kind \"%s\" is not registered", text_to_cstring(PG_GETARG_TEXT_PP(2))),
				 errhint("Register it with jobq.register_kind() first.")));

	values[0] = PG_GETARG_DATUM(0);
	values[1] = PG_GETARG_DATUM(1);
	values[2] = PG_GETARG_DATUM(2);
	values[3] = PG_GETARG_DATUM(3);
	values[4] = PG_GETARG_DATUM(4);
	values[5] = PG_GETARG_DATUM(5);
	values[6] = PG_GETARG_DATUM(6);
	values[7] = PG_ARGISNULL(7) ? (Datum) 0 : PG_GETARG_DATUM(7);
	nulls[7] = PG_ARGISNULL(7) ? 'n' : ' ';
	values[8] = TimestampTzGetDatum(next);
	values[9] = JobqNameDatum(GetUserNameFromId(access.caller, false));
	values[10] = BoolGetDatum(!PG_ARGISNULL(8));
	values[11] = ObjectIdGetDatum(access.caller);

	/*
	 * Replacing another role's schedule needs its privileges.  The check is
	 * the upsert's, on the row it locked: a schedule made meanwhile by
	 * someone else is checked too.  A new row has xmax 0, a replaced one this
	 * transaction's id.
	 */
	JobqPreparePlan(&plan_upsert,
					"INSERT INTO jobq.schedule AS s (name, cron, kind, payload, timezone,"
					" overlap, misfire, concurrency_key, next_fire_at, created_by, owner)"
					" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $12::pg_catalog.regrole)"
					" ON CONFLICT (name) DO UPDATE SET cron = EXCLUDED.cron,"
					" kind = EXCLUDED.kind, payload = EXCLUDED.payload,"
					" timezone = EXCLUDED.timezone, overlap = EXCLUDED.overlap,"
					" misfire = EXCLUDED.misfire, concurrency_key = EXCLUDED.concurrency_key,"
					" next_fire_at = CASE WHEN s.cron = EXCLUDED.cron"
					"   AND s.timezone = EXCLUDED.timezone AND NOT $11"
					"   THEN s.next_fire_at ELSE EXCLUDED.next_fire_at END,"
					" updated_at = pg_catalog.now()"
					" WHERE pg_catalog.pg_has_role($12, s.owner::pg_catalog.oid, 'USAGE')"
					" RETURNING next_fire_at, s.xmax = '0'::pg_catalog.xid",
					12, argtypes);
	if (JobqExecutePlan(plan_upsert, values, nulls, SPI_OK_INSERT_RETURNING, 0) != 1)
	{
		Schedule	s = {0};

		s.name = values[0];
		s.name_str = name;
		s.owner = schedule_owner(values[0]);
		check_schedule_owner(&s, access.caller, "replace");
		elog(ERROR, "schedule \"%s\" was neither created nor replaced", name);
	}
	next = DatumGetTimestampTz(JobqGetDatum(0, 1, &isnull));
	/* A database without a worker then gets one for the first fire. */
	if (!isnull)
		JobqVisitAtCommit(next);
	created = JobqGetBool(0, 2);
	log_schedule_action(access.caller, created ? "schedule" : "schedule (replaced)",
						values[0], 0);
	JobqEndAccess(&access);
	PG_RETURN_TIMESTAMPTZ(next);
}

/* The owner of the schedule "name" (InvalidOid if there is none). */
static Oid
schedule_owner(Datum name)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {name};
	bool		isnull;

	JobqPreparePlan(&plan_owner,
					"SELECT owner::pg_catalog.oid FROM jobq.schedule WHERE name = $1",
					1, argtypes);
	if (JobqExecutePlan(plan_owner, values, NULL, SPI_OK_SELECT, 0) != 1)
		return InvalidOid;
	return DatumGetObjectId(JobqGetDatum(0, 1, &isnull));
}

/*
 * Raise 42501 unless the caller has the privileges of the schedule's owner
 * (as for kinds: the owner, its members, superusers).  "action" is what
 * the caller tried, for the message.
 */
static void
check_schedule_owner(const Schedule *s, Oid caller, const char *action)
{
	char	   *owner_name;

	if (has_privs_of_role(caller, s->owner))
		return;
	owner_name = GetUserNameFromId(s->owner, true);
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied to %s schedule \"%s\"", action, s->name_str),
			 owner_name ?
			 errdetail("Schedule \"%s\" belongs to role \"%s\".", s->name_str, owner_name) :
			 errdetail("The role that created schedule \"%s\" no longer exists.", s->name_str),
			 errhint("Only that role, its members and superusers may replace, pause, resume, run or drop it.")));
}

/*
 * Log a change of a schedule in jobq.operator_log, with the job it
 * enqueued if any.  Must run between JobqBeginAccess and JobqEndAccess.
 */
static void
log_schedule_action(Oid caller, const char *action, Datum name, int64 job_id)
{
	Oid			argtypes[4] = {NAMEOID, TEXTOID, INT8ARRAYOID, TEXTOID};
	Datum		values[4];
	Datum		id = Int64GetDatum(job_id);

	Assert(JobqInsideAccess());

	values[0] = JobqNameDatum(GetUserNameFromId(caller, false));
	values[1] = CStringGetTextDatum(action);
	values[2] = PointerGetDatum(construct_array(&id, job_id ? 1 : 0, INT8OID, 8,
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[3] = name;
	JobqPreparePlan(&plan_log,
					"INSERT INTO jobq.operator_action (role, action, job_ids, schedule)"
					" VALUES ($1, $2, $3, $4)",
					4, argtypes);
	JobqExecutePlan(plan_log, values, NULL, SPI_OK_INSERT, 0);
}

/* Raise the error for a schedule that does not exist. */
static void
report_no_schedule(Datum name)
{
	char	   *cname = TextDatumGetCString(name);

	JobqCheckName(cname, "schedule", JOBQ_SCHEDULE_NAME_MAX);
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("schedule \"%s\" does not exist", cname)));
}

/*
 * Read and lock the schedule "name", or raise that it does not exist;
 * raise 42501 unless the caller has its owner's privileges ("action" says
 * what it tried, for the message).  With "prepare", parse its expression
 * and zone too.  Needs the objects of 0.3 (owners): the caller checks.
 * Must run between JobqBeginAccess and JobqEndAccess.
 */
static void
lock_schedule(Datum name, Schedule *s, Oid caller, const char *action, bool prepare)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {name};
	bool		isnull;

	Assert(JobqInsideAccess());

	JobqPreparePlan(&plan_one,
					"SELECT " SCHEDULE_COLUMNS ", owner::pg_catalog.oid"
					" FROM jobq.schedule WHERE name = $1 FOR UPDATE",
					1, argtypes);
	if (JobqExecutePlan(plan_one, values, NULL, SPI_OK_SELECT, 0) != 1)
		report_no_schedule(name);
	read_schedule(0, s);
	s->owner = DatumGetObjectId(JobqGetDatum(0, 12, &isnull));
	check_schedule_owner(s, caller, action);
	if (prepare)
		prepare_schedule(s);
}

PG_FUNCTION_INFO_V1(jobq_unschedule);

/* jobq.unschedule(name): drop a schedule and its events; its jobs stay. */
Datum
jobq_unschedule(PG_FUNCTION_ARGS)
{
	JobqAccess	access;
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	Schedule	s = {0};

	JobqRequirePrimary("jobq.unschedule()");
	JobqCheckNotNull(fcinfo, 0, "name");
	values[0] = PG_GETARG_DATUM(0);
	JobqRequireCurrentObjects("jobq.unschedule()");
	JobqBeginAccess(&access);
	/* Not parsed: a schedule whose time zone is gone can still be dropped. */
	lock_schedule(values[0], &s, access.caller, "drop", false);
	JobqPreparePlan(&plan_unschedule,
					"WITH gone AS (DELETE FROM jobq.schedule WHERE name = $1 RETURNING name),"
					" events AS (DELETE FROM jobq.schedule_event"
					"   WHERE schedule IN (SELECT name FROM gone))"
					" SELECT name FROM gone",
					1, argtypes);
	if (JobqExecutePlan(plan_unschedule, values, NULL, SPI_OK_SELECT, 0) != 1)
		report_no_schedule(values[0]);
	log_schedule_action(access.caller, "unschedule", values[0], 0);
	JobqEndAccess(&access);
	PG_RETURN_VOID();
}

/*
 * Pause or resume a schedule.  Slots that pass while a schedule is paused
 * are not missed, they are not wanted: resuming starts at the next slot
 * after now.
 */
static void
set_schedule_paused(FunctionCallInfo fcinfo, bool paused)
{
	JobqAccess	access;
	Datum		values[1];
	Schedule	s = {0};

	JobqCheckNotNull(fcinfo, 0, "name");
	values[0] = PG_GETARG_DATUM(0);
	JobqRequireCurrentObjects(paused ? "jobq.pause_schedule()" : "jobq.resume_schedule()");
	JobqBeginAccess(&access);
	lock_schedule(values[0], &s, access.caller, paused ? "pause" : "resume", true);
	{
		Oid			types[3] = {TEXTOID, BOOLOID, TIMESTAMPTZOID};
		Datum		vals[3];
		char		nulls[3] = {' ', ' ', ' '};
		TimestampTz next = next_slot(&s, GetCurrentTransactionStartTimestamp());

		vals[0] = values[0];
		vals[1] = BoolGetDatum(paused);
		vals[2] = TimestampTzGetDatum(next);
		nulls[2] = paused || TIMESTAMP_IS_NOEND(next) ? 'n' : ' ';
		JobqPreparePlan(&plan_pause,
						"UPDATE jobq.schedule SET paused = $2,"
						" next_fire_at = CASE WHEN $2 OR NOT paused THEN next_fire_at ELSE $3 END,"
						" updated_at = pg_catalog.now()"
						" WHERE name = $1",
						3, types);
		JobqExecutePlan(plan_pause, vals, nulls, SPI_OK_UPDATE, 0);
		if (!paused && !TIMESTAMP_IS_NOEND(next))
			JobqVisitAtCommit(next);
	}
	record_event(&s, NO_SLOT, paused ? "paused" : "resumed", 0, NULL);
	prune_events(s.name);
	log_schedule_action(access.caller, paused ? "pause_schedule" : "resume_schedule",
						values[0], 0);
	JobqEndAccess(&access);
}

PG_FUNCTION_INFO_V1(jobq_pause_schedule);

/* jobq.pause_schedule(name): stop firing until resumed. */
Datum
jobq_pause_schedule(PG_FUNCTION_ARGS)
{
	JobqRequirePrimary("jobq.pause_schedule()");
	set_schedule_paused(fcinfo, true);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(jobq_resume_schedule);

/* jobq.resume_schedule(name): fire again, from the next slot after now. */
Datum
jobq_resume_schedule(PG_FUNCTION_ARGS)
{
	JobqRequirePrimary("jobq.resume_schedule()");
	set_schedule_paused(fcinfo, false);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(jobq_run_schedule_now);

/*
 * jobq.run_schedule_now(name)
 *
 * Enqueue one job of the schedule now, outside its slots, even if it is
 * paused, with the key "<name>@now:<time>"; returns its id.  It counts as
 * the schedule's latest job for the overlap policy.
 */
Datum
jobq_run_schedule_now(PG_FUNCTION_ARGS)
{
	JobqAccess	access;
	Oid			argtypes[2] = {TEXTOID, INT8OID};
	Datum		values[2];
	Schedule	s = {0};
	TimestampTz now = GetCurrentTimestamp();
	int64		job_id;

	JobqRequirePrimary("jobq.run_schedule_now()");
	JobqCheckNotNull(fcinfo, 0, "name");
	values[0] = PG_GETARG_DATUM(0);
	JobqRequireCurrentObjects("jobq.run_schedule_now()");
	JobqBeginAccess(&access);
	lock_schedule(values[0], &s, access.caller, "run", true);
	job_id = fire(&s, now, psprintf("%s@now:%s", s.name_str, timestamptz_to_str(now)));
	record_event(&s, now, "run_now", job_id, NULL);
	values[1] = Int64GetDatum(job_id);
	JobqPreparePlan(&plan_current,
					"UPDATE jobq.schedule SET last_job_id = $2, last_outcome = 'run_now'"
					" WHERE name = $1",
					2, argtypes);
	JobqExecutePlan(plan_current, values, NULL, SPI_OK_UPDATE, 0);
	prune_events(s.name);
	log_schedule_action(access.caller, "run_schedule_now", values[0], job_id);
	JobqEndAccess(&access);
	PG_RETURN_INT64(job_id);
}

PG_FUNCTION_INFO_V1(jobq_tick_schedules);

/*
 * jobq.tick_schedules(now)
 *
 * Evaluate every due schedule whose owner's privileges the caller has, as
 * the workers would at "now"; returns how many jobs were enqueued.  Tests
 * drive time with it; psql users can use it on servers without the
 * background workers.
 */
Datum
jobq_tick_schedules(PG_FUNCTION_ARGS)
{
	JobqAccess	access;
	TimestampTz now;
	int			fired;

	JobqRequirePrimary("jobq.tick_schedules()");
	JobqCheckNotNull(fcinfo, 0, "now");
	now = PG_GETARG_TIMESTAMPTZ(0);
	if (TIMESTAMP_NOT_FINITE(now))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"now\" must be a finite timestamp")));
	JobqBeginAccess(&access);
	fired = JobqTickSchedules(now, false, access.caller);
	JobqEndAccess(&access);
	PG_RETURN_INT32(fired);
}
