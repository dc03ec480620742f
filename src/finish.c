/*-------------------------------------------------------------------------
 *
 * finish.c
 *	  The transitions out of a lease: queue_ack, queue_fail, queue_extend
 *	  and queue_release.
 *
 * Each is one compare-and-append per block: read the latest status row of
 * every job, and append seq + 1 only where the job is executing under an
 * unexpired lease of the expected attempt.  ON CONFLICT DO NOTHING makes a
 * concurrent change (lease expiry, abort) win or lose cleanly.  Any job that
 * did not move raises an error, so a call applies to all its jobs or none.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/memutils.h"

#include "args.h"
#include "flow.h"
#include "note.h"
#include "cache.h"
#include "privilege.h"
#include "watermark.h"


PG_FUNCTION_INFO_V1(pgq_ack);
PG_FUNCTION_INFO_V1(pgq_ack_array);
PG_FUNCTION_INFO_V1(pgq_fail);
PG_FUNCTION_INFO_V1(pgq_extend);
PG_FUNCTION_INFO_V1(pgq_release);

/* parameters shared by the four statements; each uses some of them */
#define FINISH_NARGS 11
static Oid	finish_argtypes[FINISH_NARGS] = {
	INT8ARRAYOID,				/* $1 job ids */
	INT4ARRAYOID,				/* $2 expected attempts (null: any) */
	INT4OID,					/* $3 queue id */
	TIMESTAMPTZOID,				/* $4 now */
	INT4OID,					/* $5 max attempts */
	INTERVALOID,				/* $6 retry_in (null: backoff) */
	INTERVALOID,				/* $7 backoff base */
	INTERVALOID,				/* $8 backoff cap */
	FLOAT8OID,					/* $9 backoff jitter */
	TEXTOID,					/* $10 error */
	INTERVALOID					/* $11 lease */
};

/*
 * The statement, with the new row's state, failure count, due time and
 * error left as %3$s .. %6$s for each transition, and as %7$s the next job
 * of a finished job's key in the block (see pgq_flow_finished), which only
 * an ack looks for.
 */
static const char *finish_sql =
"WITH r AS (SELECT * FROM unnest($1::bigint[], $2::int[]) AS r(job_id, want)),"
" l AS ("
"  SELECT r.job_id, r.want, s.seq, s.state, s.attempt, s.fails, s.due_at, s.error"
"  FROM r LEFT JOIN LATERAL"
"   (SELECT * FROM %2$s s WHERE s.job_id = r.job_id ORDER BY s.seq DESC LIMIT 1) s ON true),"
" i AS ("
"  INSERT INTO %2$s (queue_id, job_id, seq, state, attempt, fails, at, due_at, error)"
"  SELECT $3, l.job_id, l.seq + 1, %3$s, l.attempt, %4$s, $4, %5$s, %6$s FROM l"
"  WHERE l.state = 'e' AND l.due_at >= $4 AND (l.want IS NULL OR l.want = l.attempt)"
"  ON CONFLICT DO NOTHING"
"  RETURNING job_id, state, due_at)"
" SELECT l.job_id, l.state, l.attempt, l.due_at, i.state, i.due_at,"
"  l.seq IS NOT NULL OR j.job_id IS NOT NULL, l.want, j.key, j.tenant, %7$s,"
"  pgqueue_internal._state(l.state, l.due_at, $4)"
" FROM l LEFT JOIN i ON i.job_id = l.job_id LEFT JOIN %1$s j ON j.job_id = l.job_id";

#define FAIL_EXHAUSTED "l.fails + 1 >= $5"

#define KEY_NEXT \
"CASE WHEN j.key IS NOT NULL AND i.state = 'd' THEN" \
" (SELECT n.job_id FROM %1$s n WHERE n.key = j.key AND n.job_id > j.job_id" \
"  ORDER BY n.job_id LIMIT 1) END"

typedef enum FinishOp
{
	FINISH_ACK,
	FINISH_FAIL,
	FINISH_EXTEND,
	FINISH_RELEASE
} FinishOp;

/*
 * per transition: plan kind, the four expressions of the new row and the
 * next job of the key
 */
static const struct
{
	PgqPlanKind kind;
	const char *state;
	const char *fails;
	const char *due;
	const char *error;
	const char *next;
}			finish_ops[] = {
	[FINISH_ACK] = {PGQ_PLAN_ACK, "'d'", "l.fails", "NULL", "l.error", KEY_NEXT},
	[FINISH_FAIL] = {PGQ_PLAN_FAIL,
		"CASE WHEN " FAIL_EXHAUSTED " THEN 'x' ELSE 'f' END",
		"l.fails + 1",
		"CASE WHEN " FAIL_EXHAUSTED " THEN NULL ELSE $4 + coalesce($6, make_interval(secs =>"
		" least(extract(epoch FROM $8)::float8,"
		"       extract(epoch FROM $7)::float8 * power(2, least(l.fails, 100)))"
		" * (1 + $9 * (2 * random() - 1)))) END",
	"$10", "NULL::int8"},
	[FINISH_EXTEND] = {PGQ_PLAN_EXTEND, "'e'", "l.fails", "$4 + $11", "l.error", "NULL::int8"},
	[FINISH_RELEASE] = {PGQ_PLAN_RELEASE, "'a'", "l.fails", "$4", "l.error", "NULL::int8"},
};

/* finish_sql completed for each transition, built on first use */
static char *op_sql[lengthof(finish_ops)];

/* the outcome of one job's transition */
typedef struct FinishResult
{
	char		state;			/* new state */
	TimestampTz due_at;			/* new due time (lease end for extend) */
} FinishResult;

/* one requested job; ids are sorted so that each block is one run */
typedef struct Request
{
	int64		job_id;
	int32		attempt;
	bool		any_attempt;
	int			index;			/* position in the caller's input */
} Request;

/*
 * request_cmp
 *		qsort order of requests: by job id.
 */
static int
request_cmp(const void *a, const void *b)
{
	int64		ia = ((const Request *) a)->job_id;
	int64		ib = ((const Request *) b)->job_id;

	return ia < ib ? -1 : (ia > ib ? 1 : 0);
}

/*
 * report_unmoved
 *		Raise the error that explains why one job did not move.
 */
static void
report_unmoved(PgqQueue *queue, HeapTuple tup, TupleDesc desc, TimestampTz now)
{
	bool		isnull;
	bool		state_null;
	bool		want_null;
	int64		job_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	char		state = DatumGetChar(SPI_getbinval(tup, desc, 2, &state_null));
	int32		attempt = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
	TimestampTz due = DatumGetTimestampTz(SPI_getbinval(tup, desc, 4, &isnull));
	bool		exists = DatumGetBool(SPI_getbinval(tup, desc, 7, &isnull));
	int32		want = DatumGetInt32(SPI_getbinval(tup, desc, 8, &want_null));
	char	   *state_name = SPI_getvalue(tup, desc, 12);	/* as pgqueue.jobs says */

	if (!exists)
		ereport(ERROR,
				(errcode(ERRCODE_PGQ_JOB_NOT_FOUND),
				 errmsg("job %lld does not exist in queue \"%s\"",
						(long long) job_id, queue->name)));
	if (state_null || (attempt == 0 && state != PGQ_EXECUTING))
		ereport(ERROR,
				(errcode(ERRCODE_PGQ_INVALID_STATE),
				 errmsg("job %lld is not executing", (long long) job_id),
				 errdetail("It is %s and has never been claimed.", state_name)));

	if (state == PGQ_EXECUTING)
	{
		if (due < now)
			ereport(ERROR,
					(errcode(ERRCODE_PGQ_LEASE_LOST),
					 errmsg("lease of job %lld has expired", (long long) job_id),
					 errdetail("The lease of attempt %d ended at %s.",
							   attempt, timestamptz_to_str(due))));
		if (!want_null && want != attempt)
			ereport(ERROR,
					(errcode(ERRCODE_PGQ_LEASE_LOST),
					 errmsg("lease of job %lld is held by another attempt", (long long) job_id),
					 errdetail("Attempt %d holds the lease; this call is for attempt %d.",
							   attempt, want)));
		ereport(ERROR,
				(errcode(ERRCODE_PGQ_LEASE_LOST),
				 errmsg("job %lld changed concurrently", (long long) job_id),
				 errdetail("Another transaction changed its state first.")));
	}
	/* an aborted job lost its lease: to expiry, an operator or its own fail */
	if (state == PGQ_SUCCEEDED && (want_null || want == attempt))
		ereport(ERROR,
				(errcode(ERRCODE_PGQ_INVALID_STATE),
				 errmsg("job %lld has already succeeded", (long long) job_id)));
	ereport(ERROR,
			(errcode(ERRCODE_PGQ_LEASE_LOST),
			 errmsg("lease of job %lld was lost", (long long) job_id),
			 want_null
			 ? errdetail("The job is %s now (attempt %d).", state_name, attempt)
			 : errdetail("The job is %s now (attempt %d); this call is for attempt %d.",
						 state_name, attempt, want)));
}

/*
 * finish_jobs
 *		Apply one transition to n jobs of a queue, all or none.  results,
 *		if not NULL, receives each job's outcome in input order.  Returns the
 *		number of distinct jobs moved.
 */
static int
finish_jobs(FinishOp op, text *name, int n, Datum *ids, bool *id_nulls,
			Datum *attempts, bool *attempt_nulls, Interval *retry_in,
			text *error, Interval *lease, FinishResult *results)
{
	PgqQueue   *queue;
	Request    *reqs = palloc(sizeof(Request) * Max(n, 1));
	int			nreqs = 0;
	TimestampTz now = GetCurrentTimestamp();
	Datum		args[FINISH_NARGS];
	char		nulls[FINISH_NARGS];
	int			moved = 0;
	int			start = 0;
	int64		key_bound = 0;
	int			rc;

	for (int i = 0; i < n; i++)
	{
		if (id_nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("job ids must not be null")));
		reqs[i].job_id = DatumGetInt64(ids[i]);
		reqs[i].any_attempt = attempt_nulls == NULL || attempt_nulls[i];
		reqs[i].attempt = reqs[i].any_attempt ? 0 : DatumGetInt32(attempts[i]);
		reqs[i].index = i;
	}
	qsort(reqs, n, sizeof(Request), request_cmp);
	for (int i = 0; i < n; i++)
		if (nreqs == 0 || reqs[nreqs - 1].job_id != reqs[i].job_id)
			reqs[nreqs++] = reqs[i];

	SPI_connect();
	queue = pgq_queue_get(name);
	pgq_require_right(queue, PGQ_RIGHT_CONSUME);

	/*
	 * Open every block the jobs are in first; one that compaction dropped
	 * meanwhile means the jobs moved: reload the queue and route again.
	 */
	for (int tries = 0;; tries++)
	{
		bool		opened = true;
		PgqBlock   *last = NULL;

		for (int i = 0; i < nreqs && opened; i++)
		{
			PgqBlock   *block = pgq_block_for_id(queue, reqs[i].job_id);

			if (block != NULL && block != last && !pgq_block_open(block, true))
				opened = false;
			last = block;
		}
		if (opened)
			break;
		if (tries == 3)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("the blocks of queue \"%s\" keep changing", queue->name),
					 errdetail("Maintenance compacted blocks of the queue while this call looked for its jobs."),
					 errhint("Retry the transaction.")));
		queue = pgq_queue_get(name);
	}

	memset(nulls, ' ', sizeof(nulls));
	args[2] = Int32GetDatum(queue->queue_id);
	args[3] = TimestampTzGetDatum(now);
	args[4] = Int32GetDatum(queue->max_attempts);
	args[5] = retry_in ? IntervalPGetDatum(retry_in) : (Datum) 0;
	nulls[5] = retry_in ? ' ' : 'n';
	args[6] = IntervalPGetDatum(&queue->backoff_base);
	args[7] = IntervalPGetDatum(&queue->backoff_cap);
	args[8] = Float8GetDatum(queue->backoff_jitter);
	args[9] = error ? PointerGetDatum(error) : (Datum) 0;
	nulls[9] = error ? ' ' : 'n';
	args[10] = lease ? IntervalPGetDatum(lease) : IntervalPGetDatum(&queue->default_lease);

	/*
	 * An ack's statements find the next job of each acked job's key: it may
	 * go next if it lies below the bound of open pushes, read before their
	 * snapshots (no job of the key can still appear between the two).
	 */
	if (op == FINISH_ACK && !IsolationUsesXactSnapshot())
		key_bound = pgq_lane_bound(queue);

	while (start < nreqs)
	{
		PgqBlock   *block = pgq_block_for_id(queue, reqs[start].job_id);
		int			end = start;
		Datum	   *bids;
		Datum	   *battempts;
		bool	   *battempt_nulls;
		int			dims[1];
		int			lbs[1] = {1};
		SPIPlanPtr	plan;

		if (block == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_PGQ_JOB_NOT_FOUND),
					 errmsg("job %lld does not exist in queue \"%s\"",
							(long long) reqs[start].job_id, queue->name)));
		while (end < nreqs && reqs[end].job_id <= block->last_id)
			end++;

		dims[0] = end - start;
		bids = palloc(sizeof(Datum) * dims[0]);
		battempts = palloc(sizeof(Datum) * dims[0]);
		battempt_nulls = palloc(sizeof(bool) * dims[0]);
		for (int i = start; i < end; i++)
		{
			bids[i - start] = Int64GetDatum(reqs[i].job_id);
			battempts[i - start] = Int32GetDatum(reqs[i].attempt);
			battempt_nulls[i - start] = reqs[i].any_attempt;
		}
		args[0] = PointerGetDatum(construct_array(bids, dims[0], INT8OID, 8,
												  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		args[1] = PointerGetDatum(construct_md_array(battempts, battempt_nulls, 1, dims, lbs,
													 INT4OID, 4, true, TYPALIGN_INT));

		if (op_sql[op] == NULL)
			op_sql[op] = MemoryContextStrdup(TopMemoryContext,
											 psprintf(finish_sql, "%1$s", "%2$s",
													  finish_ops[op].state,
													  finish_ops[op].fails,
													  finish_ops[op].due,
													  finish_ops[op].error,
													  finish_ops[op].next));
		plan = pgq_block_plan(queue, block, finish_ops[op].kind, op_sql[op],
							  FINISH_NARGS, finish_argtypes);
		rc = SPI_execute_plan(plan, args, nulls, false, 0);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "could not update jobs of queue \"%s\": %s",
				 queue->name, SPI_result_code_string(rc));

		for (uint64 r = 0; r < SPI_processed; r++)
		{
			HeapTuple	tup = SPI_tuptable->vals[r];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			Datum		new_state = SPI_getbinval(tup, desc, 5, &isnull);
			Datum		due;
			bool		due_null;
			Datum		key;
			bool		key_null;
			Datum		tenant;
			bool		tenant_null;
			Datum		next;
			bool		next_null;

			if (isnull)
				report_unmoved(queue, tup, desc, now);
			moved++;
			due = SPI_getbinval(tup, desc, 6, &due_null);
			key = SPI_getbinval(tup, desc, 9, &key_null);
			tenant = SPI_getbinval(tup, desc, 10, &tenant_null);
			next = SPI_getbinval(tup, desc, 11, &next_null);
			if (op != FINISH_EXTEND)
				pgq_flow_finished(queue, key_null ? NULL : DatumGetTextPP(key),
								  tenant_null ? NULL : DatumGetTextPP(tenant),
								  DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull)),
								  DatumGetChar(new_state),
								  !next_null && DatumGetInt64(next) < key_bound
								  ? DatumGetInt64(next) : 0);
			switch (DatumGetChar(new_state))
			{
				case PGQ_SUCCEEDED:
					pgq_note(queue, PGQ_COUNT_ACKED, 1);
					break;
				case PGQ_FAILED:
					pgq_note(queue, PGQ_COUNT_FAILED, 1);
					pgq_note_due(queue, DatumGetTimestampTz(due));
					break;
				case PGQ_ABORTED:
					pgq_note(queue, PGQ_COUNT_FAILED, 1);
					pgq_note(queue, PGQ_COUNT_ABORTED, 1);
					break;
				case PGQ_AVAILABLE:
					pgq_note_due(queue, DatumGetTimestampTz(due));
					break;
			}
			if (results != NULL)
			{
				int64		job_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));

				for (int i = 0; i < n; i++)
					if (DatumGetInt64(ids[i]) == job_id)
					{
						results[i].state = DatumGetChar(new_state);
						results[i].due_at = due_null ? 0 : DatumGetTimestampTz(due);
					}
			}
		}
		start = end;
	}
	SPI_finish();
	return moved;
}

/*
 * finish_one
 *		The single-job forms: queue, job_id and an optional attempt at the
 *		given argument position.
 */
static FinishResult
finish_one(FunctionCallInfo fcinfo, FinishOp op, int attempt_arg,
		   Interval *retry_in, text *error, Interval *lease)
{
	Datum		id;
	bool		id_null = false;
	Datum		attempt = (Datum) 0;
	bool		attempt_null = PG_ARGISNULL(attempt_arg);
	FinishResult result;
	PgqApiCall	call;

	pgq_require_arg(fcinfo, 0, "queue name");
	pgq_require_arg(fcinfo, 1, "job_id");
	id = PG_GETARG_DATUM(1);
	if (!attempt_null)
		attempt = PG_GETARG_DATUM(attempt_arg);
	pgq_api_enter(fcinfo, &call);
	finish_jobs(op, PG_GETARG_TEXT_PP(0), 1, &id, &id_null, &attempt, &attempt_null,
				retry_in, error, lease, &result);
	pgq_api_leave(&call);
	return result;
}

/*
 * pgq_ack
 *		SQL: queue_ack(queue, job_id, attempt) marks the job succeeded.
 */
Datum
pgq_ack(PG_FUNCTION_ARGS)
{
	finish_one(fcinfo, FINISH_ACK, 2, NULL, NULL, NULL);
	PG_RETURN_VOID();
}

/*
 * pgq_ack_array
 *		SQL: queue_ack(queue, job_ids[], attempts[]) marks all the jobs
 *		succeeded, or none; returns how many.
 */
Datum
pgq_ack_array(PG_FUNCTION_ARGS)
{
	ArrayType  *idarr;
	Datum	   *ids;
	bool	   *id_nulls;
	Datum	   *attempts = NULL;
	bool	   *attempt_nulls = NULL;
	int			n;
	int			acked;
	PgqApiCall	call;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("queue name and job ids must not be null")));
	idarr = PG_GETARG_ARRAYTYPE_P(1);
	if (ARR_NDIM(idarr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("job ids must be a one-dimensional array")));
	deconstruct_array(idarr, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &ids, &id_nulls, &n);
	if (!PG_ARGISNULL(2))
	{
		ArrayType  *attarr = PG_GETARG_ARRAYTYPE_P(2);
		int			nattempts;

		if (ARR_NDIM(attarr) > 1)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("attempts must be a one-dimensional array")));
		deconstruct_array(attarr, INT4OID, 4, true, TYPALIGN_INT,
						  &attempts, &attempt_nulls, &nattempts);
		if (nattempts != n)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("attempts and job ids must have the same length")));
	}
	pgq_api_enter(fcinfo, &call);
	acked = finish_jobs(FINISH_ACK, PG_GETARG_TEXT_PP(0), n, ids, id_nulls,
						attempts, attempt_nulls, NULL, NULL, NULL, NULL);
	pgq_api_leave(&call);
	PG_RETURN_INT32(acked);
}

/*
 * pgq_fail
 *		SQL: queue_fail(queue, job_id, error, retry_in, attempt) records a
 *		failed attempt; returns 'failed' (will retry) or 'aborted'.
 */
Datum
pgq_fail(PG_FUNCTION_ARGS)
{
	Interval   *retry_in = NULL;
	FinishResult result;

	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("error must not be null"),
				 errhint("Describe why the attempt failed.")));
	if (!PG_ARGISNULL(3))
	{
		retry_in = PG_GETARG_INTERVAL_P(3);
		if (pgq_interval_sign(retry_in) < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("retry_in must not be negative")));
		pgq_check_interval_max(retry_in, "retry_in", PGQ_MAX_RETRY);
	}
	result = finish_one(fcinfo, FINISH_FAIL, 4, retry_in,
						pgq_clip_error(PG_GETARG_TEXT_PP(2)), NULL);
	PG_RETURN_TEXT_P(cstring_to_text(result.state == PGQ_ABORTED ? "aborted" : "failed"));
}

/*
 * pgq_extend
 *		SQL: queue_extend(queue, job_id, lease, attempt) renews the lease
 *		from now; returns its new end.
 */
Datum
pgq_extend(PG_FUNCTION_ARGS)
{
	Interval   *lease = NULL;
	FinishResult result;

	if (!PG_ARGISNULL(2))
	{
		lease = PG_GETARG_INTERVAL_P(2);
		pgq_check_lease(lease, "lease");
	}
	result = finish_one(fcinfo, FINISH_EXTEND, 3, NULL, NULL, lease);
	PG_RETURN_TIMESTAMPTZ(result.due_at);
}

/*
 * pgq_release
 *		SQL: queue_release(queue, job_id, attempt) hands the job back,
 *		available at once, without counting a failure.
 */
Datum
pgq_release(PG_FUNCTION_ARGS)
{
	finish_one(fcinfo, FINISH_RELEASE, 2, NULL, NULL, NULL);
	PG_RETURN_VOID();
}
