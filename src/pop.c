/*-------------------------------------------------------------------------
 *
 * pop.c
 *	  queue_pop: claim up to n available jobs under a lease.
 *
 * A claim is a compare-and-append: the job row is locked with FOR UPDATE
 * SKIP LOCKED (so consumers pass over each other's claims instead of
 * waiting), then status row seq + 1 is inserted with ON CONFLICT DO
 * NOTHING.  A consumer whose snapshot predates another consumer's committed
 * claim finds the row unlocked but loses on the unique (job_id, seq) index,
 * so no job is ever leased twice.  If the claiming transaction rolls back,
 * its status row and row lock vanish together and the job is available at
 * once.
 *
 * Order: higher priority first; within a priority, older blocks first; in a
 * block, due retried, released and scheduled jobs before never-claimed ones,
 * each by job id.  Each block is read per priority ("lane"), so a scan never
 * walks other priorities' jobs; both the jobs and the status side of a
 * never-claimed scan start at the lane's watermark ($4), so a scan does not
 * walk the status rows of the jobs claimed before it either.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"

#include "pgqueue.h"

PG_FUNCTION_INFO_V1(pgq_pop);

/* parameters shared by both claim statements */
#define CLAIM_NARGS 6
static Oid	claim_argtypes[CLAIM_NARGS] = {
	TIMESTAMPTZOID,				/* $1 now */
	INT4OID,					/* $2 priority */
	INT4OID,					/* $3 how many */
	INT8OID,					/* $4 lowest id that may be unclaimed */
	INT4OID,					/* $5 queue id */
	INTERVALOID					/* $6 lease */
};

static const char *lanes_sql =
"WITH RECURSIVE l(p) AS ("
"  SELECT max(priority) FROM %1$s"
"  UNION ALL"
"  SELECT (SELECT max(priority) FROM %1$s WHERE priority < l.p) FROM l WHERE l.p IS NOT NULL)"
" SELECT p FROM l WHERE p IS NOT NULL";

static const char *claim_waiting_sql =
"WITH c AS ("
"  SELECT j.job_id, j.key, j.payload, j.priority, j.enqueued_at,"
"         s.seq, s.attempt, s.fails, s.error"
"  FROM %2$s s JOIN %1$s j ON j.job_id = s.job_id"
"  WHERE s.state IN ('a', 's', 'f') AND s.due_at <= $1 AND j.priority = $2"
"    AND NOT EXISTS (SELECT 1 FROM %2$s n WHERE n.job_id = s.job_id AND n.seq > s.seq)"
"  ORDER BY s.job_id LIMIT $3"
"  FOR UPDATE OF j SKIP LOCKED),"
" i AS ("
"  INSERT INTO %2$s (queue_id, job_id, seq, state, attempt, fails, at, due_at, error)"
"  SELECT $5, c.job_id, c.seq + 1, 'e', c.attempt + 1, c.fails, $1, $1 + $6, c.error FROM c"
"  ON CONFLICT DO NOTHING"
"  RETURNING job_id, attempt, due_at)"
" SELECT c.job_id, c.key, c.payload, c.priority, i.attempt, c.enqueued_at, i.due_at"
" FROM c LEFT JOIN i ON i.job_id = c.job_id ORDER BY c.job_id";

static const char *first_unclaimed_sql =
"SELECT j.job_id FROM %1$s j"
" WHERE j.priority = $2 AND j.job_id >= $4"
"   AND NOT EXISTS (SELECT 1 FROM %2$s s WHERE s.job_id = j.job_id AND s.job_id >= $4)"
" ORDER BY j.job_id LIMIT 1";

static const char *claim_fresh_sql =
"WITH c AS ("
"  SELECT j.job_id, j.key, j.payload, j.priority, j.enqueued_at"
"  FROM %1$s j"
"  WHERE j.priority = $2 AND j.job_id >= $4"
"    AND NOT EXISTS (SELECT 1 FROM %2$s s WHERE s.job_id = j.job_id AND s.job_id >= $4)"
"  ORDER BY j.job_id LIMIT $3"
"  FOR UPDATE SKIP LOCKED),"
" i AS ("
"  INSERT INTO %2$s (queue_id, job_id, seq, state, attempt, fails, at, due_at)"
"  SELECT $5, c.job_id, 1, 'e', 1, 0, $1, $1 + $6 FROM c"
"  ON CONFLICT DO NOTHING"
"  RETURNING job_id, attempt, due_at)"
" SELECT c.job_id, c.key, c.payload, c.priority, i.attempt, c.enqueued_at, i.due_at"
" FROM c LEFT JOIN i ON i.job_id = c.job_id ORDER BY c.job_id";

/* rounds of one claim statement that lost jobs to concurrent claims */
#define PGQ_CLAIM_TRIES 8

/* one lane: the jobs of one priority in one block */
typedef struct Lane
{
	int32		priority;
	int			block;			/* index into queue->blocks */
	int64		watermark;		/* no unclaimed job of the lane below this */
} Lane;

/*
 * lane_cmp
 *		qsort order of lanes: priority descending, then block ascending.
 */
static int
lane_cmp(const void *a, const void *b)
{
	const Lane *la = a;
	const Lane *lb = b;

	if (la->priority != lb->priority)
		return la->priority > lb->priority ? -1 : 1;
	return la->block - lb->block;
}

/*
 * block_lanes
 *		The priorities of a block's jobs, highest first, into *lanes; returns
 *		how many.  A closed block takes no new jobs but the late pushes that
 *		were running when it filled up, so its priorities are remembered for
 *		PGQ_LANES_TTL; a job of a new priority pushed that late waits that
 *		long at most.  The open block is read every time.
 */
#define PGQ_LANES_TTL	(1 * USECS_PER_SEC)

static int
block_lanes(PgqQueue *queue, PgqBlock *block, TimestampTz now, int32 **lanes)
{
	SPIPlanPtr	plan;
	int32	   *read;

	if (block->state != 'o' && block->nlanes >= 0 && now - block->lanes_at < PGQ_LANES_TTL)
	{
		*lanes = block->lanes;
		return block->nlanes;
	}
	plan = pgq_block_plan(queue, block, PGQ_PLAN_LANES, lanes_sql, 0, NULL);
	/* not read-only: a waiting pop must see lanes pushed since it started */
	if (SPI_execute_plan(plan, NULL, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the priorities of queue \"%s\"", queue->name);
	read = palloc(sizeof(int32) * Max(SPI_processed, 1));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;

		read[r] = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc,
											  1, &isnull));
	}
	block->nlanes = -1;
	if (SPI_processed <= PGQ_CACHED_LANES)
	{
		memcpy(block->lanes, read, sizeof(int32) * SPI_processed);
		block->nlanes = (int) SPI_processed;
		block->lanes_at = now;
	}
	*lanes = read;
	return (int) SPI_processed;
}

/*
 * collect_lanes
 *		Every lane of every block that may hold unfinished jobs, in claim
 *		order.  Returns the number of lanes.
 */
static int
collect_lanes(PgqQueue *queue, TimestampTz now, Lane **lanes_out)
{
	int			nlanes = 0;
	int			maxlanes = 16;
	Lane	   *lanes = palloc(sizeof(Lane) * maxlanes);

	for (int i = 0; i < queue->nblocks; i++)
	{
		PgqBlock   *block = &queue->blocks[i];
		int32	   *priorities;
		int			n;

		/* skip done blocks, and blocks that compaction holds or dropped */
		if (block->state == 'd' || !pgq_block_open(block, false))
			continue;
		n = block_lanes(queue, block, now, &priorities);
		for (int r = 0; r < n; r++)
		{
			if (nlanes == maxlanes)
			{
				maxlanes *= 2;
				lanes = repalloc(lanes, sizeof(Lane) * maxlanes);
			}
			lanes[nlanes].priority = priorities[r];
			lanes[nlanes].block = i;
			lanes[nlanes].watermark = pgq_lane_watermark(queue, block, priorities[r]);
			nlanes++;
		}
	}
	qsort(lanes, nlanes, sizeof(Lane), lane_cmp);
	*lanes_out = lanes;
	return nlanes;
}

/*
 * claim
 *		Run one claim statement and add the jobs it claimed to the result.
 *		A job locked but lost to a claim that committed after this
 *		statement's snapshot is not returned; such losses make the statement
 *		run again with a new snapshot, a bounded number of times.  Returns
 *		how many jobs it claimed.
 */
static int
claim(PgqQueue *queue, PgqBlock *block, PgqPlanKind kind, const char *sql,
	  Datum *args, int wanted, ReturnSetInfo *rsinfo)
{
	SPIPlanPtr	plan = pgq_block_plan(queue, block, kind, sql, CLAIM_NARGS, claim_argtypes);
	text	   *qname = cstring_to_text(queue->name);
	int			claimed = 0;
	int			tries = 0;
	int			request;
	int			locked;
	int			got;

	do
	{
		request = wanted - claimed;
		args[2] = Int32GetDatum(request);
		if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not claim jobs of queue \"%s\"", queue->name);
		locked = (int) SPI_processed;
		got = 0;
		for (int r = 0; r < locked; r++)
		{
			HeapTuple	tup = SPI_tuptable->vals[r];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			Datum		values[8];
			bool		nulls[8];

			/* job_id, queue, key, payload, priority, attempt, enqueued_at, lease_until */
			values[5] = SPI_getbinval(tup, desc, 5, &nulls[5]);
			if (nulls[5])
				continue;		/* lost to a concurrent claim */
			values[0] = SPI_getbinval(tup, desc, 1, &nulls[0]);
			values[1] = PointerGetDatum(qname);
			nulls[1] = false;
			values[2] = SPI_getbinval(tup, desc, 2, &nulls[2]);
			values[3] = SPI_getbinval(tup, desc, 3, &nulls[3]);
			values[4] = SPI_getbinval(tup, desc, 4, &nulls[4]);
			values[6] = SPI_getbinval(tup, desc, 6, &nulls[6]);
			values[7] = SPI_getbinval(tup, desc, 7, &nulls[7]);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
			got++;
		}
		claimed += got;
	} while (locked == request && got < locked && ++tries < PGQ_CLAIM_TRIES);
	return claimed;
}

/*
 * advance_lane
 *		Move a lane's watermark up to its first unclaimed job, within the
 *		bound that open pushes allow (see shmem.c).
 */
static void
advance_lane(PgqQueue *queue, Lane *lane, int64 bound)
{
	PgqBlock   *block = &queue->blocks[lane->block];
	Datum		args[CLAIM_NARGS];
	SPIPlanPtr	plan;
	int64		target = Min(bound, block->last_id + 1);

	if (target <= lane->watermark)
		return;
	memset(args, 0, sizeof(args));
	args[1] = Int32GetDatum(lane->priority);
	args[3] = Int64GetDatum(lane->watermark);
	plan = pgq_block_plan(queue, block, PGQ_PLAN_FIRST_UNCLAIMED, first_unclaimed_sql,
						  CLAIM_NARGS, claim_argtypes);
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the unclaimed jobs of queue \"%s\"", queue->name);
	if (SPI_processed == 1)
	{
		bool		isnull;

		target = Min(target, DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
														  SPI_tuptable->tupdesc, 1,
														  &isnull)));
	}
	if (target > lane->watermark)
	{
		pgq_lane_advance(queue, block, lane->priority, target);
		lane->watermark = target;
	}
}

/*
 * pop_once
 *		One attempt to claim up to n jobs of the queue, added to the result.
 *		Returns how many it claimed.
 */
static int
pop_once(text *name, int n, Interval *lease_arg, ReturnSetInfo *rsinfo)
{
	PgqQueue   *queue = pgq_queue_get(name);
	Lane	   *lanes;
	int			nlanes;
	int			remaining = n;
	int64		bound = -1;
	TimestampTz now;
	Datum		args[CLAIM_NARGS];

	if (queue->paused)
		return 0;

	now = GetCurrentTimestamp();
	args[0] = TimestampTzGetDatum(now);
	args[4] = Int32GetDatum(queue->queue_id);
	args[5] = IntervalPGetDatum(lease_arg ? lease_arg : &queue->default_lease);

	nlanes = collect_lanes(queue, now, &lanes);
	for (int i = 0; i < nlanes && remaining > 0; i++)
	{
		PgqBlock   *block = &queue->blocks[lanes[i].block];

		/*
		 * Advance a lane's watermark just before claiming from it.  Only a
		 * transaction that has written nothing yet sees no claims of its own
		 * that could still roll back, and only a new snapshot per statement
		 * sees the pushes the bound allows.
		 */
		if (GetTopTransactionIdIfAny() == InvalidTransactionId &&
			!IsolationUsesXactSnapshot())
		{
			if (bound < 0)
				bound = pgq_lane_bound(queue);
			if (bound > 0)
				advance_lane(queue, &lanes[i], bound);
		}

		args[1] = Int32GetDatum(lanes[i].priority);
		args[3] = Int64GetDatum(lanes[i].watermark);
		remaining -= claim(queue, block, PGQ_PLAN_CLAIM_WAITING, claim_waiting_sql,
						   args, remaining, rsinfo);
		/* past the block's end: every job of the lane was claimed once */
		if (remaining > 0 && lanes[i].watermark <= block->last_id)
			remaining -= claim(queue, block, PGQ_PLAN_CLAIM_FRESH, claim_fresh_sql,
							   args, remaining, rsinfo);
	}
	pfree(lanes);
	pgq_note(queue, PGQ_COUNT_POPPED, n - remaining);
	return n - remaining;
}

/*
 * pgq_pop
 *		SQL: queue_pop(queue, n, lease, wait) claims up to n jobs and
 *		returns them as pgqueue.job rows.  With a wait, a pop that finds
 *		nothing sleeps until jobs may be there (wakeup.c) and tries again,
 *		until it claims something or the wait ends.
 */
Datum
pgq_pop(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	text	   *name;
	int32		n;
	Interval   *lease = NULL;
	Interval   *wait = NULL;

	pgq_require_arg(fcinfo, 0, "queue name");
	pgq_require_arg(fcinfo, 1, "n");
	name = PG_GETARG_TEXT_PP(0);
	n = PG_GETARG_INT32(1);
	if (n < 1 || n > PGQ_MAX_POP)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("n must be between 1 and %d", PGQ_MAX_POP),
				 errdetail("n is %d.", n)));
	if (!PG_ARGISNULL(2))
	{
		lease = PG_GETARG_INTERVAL_P(2);
		pgq_check_lease(lease, "lease");
	}
	if (!PG_ARGISNULL(3))
	{
		wait = PG_GETARG_INTERVAL_P(3);
		if (pgq_interval_sign(wait) < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("wait must not be negative")));
		if (pgq_interval_sign(wait) == 0)
			wait = NULL;
		else if (IsolationUsesXactSnapshot())
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("queue_pop with a wait requires the READ COMMITTED isolation level"),
					 errdetail("A transaction snapshot would never see the jobs it waits for.")));
	}

	InitMaterializedSRF(fcinfo, 0);
	SPI_connect();
	if (pop_once(name, n, lease, rsinfo) == 0 && wait != NULL)
	{
		PgqWait		w;
		TimestampTz deadline;

		deadline = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
														   TimestampTzGetDatum(GetCurrentTimestamp()),
														   IntervalPGetDatum(wait)));
		pgq_wait_begin(&w, pgq_queue_get(name), deadline);
		PG_TRY();
		{
			for (;;)
			{
				pgq_wait_mark(&w);
				if (pop_once(name, n, lease, rsinfo) > 0 || !pgq_wait_sleep(&w))
					break;
			}
		}
		PG_FINALLY();
		{
			pgq_wait_end(&w);
		}
		PG_END_TRY();
	}
	SPI_finish();
	return (Datum) 0;
}
