/*-------------------------------------------------------------------------
 *
 * src/job_rows.c
 *		Writing jobq.job's rows without the executor.
 *
 * Enqueue inserts its rows the way COPY does (enqueue.c), and the batch
 * completions of the workers and of transaction-scoped claims update the
 * row versions their transaction locked the same way: fetched by TID,
 * rewritten with heap_update, their index entries inserted as the
 * executor's UPDATE would.  The executor's UPDATE ... FROM unnest(...) of
 * a batch cost about a third of a claim and completion per job in plan
 * nodes, projections and a join, for what is here a fetch and a copy.
 * jobq.job has no CHECK constraints and no generated columns, and its one
 * trigger, on changes of state of jobs that others wait for, is called
 * here directly (JobqDependenciesCompleted), so nothing of the UPDATE is
 * skipped: heap_update keeps HOT chains, the TOAST pointers of unchanged
 * values, predicate locks and the statistics, and the index entries get
 * the executor's hints and its unique checks, but for the primary key's,
 * which a completion cannot break (insert_index_entries).
 *
 * This file also keeps what both need: the compiled predicates of
 * jobq.job's partial indexes, from one statement to the next.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/pg_enum.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "nodes/bitmapset.h"
#include "optimizer/optimizer.h"
#include "storage/bufmgr.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "dependencies.h"
#include "job_rows.h"
#include "jobq.h"

/* Attribute number (1-based) of a column of jobq.job; ERROR if missing. */
AttrNumber
JobqJobAttnum(TupleDesc desc, const char *name)
{
	int			i;

	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return att->attnum;
	}
	elog(ERROR, "jobq.job has no column \"%s\"", name);
	return InvalidAttrNumber;	/* keep compiler quiet */
}

/* The oid of a label of jobq.job_state (in schema nspid), or InvalidOid. */
Oid
JobqJobStateOid(Oid nspid, const char *label)
{
	Oid			type = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
									   CStringGetDatum("job_state"), ObjectIdGetDatum(nspid));

	if (!OidIsValid(type))
		return InvalidOid;
	return GetSysCacheOid2(ENUMTYPOIDNAME, Anum_pg_enum_oid, ObjectIdGetDatum(type),
						   CStringGetDatum(label));
}

/*
 * The compiled predicates of jobq.job's partial indexes, kept from one
 * write to the next: PostgreSQL compiles them again in every statement
 * that inserts, which cost a single enqueue an eighth of its instructions.
 * A relcache invalidation of jobq.job (an index made or dropped, the table
 * dropped) makes them stale; they are dropped at the next write, never
 * during one.
 */
typedef struct CachedPredicate
{
	Oid			index;
	ExprState  *state;
} CachedPredicate;

static MemoryContext predicate_cxt = NULL;
static CachedPredicate *predicates = NULL;
static int	npredicates = 0;
static int	maxpredicates = 0;
static Oid	predicates_relid = InvalidOid;
static bool predicates_stale = false;

static void
mark_predicates_stale(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == predicates_relid)
		predicates_stale = true;
}

/* Give rri's partial indexes their cached predicates, compiling the missing. */
void
JobqUseCachedPredicates(ResultRelInfo *rri)
{
	Oid			relid = RelationGetRelid(rri->ri_RelationDesc);
	int			i;
	int			j;

	if (predicate_cxt == NULL)
	{
		predicate_cxt = AllocSetContextCreate(CacheMemoryContext, "jobq index predicates",
											  ALLOCSET_SMALL_SIZES);
		CacheRegisterRelcacheCallback(mark_predicates_stale, (Datum) 0);
	}
	if (predicates_stale || relid != predicates_relid)
	{
		MemoryContextReset(predicate_cxt);
		predicates = NULL;
		npredicates = maxpredicates = 0;
		predicates_relid = relid;
		predicates_stale = false;
	}
	for (i = 0; i < rri->ri_NumIndices; i++)
	{
		IndexInfo  *info = rri->ri_IndexRelationInfo[i];
		Oid			index = RelationGetRelid(rri->ri_IndexRelationDescs[i]);

		if (info->ii_Predicate == NIL)
			continue;
		for (j = 0; j < npredicates && predicates[j].index != index; j++)
			;
		if (j == npredicates)
		{
			MemoryContext caller_cxt = MemoryContextSwitchTo(predicate_cxt);

			if (npredicates == maxpredicates)
			{
				maxpredicates = Max(8, maxpredicates * 2);
				predicates = predicates == NULL ?
					palloc(sizeof(CachedPredicate) * maxpredicates) :
					repalloc(predicates, sizeof(CachedPredicate) * maxpredicates);
			}
			predicates[j].index = index;

			/*
			 * Compile a copy made here: the planner keeps the constants'
			 * values where it found them, and ii_Predicate goes with the
			 * statement.
			 */
			predicates[j].state =
				ExecInitQual((List *) expression_planner((Expr *) copyObject(info->ii_Predicate)),
							 NULL);
			npredicates++;
			MemoryContextSwitchTo(caller_cxt);
		}
		info->ii_PredicateState = predicates[j].state;
	}
}

/* The columns of jobq.job a completion reads or sets. */
typedef struct CompletionColumns
{
	AttrNumber	id;
	AttrNumber	state;
	AttrNumber	lane;
	AttrNumber	attempt;
	AttrNumber	last_error;
	AttrNumber	started_at;
	AttrNumber	finished_at;
	AttrNumber	worker;
	AttrNumber	result;
	AttrNumber	queue_id;
	AttrNumber	kind;
	AttrNumber	concurrency_key;
	AttrNumber	has_dependents; /* InvalidAttrNumber before 0.3 */
} CompletionColumns;

static CompletionColumns
completion_columns(TupleDesc desc)
{
	CompletionColumns c;

	c.id = JobqJobAttnum(desc, "id");
	c.state = JobqJobAttnum(desc, "state");
	c.lane = JobqJobAttnum(desc, "lane");
	c.attempt = JobqJobAttnum(desc, "attempt");
	c.last_error = JobqJobAttnum(desc, "last_error");
	c.started_at = JobqJobAttnum(desc, "started_at");
	c.finished_at = JobqJobAttnum(desc, "finished_at");
	c.worker = JobqJobAttnum(desc, "worker");
	c.result = JobqJobAttnum(desc, "result");
	c.queue_id = JobqJobAttnum(desc, "queue_id");
	c.kind = JobqJobAttnum(desc, "kind");
	c.concurrency_key = JobqJobAttnum(desc, "concurrency_key");
	c.has_dependents = JobqObjectsAreCurrent() ?
		JobqJobAttnum(desc, "has_dependents") : InvalidAttrNumber;
	return c;
}

/*
 * Tell each index whether a completion leaves its columns as they were,
 * as the executor's UPDATE works out from the columns it sets: then a
 * B-tree may first delete the index's entries of older row versions
 * instead of splitting a page (bottom-up deletion).  An expression index
 * is taken to change.
 */
static void
mark_unchanged_indexes(ResultRelInfo *rri, const CompletionColumns *c)
{
	Bitmapset  *set = NULL;
	int			i;
	int			k;

	set = bms_add_member(set, c->state);
	set = bms_add_member(set, c->lane);
	set = bms_add_member(set, c->attempt);
	set = bms_add_member(set, c->last_error);
	set = bms_add_member(set, c->started_at);
	set = bms_add_member(set, c->finished_at);
	set = bms_add_member(set, c->worker);
	set = bms_add_member(set, c->result);
	for (i = 0; i < rri->ri_NumIndices; i++)
	{
		IndexInfo  *info = rri->ri_IndexRelationInfo[i];
		bool		unchanged = info->ii_Expressions == NIL;

		for (k = 0; unchanged && k < info->ii_NumIndexAttrs; k++)
			if (bms_is_member(info->ii_IndexAttrNumbers[k], set))
				unchanged = false;
		info->ii_CheckedUnchanged = true;
		info->ii_IndexUnchanged = unchanged;
	}
	bms_free(set);
}

/*
 * Whether insert_index_entries may insert rri's index entries: no index
 * has an exclusion constraint or a deferred uniqueness, which the
 * executor's own path handles.
 */
static bool
indexes_are_plain(ResultRelInfo *rri)
{
	int			i;

	for (i = 0; i < rri->ri_NumIndices; i++)
	{
		Relation	index = rri->ri_IndexRelationDescs[i];

		if (rri->ri_IndexRelationInfo[i]->ii_ExclusionOps != NULL ||
			(index->rd_index->indisunique && !index->rd_index->indimmediate))
			return false;
	}
	return true;
}

/*
 * Insert the index entries of a completed job's new row version as
 * ExecInsertIndexTuples would, less one check: a unique index whose
 * columns the completion leaves as they were, with no predicate (the
 * primary key), is not checked again.  The new version has the key of the
 * version it replaces, which this transaction holds locked and which was
 * unique when it was written; another transaction inserting that key
 * meets this one's entries and waits for it.  The check fetched the old
 * version from the heap once per job.  Needs the predicates of
 * JobqUseCachedPredicates and the hints of mark_unchanged_indexes.
 */
static void
insert_index_entries(ResultRelInfo *rri, TupleTableSlot *slot, EState *estate)
{
	ExprContext *econtext = GetPerTupleExprContext(estate);
	Datum		values[INDEX_MAX_KEYS];
	bool		isnull[INDEX_MAX_KEYS];
	int			i;

	econtext->ecxt_scantuple = slot;
	for (i = 0; i < rri->ri_NumIndices; i++)
	{
		Relation	index = rri->ri_IndexRelationDescs[i];
		IndexInfo  *info = rri->ri_IndexRelationInfo[i];
		IndexUniqueCheck check = UNIQUE_CHECK_NO;

		if (index == NULL || !info->ii_ReadyForInserts)
			continue;
		if (info->ii_Predicate != NIL && !ExecQual(info->ii_PredicateState, econtext))
			continue;
		FormIndexDatum(info, slot, estate, values, isnull);
		if (index->rd_index->indisunique &&
			!(info->ii_IndexUnchanged && info->ii_Predicate == NIL))
			check = UNIQUE_CHECK_YES;
		(void) index_insert(index, values, isnull, &slot->tts_tid, rri->ri_RelationDesc,
							check, info->ii_IndexUnchanged, info);
	}
}

/*
 * Complete the n given jobs by the row versions this transaction locked
 * (rows[i].tid), each with its attempt charged, result, start and worker,
 * as one UPDATE would.  A job whose version at that TID this transaction
 * no longer sees (its row changed since, a handler wrote its own job's
 * row), or, with only_ready, that is no longer pending and ready, is left
 * alone with rows[i].completed false: the caller completes it by id, or
 * reports it.  Returns how many it completed.  Inside access.
 */
int
JobqCompleteRowsByTid(JobqRowCompletion *rows, int n, bool only_ready)
{
	MemoryContext caller_cxt = CurrentMemoryContext;
	Oid			nspid = JobqRequireExtension()->schema;
	Oid			job_relid = get_relname_relid("job", nspid);
	Oid			state_pending = JobqJobStateOid(nspid, "pending");
	Oid			state_completed = JobqJobStateOid(nspid, "completed");
	Relation	rel;
	TupleDesc	desc;
	CompletionColumns c;
	EState	   *estate;
	ResultRelInfo *rri;
	TupleTableSlot *slot;
	Snapshot	snapshot;
	CommandId	cid;
	Datum	   *values;
	bool	   *isnull;
	int64	   *awaited;		/* completed jobs that others wait for */
	int			nawaited = 0;
	int			done = 0;
	bool		plain_indexes;
	int			i;

	Assert(JobqInsideAccess());
	if (!OidIsValid(job_relid) || !OidIsValid(state_pending) || !OidIsValid(state_completed))
		elog(ERROR, "jobq's tables are not as expected");

	/*
	 * See this transaction's writes so far, with the snapshot an UPDATE run
	 * through SPI here would have: a new one in READ COMMITTED, the
	 * transaction's otherwise.
	 */
	CommandCounterIncrement();
	PushActiveSnapshot(GetTransactionSnapshot());
	UpdateActiveSnapshotCommandId();
	snapshot = GetActiveSnapshot();
	cid = GetCurrentCommandId(true);

	rel = table_open(job_relid, RowExclusiveLock);
	desc = RelationGetDescr(rel);
	c = completion_columns(desc);
	estate = CreateExecutorState();
	rri = makeNode(ResultRelInfo);
	InitResultRelInfo(rri, rel, 1, NULL, 0);
	ExecOpenIndices(rri, false);
	JobqUseCachedPredicates(rri);
	mark_unchanged_indexes(rri, &c);
	plain_indexes = indexes_are_plain(rri);
	slot = MakeSingleTupleTableSlot(desc, &TTSOpsHeapTuple);
	values = palloc(sizeof(Datum) * desc->natts);
	isnull = palloc(sizeof(bool) * desc->natts);
	awaited = palloc(sizeof(int64) * Max(n, 1));

	for (i = 0; i < n; i++)
	{
		JobqRowCompletion *row = &rows[i];
		HeapTupleData oldtup;
		HeapTuple	newtup;
		Buffer		buffer;
		TM_Result	tm;
		TM_FailureData tmfd;
		LockTupleMode lockmode;

		row->completed = false;
		if (!ItemPointerIsValid(&row->tid))
			continue;
		ResetPerTupleExprContext(estate);
		MemoryContextSwitchTo(GetPerTupleMemoryContext(estate));

		/* The version this transaction sees: the one locked, or none. */
		oldtup.t_self = row->tid;
		if (!heap_fetch(rel, snapshot, &oldtup, &buffer, false))
		{
			MemoryContextSwitchTo(caller_cxt);
			continue;
		}
		heap_deform_tuple(&oldtup, desc, values, isnull);
		if (DatumGetInt64(values[c.id - 1]) != row->id ||
			(only_ready &&
			 (DatumGetObjectId(values[c.state - 1]) != state_pending ||
			  isnull[c.lane - 1] || DatumGetChar(values[c.lane - 1]) != 'r')))
		{
			ReleaseBuffer(buffer);
			MemoryContextSwitchTo(caller_cxt);
			continue;
		}
		row->has_concurrency_key = !isnull[c.concurrency_key - 1];
		row->queue_id = DatumGetInt32(values[c.queue_id - 1]);
		row->kind = MemoryContextStrdup(caller_cxt, TextDatumGetCString(values[c.kind - 1]));
		if (c.has_dependents != InvalidAttrNumber && !isnull[c.has_dependents - 1] &&
			DatumGetBool(values[c.has_dependents - 1]))
		{
			awaited[nawaited++] = row->id;
		}

		values[c.state - 1] = ObjectIdGetDatum(state_completed);
		isnull[c.lane - 1] = true;
		values[c.attempt - 1] = Int32GetDatum(DatumGetInt32(values[c.attempt - 1]) + 1);
		isnull[c.last_error - 1] = true;
		values[c.started_at - 1] = TimestampTzGetDatum(row->started_at);
		isnull[c.started_at - 1] = false;
		values[c.finished_at - 1] = TimestampTzGetDatum(GetCurrentTimestamp());
		isnull[c.finished_at - 1] = false;
		isnull[c.worker - 1] = row->worker == NULL;
		if (row->worker != NULL)
			values[c.worker - 1] = CStringGetTextDatum(row->worker);
		values[c.result - 1] = row->result;
		isnull[c.result - 1] = row->result_isnull;
		/* Formed while the page is pinned: values point into it. */
		newtup = heap_form_tuple(desc, values, isnull);
		ReleaseBuffer(buffer);

		/* This transaction holds the row's lock: nobody else changed it. */
		tm = heap_update(rel, &row->tid, newtup, cid, InvalidSnapshot, true, &tmfd, &lockmode);
		if (tm != TM_Ok)
			elog(ERROR, "jobq could not complete job %lld: its row changed (%d)",
				 (long long) row->id, (int) tm);
		if (!HeapTupleIsHeapOnly(newtup))
		{
			ExecStoreHeapTuple(newtup, slot, false);
			if (plain_indexes)
				insert_index_entries(rri, slot, estate);
			else
				list_free(ExecInsertIndexTuples(rri, slot, estate, true, false, NULL, NIL));
			ExecClearTuple(slot);
		}
		MemoryContextSwitchTo(caller_cxt);
		row->completed = true;
		done++;
	}

	pfree(values);
	pfree(isnull);
	ExecDropSingleTupleTableSlot(slot);
	ExecCloseIndices(rri);
	FreeExecutorState(estate);
	table_close(rel, NoLock);
	PopActiveSnapshot();
	/* Later statements of this transaction see the completions. */
	CommandCounterIncrement();
	/* What the trigger on jobq.job would do for them. */
	JobqDependenciesCompleted(nawaited, awaited);
	pfree(awaited);
	return done;
}
