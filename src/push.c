/*-------------------------------------------------------------------------
 *
 * push.c
 *	  queue_push and queue_push_batch: allocate job ids from the queue's
 *	  sequence and insert the jobs into the block each id belongs to.
 *
 * A job is inserted once and never updated.  A job with a run_at in the
 * future also gets a first status row, "scheduled", so that pop's scan of
 * never-claimed jobs only ever sees jobs that are due.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/sequence.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "args.h"
#include "cache.h"
#include "claim.h"
#include "flow.h"
#include "note.h"
#include "privilege.h"
#include "rows.h"
#include "watermark.h"


PG_FUNCTION_INFO_V1(pgq_push);
PG_FUNCTION_INFO_V1(pgq_push_batch);

/* rows of one multi-insert at most */
#define PGQ_PUSH_CHUNK	1000

static const char *schedule_sql =
"INSERT INTO %2$s (queue_id, job_id, seq, state, attempt, fails, at, due_at)"
" SELECT $1, j.job_id, 1, 's', 0, 0, $3, $4 FROM %1$s j WHERE j.job_id = ANY ($2)";

/* the columns of the jobs of one push, one element per job */
typedef struct PushArgs
{
	Datum	   *keys;
	bool	   *key_nulls;
	Datum	   *priorities;
	Datum	   *payloads;
	Datum	   *tenants;
	bool	   *tenant_nulls;
} PushArgs;

/*
 * lane_shown
 *		Whether the lane index of a block (jobs, opened) shows the default
 *		lane (priority 0, no tenant) already: it holds every job, or a mark
 *		that another transaction committed.  What is seen is remembered: a
 *		block's jobs are never deleted.
 */
static bool
lane_shown(PgqBlock *block, Relation jobs)
{
	Snapshot	snap;
	Relation	lane;
	TupleTableSlot *slot;
	IndexScanDesc scan;

	if (block->lane_shown)
		return true;
	pgq_block_indexes(block);
	block->lane_shown = !block->lane_partial;
	if (block->lane_shown)
		return true;
	snap = RegisterSnapshot(GetLatestSnapshot());
	lane = index_open(block->jobs_lane, AccessShareLock);
	slot = table_slot_create(jobs, NULL);
	scan = pgq_lane_scan(jobs, lane, snap, 0, "", 0, 0);
	while (!block->lane_shown && index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		should_free;
		HeapTuple	tuple = ExecFetchSlotHeapTuple(slot, false, &should_free);

		/* a mark of this transaction's own may still roll back */
		block->lane_shown =
			!TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetXmin(tuple->t_data));
		if (should_free)
			heap_freetuple(tuple);
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(lane, AccessShareLock);
	UnregisterSnapshot(snap);
	return block->lane_shown;
}

/*
 * insert_jobs
 *		Insert n jobs, all of one block, straight into its jobs table
 *		(rows.c); and their scheduled status rows if they run later.  The
 *		first job of the default lane (priority 0, no tenant) is marked, to
 *		show the lane in the block's lane index (_block_tables), unless the
 *		index shows it already.
 */
static void
insert_jobs(PgqQueue *queue, PgqBlock *block, int n, Datum *ids, PushArgs *args,
			bool run_later, Datum run_at, TimestampTz now)
{
	Relation	rel = table_open(block->jobs_relid, RowExclusiveLock);
	int			nslots = Min(n, PGQ_PUSH_CHUNK);
	TupleTableSlot **slots;
	bool		default_seen = false;	/* a job of the default lane, marked or not */

	if (RelationGetDescr(rel)->natts != PGQ_JATT_LANE_MARK)
		elog(ERROR, "the jobs table of block %d of queue \"%s\" has %d columns, not %d",
			 block->block_no, queue->name, RelationGetDescr(rel)->natts, PGQ_JATT_LANE_MARK);
	slots = pgq_rows_slots(rel, nslots);
	for (int start = 0; start < n; start += nslots)
	{
		int			m = Min(nslots, n - start);

		for (int k = 0; k < m; k++)
		{
			TupleTableSlot *slot = slots[k];
			int			i = start + k;

			ExecClearTuple(slot);
			memset(slot->tts_isnull, false, sizeof(bool) * PGQ_JATT_LANE_MARK);
			slot->tts_values[0] = Int32GetDatum(queue->queue_id);
			slot->tts_values[PGQ_JATT_JOB_ID - 1] = ids[i];
			slot->tts_values[PGQ_JATT_KEY - 1] = args->keys[i];
			slot->tts_isnull[PGQ_JATT_KEY - 1] = args->key_nulls[i];
			slot->tts_values[PGQ_JATT_PRIORITY - 1] = args->priorities[i];
			slot->tts_values[PGQ_JATT_RUN_AT - 1] = run_at;
			slot->tts_isnull[PGQ_JATT_RUN_AT - 1] = !run_later;
			slot->tts_values[PGQ_JATT_ENQUEUED_AT - 1] = TimestampTzGetDatum(now);
			slot->tts_values[PGQ_JATT_PAYLOAD - 1] = args->payloads[i];
			slot->tts_values[PGQ_JATT_TENANT - 1] = args->tenants[i];
			slot->tts_isnull[PGQ_JATT_TENANT - 1] = args->tenant_nulls[i];
			/* marked: true; not: null */
			slot->tts_values[PGQ_JATT_LANE_MARK - 1] = BoolGetDatum(true);
			slot->tts_isnull[PGQ_JATT_LANE_MARK - 1] = true;
			if (!default_seen && args->tenant_nulls[i] && DatumGetInt32(args->priorities[i]) == 0)
			{
				default_seen = true;
				slot->tts_isnull[PGQ_JATT_LANE_MARK - 1] = lane_shown(block, rel);
			}
			ExecStoreVirtualTuple(slot);
		}
		pgq_rows_insert(rel, slots, m);
	}
	pgq_rows_free(slots, nslots);
	table_close(rel, NoLock);

	if (run_later)
	{
		Oid			stypes[4] = {INT4OID, INT8ARRAYOID, TIMESTAMPTZOID, TIMESTAMPTZOID};
		Datum		svalues[4];
		SPIPlanPtr	plan;
		int			rc;

		svalues[0] = Int32GetDatum(queue->queue_id);
		svalues[1] = PointerGetDatum(construct_array(ids, n, INT8OID, 8, FLOAT8PASSBYVAL,
													 TYPALIGN_DOUBLE));
		svalues[2] = TimestampTzGetDatum(now);
		svalues[3] = run_at;
		plan = pgq_block_plan(queue, block, PGQ_PLAN_SCHEDULE, schedule_sql, 4, stypes);
		rc = SPI_execute_plan(plan, svalues, NULL, false, 0);
		if (rc != SPI_OK_INSERT)
			elog(ERROR, "could not schedule jobs of queue \"%s\": %s",
				 queue->name, SPI_result_code_string(rc));
	}
}

/*
 * push_jobs
 *		Allocate ids for n jobs and insert them block by block.  ids_out
 *		receives the ids in input order.
 */
static void
push_jobs(text *name, int n, PushArgs *args, bool has_run_at, Datum run_at, Datum *ids_out)
{
	PgqQueue   *queue;
	TimestampTz now = GetCurrentTimestamp();
	bool		run_later;
	int			start = 0;

	for (int i = 0; i < n; i++)
	{
		char		buf[NAMEDATALEN];

		pgq_check_payload(args->payloads[i]);
		if (!args->tenant_nulls[i])
			pgq_check_tenant(DatumGetTextPP(args->tenants[i]), buf);
	}

	SPI_connect();
	queue = pgq_queue_get(name);
	pgq_require_right(queue, PGQ_RIGHT_PUSH);
	run_later = has_run_at && DatumGetTimestampTz(run_at) > now;
	pgq_flow_push(queue, n, args->key_nulls, args->tenants, args->tenant_nulls,
				  args->priorities);

	/* publish the open push before the first id is handed out (watermark.c) */
	pgq_push_begin(queue);
	for (int i = 0; i < n; i++)
		ids_out[i] = DirectFunctionCall1(nextval_oid, ObjectIdGetDatum(queue->seq_relid));
	pgq_push_allocated(DatumGetInt64(ids_out[0]));

	/* ids come out in ascending order, so each block is one run of them */
	while (start < n)
	{
		PgqBlock   *block = pgq_block_for_push(&queue, DatumGetInt64(ids_out[start]));
		int			end = start;
		PushArgs	part;

		while (end < n && DatumGetInt64(ids_out[end]) <= block->last_id)
			end++;
		part.keys = args->keys + start;
		part.key_nulls = args->key_nulls + start;
		part.priorities = args->priorities + start;
		part.payloads = args->payloads + start;
		part.tenants = args->tenants + start;
		part.tenant_nulls = args->tenant_nulls + start;
		insert_jobs(queue, block, end - start, ids_out + start, &part, run_later, run_at, now);
		start = end;
	}
	pgq_note(queue, PGQ_COUNT_PUSHED, n);
	if (run_later)
		pgq_note_due(queue, DatumGetTimestampTz(run_at));
	if (queue->notify)
		Async_Notify("pgqueue", queue->name);
	SPI_finish();
}

/*
 * pgq_push
 *		SQL: queue_push(queue, payload, key, priority, run_at, tenant)
 *		returns the id of the new job.
 */
Datum
pgq_push(PG_FUNCTION_ARGS)
{
	Datum		key;
	bool		key_null = PG_ARGISNULL(2);
	Datum		priority;
	Datum		payload;
	Datum		tenant;
	bool		tenant_null = PG_ARGISNULL(5);
	Datum		id;
	PushArgs	args;
	PgqApiCall	call;

	pgq_require_arg(fcinfo, 0, "queue name");
	pgq_require_arg(fcinfo, 1, "payload");
	pgq_require_arg(fcinfo, 3, "priority");
	PreventCommandIfReadOnly("queue_push()");

	key = key_null ? (Datum) 0 : PG_GETARG_DATUM(2);
	priority = PG_GETARG_DATUM(3);
	payload = PointerGetDatum(PG_GETARG_JSONB_P(1));
	tenant = tenant_null ? (Datum) 0 : PG_GETARG_DATUM(5);
	args.keys = &key;
	args.key_nulls = &key_null;
	args.priorities = &priority;
	args.payloads = &payload;
	args.tenants = &tenant;
	args.tenant_nulls = &tenant_null;
	pgq_api_enter(fcinfo, &call);
	push_jobs(PG_GETARG_TEXT_PP(0), 1, &args,
			  !PG_ARGISNULL(4), PG_ARGISNULL(4) ? (Datum) 0 : PG_GETARG_DATUM(4), &id);
	pgq_api_leave(&call);
	PG_RETURN_DATUM(id);
}

/*
 * deconstruct_arg
 *		Split a one-dimensional array argument into its elements.
 */
static int
deconstruct_arg(FunctionCallInfo fcinfo, int argno, const char *name, Oid elemtype,
				int16 elmlen, bool elmbyval, char elmalign,
				Datum **elems, bool **nulls)
{
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(argno);
	int			n;

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("%s must be a one-dimensional array", name)));
	deconstruct_array(arr, elemtype, elmlen, elmbyval, elmalign, elems, nulls, &n);
	return n;
}

/*
 * optional_text_array
 *		A text array argument with one element per job, or all nulls when
 *		the argument is null.
 */
static void
optional_text_array(FunctionCallInfo fcinfo, int argno, const char *name, int n,
					Datum **elems, bool **nulls)
{
	if (PG_ARGISNULL(argno))
	{
		*elems = palloc0(sizeof(Datum) * Max(n, 1));
		*nulls = palloc(sizeof(bool) * Max(n, 1));
		memset(*nulls, true, sizeof(bool) * Max(n, 1));
	}
	else if (deconstruct_arg(fcinfo, argno, name, TEXTOID, -1, false, TYPALIGN_INT,
							 elems, nulls) != n)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("%s and payloads must have the same length", name)));
}

/*
 * pgq_push_batch
 *		SQL: queue_push_batch(queue, payloads, keys, priorities, run_at,
 *		tenants) returns the ids of the new jobs, in the order of payloads.
 */
Datum
pgq_push_batch(PG_FUNCTION_ARGS)
{
	Datum	   *payloads;
	bool	   *payload_nulls;
	Datum	   *priorities;
	bool	   *priority_nulls;
	Datum	   *ids;
	int			n;
	PushArgs	args;
	PgqApiCall	call;

	pgq_require_arg(fcinfo, 0, "queue name");
	pgq_require_arg(fcinfo, 1, "payloads");
	PreventCommandIfReadOnly("queue_push_batch()");

	n = deconstruct_arg(fcinfo, 1, "payloads", JSONBOID, -1, false, TYPALIGN_INT,
						&payloads, &payload_nulls);
	for (int i = 0; i < n; i++)
		if (payload_nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("payloads must not contain null elements"),
					 errdetail("Element %d is null.", i + 1)));

	optional_text_array(fcinfo, 2, "keys", n, &args.keys, &args.key_nulls);
	optional_text_array(fcinfo, 5, "tenants", n, &args.tenants, &args.tenant_nulls);

	if (PG_ARGISNULL(3))
	{
		priorities = palloc0(sizeof(Datum) * Max(n, 1));
		for (int i = 0; i < n; i++)
			priorities[i] = Int32GetDatum(0);
	}
	else
	{
		if (deconstruct_arg(fcinfo, 3, "priorities", INT4OID, 4, true, TYPALIGN_INT,
							&priorities, &priority_nulls) != n)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("priorities and payloads must have the same length")));
		for (int i = 0; i < n; i++)
			if (priority_nulls[i])
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("priorities must not contain null elements"),
						 errdetail("Element %d is null.", i + 1)));
	}

	ids = palloc(sizeof(Datum) * Max(n, 1));
	args.priorities = priorities;
	args.payloads = payloads;
	pgq_api_enter(fcinfo, &call);
	if (n > 0)
		push_jobs(PG_GETARG_TEXT_PP(0), n, &args,
				  !PG_ARGISNULL(4), PG_ARGISNULL(4) ? (Datum) 0 : PG_GETARG_DATUM(4), ids);
	else
	{
		/* still reject an unknown queue, or one the caller may not push to */
		SPI_connect();
		pgq_require_right(pgq_queue_get(PG_GETARG_TEXT_PP(0)), PGQ_RIGHT_PUSH);
		SPI_finish();
	}
	pgq_api_leave(&call);
	PG_RETURN_ARRAYTYPE_P(construct_array(ids, n, INT8OID, 8, FLOAT8PASSBYVAL,
										  TYPALIGN_DOUBLE));
}
