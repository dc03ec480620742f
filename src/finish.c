/*-------------------------------------------------------------------------
 *
 * finish.c
 *	  The transitions out of a lease: queue_ack, queue_fail, queue_extend
 *	  and queue_release.
 *
 * Each is a compare-and-append.  A job with status rows moves by one
 * statement per block: read the latest status row of every job, and append
 * seq + 1 only where the job is executing under an unexpired lease of the
 * expected attempt.  A job that a claim record holds (claim.c) moves by a
 * record appended to its claim, (claim_id, seq + 1): an ack of the jobs
 * (one record for all the jobs of a call), or the record that they leave
 * the claim with the status rows (seq 2) of their new state.  ON CONFLICT
 * DO NOTHING makes a concurrent change (lease expiry, abort, another call)
 * win or lose cleanly: the loser reads the claim again.  Any job that did
 * not move raises an error, so a call applies to all its jobs or none.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/nbtree.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "args.h"
#include "cache.h"
#include "claim.h"
#include "finish.h"
#include "flow.h"
#include "note.h"
#include "privilege.h"
#include "watermark.h"


PG_FUNCTION_INFO_V1(pgq_ack);
PG_FUNCTION_INFO_V1(pgq_ack_array);
PG_FUNCTION_INFO_V1(pgq_fail);
PG_FUNCTION_INFO_V1(pgq_extend);
PG_FUNCTION_INFO_V1(pgq_release);
PG_FUNCTION_INFO_V1(pgq_claim_abort);

/* parameters shared by the statements; each uses some of them */
#define FINISH_NARGS 14
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
	INTERVALOID,				/* $11 lease */
	INT8OID,					/* $12 claim id */
	INT4OID,					/* $13 seq of the claim's next record */
	INT4OID						/* $14 jobs in it */
};

/*
 * The statement, with the new row's state, failure count, due time and
 * error left as %4$s .. %7$s for each transition, and as %8$s the next job
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
"  SELECT $3, l.job_id, l.seq + 1, %4$s, l.attempt, %5$s, $4, %6$s, %7$s FROM l"
"  WHERE l.state = 'e' AND l.due_at >= $4 AND (l.want IS NULL OR l.want = l.attempt)"
"  ON CONFLICT DO NOTHING"
"  RETURNING job_id, state, due_at)"
" SELECT l.job_id, l.state, l.attempt, l.due_at, i.state, i.due_at,"
"  l.seq IS NOT NULL OR j.job_id IS NOT NULL, l.want, j.key, j.tenant, %7$s,"
"  pgqueue_internal._state(l.state, l.due_at, $4), j.priority"
" FROM l LEFT JOIN i ON i.job_id = l.job_id LEFT JOIN %1$s j ON j.job_id = l.job_id";

/*
 * A claim's jobs that leave it ($1): the record that says so, and, if it
 * was appended, their status rows (seq 2: the claim was seq 1) with the
 * expressions of the transition as %4$s .. %7$s
 */
static const char *claim_exit_sql =
"WITH x AS ("
"  INSERT INTO %3$s (queue_id, claim_id, seq, kind, n, ids, at)"
"  VALUES ($3, $12, $13, 'x', $14, $1, $4) ON CONFLICT DO NOTHING RETURNING 1),"
" l AS (SELECT u.id AS job_id, 0 AS fails, NULL::text AS error"
"       FROM unnest($1::int8[]) AS u(id))"
" INSERT INTO %2$s (queue_id, job_id, seq, state, attempt, fails, at, due_at, error)"
" SELECT $3, l.job_id, 2, %4$s, 1, %5$s, $4, %6$s, %7$s FROM l WHERE EXISTS (SELECT 1 FROM x)"
" RETURNING job_id, state, due_at";

/* an ack of a claim's jobs ($1; NULL: all that are left) */
static const char *claim_ack_sql =
"INSERT INTO %3$s (queue_id, claim_id, seq, kind, n, ids, at)"
" VALUES ($3, $12, $13, 'd', $14, $1, $4) ON CONFLICT DO NOTHING";

/*
 * acks of all that some claims hold ($3: claims, $4: their next seqs, $5:
 * jobs in each), one record a claim, in one statement; returns the claims
 * whose record went in (unnest of several arrays is syntax, not a function
 * that could be qualified)
 */
static const char *claims_ack_sql =
"INSERT INTO %3$s (queue_id, claim_id, seq, kind, n, ids, at)"
" SELECT $1, u.claim_id, u.seq, 'd', u.n, NULL, $2"
" FROM unnest($3::pg_catalog.int8[], $4::pg_catalog.int4[], $5::pg_catalog.int4[])"
"  AS u(claim_id, seq, n)"
" ON CONFLICT DO NOTHING RETURNING claim_id";

static Oid	claims_ack_argtypes[5] = {
	INT4OID, TIMESTAMPTZOID, INT8ARRAYOID, INT4ARRAYOID, INT4ARRAYOID
};

#define FAIL_EXHAUSTED "l.fails + 1 >= $5"

/* the transitions out of a lease; the last two only of jobs of claims */
typedef enum FinishOp
{
	FINISH_ACK,
	FINISH_FAIL,
	FINISH_EXTEND,
	FINISH_RELEASE,
	FINISH_EXPIRE,				/* lease expiry (maintenance) */
	FINISH_ABORT				/* abort by an operator (repair) */
} FinishOp;

/* the outcome of one job's transition */
typedef struct FinishResult
{
	char		state;			/* new state */
	TimestampTz due_at;			/* new due time (lease end for extend) */
} FinishResult;

#define KEY_NEXT \
"CASE WHEN j.key IS NOT NULL AND (i.state = 'd' OR l.state IS NULL) THEN" \
" (SELECT n.job_id FROM %1$s n WHERE n.key = j.key AND n.job_id > j.job_id" \
"  ORDER BY n.job_id LIMIT 1) END"

/*
 * per transition: the plan kinds of the statement for jobs with status rows
 * (expiry and abort of such jobs are SQL: maintenance.sql, jobs.sql) and of
 * the claim's record, the four expressions of the new status row and the
 * next job of the key
 */
static const struct
{
	PgqPlanKind kind;
	PgqPlanKind claim_kind;
	const char *state;
	const char *fails;
	const char *due;
	const char *error;
	const char *next;
}			finish_ops[] = {
	[FINISH_ACK] = {PGQ_PLAN_ACK, PGQ_PLAN_CLAIM_ACK,
	"'d'", "l.fails", "NULL", "l.error", KEY_NEXT},
	[FINISH_FAIL] = {PGQ_PLAN_FAIL, PGQ_PLAN_EXIT_FAIL,
		"CASE WHEN " FAIL_EXHAUSTED " THEN 'x' ELSE 'f' END",
		"l.fails + 1",
		"CASE WHEN " FAIL_EXHAUSTED " THEN NULL ELSE $4 + coalesce($6, make_interval(secs =>"
		" least(extract(epoch FROM $8)::float8,"
		"       extract(epoch FROM $7)::float8 * power(2, least(l.fails, 100)))"
		" * (1 + $9 * (2 * random() - 1)))) END",
	"$10", "NULL::int8"},
	[FINISH_EXTEND] = {PGQ_PLAN_EXTEND, PGQ_PLAN_EXIT_EXTEND,
	"'e'", "l.fails", "$4 + $11", "l.error", "NULL::int8"},
	[FINISH_RELEASE] = {PGQ_PLAN_RELEASE, PGQ_PLAN_EXIT_RELEASE,
	"'a'", "l.fails", "$4", "l.error", "NULL::int8"},
	[FINISH_EXPIRE] = {PGQ_NUM_PLANS, PGQ_PLAN_EXIT_EXPIRE,
		"CASE WHEN " FAIL_EXHAUSTED " THEN 'x' ELSE 'a' END", "l.fails + 1",
	"CASE WHEN " FAIL_EXHAUSTED " THEN NULL ELSE $4 END", "$10", "NULL::int8"},
	[FINISH_ABORT] = {PGQ_NUM_PLANS, PGQ_PLAN_EXIT_ABORT,
	"'x'", "l.fails", "NULL", "$10", "NULL::int8"},
};

/* finish_sql and claim_exit_sql completed for each transition, on first use */
static char *op_sql[lengthof(finish_ops)];
static char *exit_sql[lengthof(finish_ops)];

/* one requested job; ids are sorted so that each block is one run */
typedef struct Request
{
	int64		job_id;
	int32		attempt;
	bool		any_attempt;
	int			index;			/* position in the caller's input */
} Request;

/* what a call found of a job that it could not move */
typedef struct Unmoved
{
	int64		job_id;
	bool		exists;
	char		state;			/* '\0': never claimed */
	int32		attempt;
	TimestampTz due;			/* of an executing job: its lease end */
	bool		any_attempt;
	int32		want;
	const char *state_name;		/* as pgqueue.jobs says */
} Unmoved;

/*
 * A job that no status row holds, left for its claim record: the request
 * and what the call needs of the job
 */
typedef struct Held
{
	int64		job_id;
	bool		any_attempt;
	int32		want;
	int32		priority;
	char		tenant[NAMEDATALEN];	/* '' for none */
	text	   *key;
	text	   *tenant_text;
	int64		next;			/* next job of its key; 0: none */
	int			group;			/* its claim's in finish_held; -1: not found yet */
} Held;

/* the jobs of one claim in a call (finish_held) */
typedef struct HeldGroup
{
	PgqClaim	claim;
	int			first;			/* its jobs: [first, first + nids) of the arrays */
	int			nids;
	int			tag;			/* its number in held[].group */
	int			held_first;		/* and held[held_first, held_end) has them all */
	int			held_end;
	bool		tried;			/* a record was tried (lost the race unless
								 * appended) */
	bool		appended;
} HeldGroup;

/* what a call needs to apply a transition */
typedef struct Finish
{
	FinishOp	op;
	PgqQueue   *queue;
	TimestampTz now;
	int64		key_bound;		/* next jobs of keys below it may go */
	Datum		args[FINISH_NARGS];
	char		nulls[FINISH_NARGS];
	int			n;				/* the caller's input, for results */
	Datum	   *ids;
	FinishResult *results;
	int			moved;
} Finish;

/*
 * op_fill
 *		A statement template completed with the expressions of a transition
 *		(%4$s .. %8$s), the tables left for pgq_block_plan, in memory that
 *		lasts.
 */
static char *
op_fill(const char *fmt, FinishOp op)
{
	const char *args[8] = {NULL, NULL, NULL, finish_ops[op].state, finish_ops[op].fails,
	finish_ops[op].due, finish_ops[op].error, finish_ops[op].next};
	char	   *sql = pgq_sql_fill(fmt, args, 8);
	char	   *kept = MemoryContextStrdup(TopMemoryContext, sql);

	pfree(sql);
	return kept;
}

/*
 * id_cmp
 *		qsort and bsearch order of structs that begin with an id: Requests
 *		and Helds by job id, HeldGroups by their claim's id.
 */
static int
id_cmp(const void *a, const void *b)
{
	int64		ia = *(const int64 *) a;
	int64		ib = *(const int64 *) b;

	StaticAssertStmt(offsetof(Request, job_id) == 0 && offsetof(Held, job_id) == 0 &&
					 offsetof(HeldGroup, claim.claim_id) == 0,
					 "id_cmp needs the id first");
	return ia < ib ? -1 : (ia > ib ? 1 : 0);
}

/*
 * report_unmoved
 *		Raise the error that explains why one job did not move.
 */
static void
report_unmoved(PgqQueue *queue, Unmoved *u, TimestampTz now)
{
	if (!u->exists)
		ereport(ERROR,
				(errcode(ERRCODE_PGQ_JOB_NOT_FOUND),
				 errmsg("job %lld does not exist in queue \"%s\"",
						(long long) u->job_id, queue->name)));
	if (u->state == '\0' || (u->attempt == 0 && u->state != PGQ_EXECUTING))
		ereport(ERROR,
				(errcode(ERRCODE_PGQ_INVALID_STATE),
				 errmsg("job %lld is not executing", (long long) u->job_id),
				 errdetail("It is %s and has never been claimed.", u->state_name)));

	if (u->state == PGQ_EXECUTING)
	{
		if (u->due < now)
			ereport(ERROR,
					(errcode(ERRCODE_PGQ_LEASE_LOST),
					 errmsg("lease of job %lld has expired", (long long) u->job_id),
					 errdetail("The lease of attempt %d ended at %s.",
							   u->attempt, timestamptz_to_str(u->due))));
		if (!u->any_attempt && u->want != u->attempt)
			ereport(ERROR,
					(errcode(ERRCODE_PGQ_LEASE_LOST),
					 errmsg("lease of job %lld is held by another attempt",
							(long long) u->job_id),
					 errdetail("Attempt %d holds the lease; this call is for attempt %d.",
							   u->attempt, u->want)));
		ereport(ERROR,
				(errcode(ERRCODE_PGQ_LEASE_LOST),
				 errmsg("job %lld changed concurrently", (long long) u->job_id),
				 errdetail("Another transaction changed its state first.")));
	}
	/* an aborted job lost its lease: to expiry, an operator or its own fail */
	if (u->state == PGQ_SUCCEEDED && (u->any_attempt || u->want == u->attempt))
		ereport(ERROR,
				(errcode(ERRCODE_PGQ_INVALID_STATE),
				 errmsg("job %lld has already succeeded", (long long) u->job_id)));
	ereport(ERROR,
			(errcode(ERRCODE_PGQ_LEASE_LOST),
			 errmsg("lease of job %lld was lost", (long long) u->job_id),
			 u->any_attempt
			 ? errdetail("The job is %s now (attempt %d).", u->state_name, u->attempt)
			 : errdetail("The job is %s now (attempt %d); this call is for attempt %d.",
						 u->state_name, u->attempt, u->want)));
}

/*
 * finished
 *		One job moved to state (due: its new due time): count it, tell flow
 *		control, and record the outcome for the caller.
 */
static void
finished(Finish *f, int64 job_id, char state, TimestampTz due, text *key, text *tenant,
		 int64 next)
{
	PgqQueue   *queue = f->queue;

	f->moved++;
	/* expiry and abort make flow control count again (pgq_claim_leave) */
	if (f->op == FINISH_ACK || f->op == FINISH_FAIL || f->op == FINISH_RELEASE)
		pgq_flow_finished(queue, key, tenant, job_id, state,
						  next != 0 && next < f->key_bound ? next : 0);
	switch (state)
	{
		case PGQ_SUCCEEDED:
			pgq_note(queue, PGQ_COUNT_ACKED, 1);
			break;
		case PGQ_FAILED:
			pgq_note(queue, PGQ_COUNT_FAILED, 1);
			pgq_note_due(queue, due);
			break;
		case PGQ_ABORTED:
			/* a repair counts its aborts itself (jobs.sql) */
			pgq_note(queue, PGQ_COUNT_FAILED, f->op == FINISH_FAIL ? 1 : 0);
			pgq_note(queue, PGQ_COUNT_ABORTED, f->op == FINISH_ABORT ? 0 : 1);
			break;
		case PGQ_AVAILABLE:
			pgq_note_due(queue, due);
			break;
	}
	if (f->results != NULL)
		for (int i = 0; i < f->n; i++)
			if (DatumGetInt64(f->ids[i]) == job_id)
			{
				f->results[i].state = state;
				f->results[i].due_at = due;
			}
}

/*
 * claim_check
 *		Raise the error of a job that its claim no longer holds for this
 *		call: acked, left, or under an expired lease or another attempt.
 */
static void
claim_check(Finish *f, PgqClaim *claim, Held *h)
{
	TimestampTz at;
	char		fate = pgq_claim_fate(claim, h->job_id, &at);
	Unmoved		u;

	u.job_id = h->job_id;
	u.exists = true;
	u.attempt = 1;
	u.due = claim->lease_until;
	u.any_attempt = h->any_attempt;
	u.want = h->want;
	if (fate == PGQ_CLAIM_ACKED)
	{
		u.state = PGQ_SUCCEEDED;
		u.state_name = "succeeded";
		report_unmoved(f->queue, &u, f->now);
	}
	u.state = PGQ_EXECUTING;
	u.state_name = "executing";
	if (fate == PGQ_CLAIM_LEFT || claim->lease_until < f->now ||
		(!h->any_attempt && h->want != 1))
		report_unmoved(f->queue, &u, f->now);
}

/*
 * claim_unshared
 *		Raise an error if one of a claim's jobs (sorted) has a status row:
 *		it left the claim (another call, expiry, an operator) or a repair
 *		took it for never claimed while the claim was being written (the
 *		row wins: claim.c's rule 1).  A row still being written is waited
 *		for: if its transaction rolls back, the job is still the claim's.
 */
static void
claim_unshared(Finish *f, PgqBlock *block, int64 *ids, int nids)
{
	for (;;)
	{
		PgqStatusIds status;
		TransactionId writer = InvalidTransactionId;

		pgq_status_ids(block, ids[0], ids[nids - 1], &status);
		for (int i = 0; i < nids && !TransactionIdIsValid(writer); i++)
		{
			if (pgq_in_sorted(status.done, status.ndone, ids[i]))
				ereport(ERROR,
						(errcode(ERRCODE_PGQ_LEASE_LOST),
						 errmsg("job %lld changed concurrently", (long long) ids[i]),
						 errdetail("Another transaction changed its state first.")));
			for (int p = 0; p < status.npending; p++)
				if (status.pending[p] == ids[i])
					writer = status.writers[p];
		}
		if (!TransactionIdIsValid(writer))
			return;
		XactLockTableWait(writer, NULL, NULL, XLTW_None);
	}
}

/*
 * claim_holds
 *		How many jobs a claim, as read, still holds.
 */
static int
claim_holds(PgqClaim *claim)
{
	return claim->all_acked ? 0 : claim->n - claim->nacked - claim->nleft;
}

/*
 * acked
 *		Jobs (ids, with their keys, tenants and next jobs, each array NULL
 *		if none) whose ack record went in: finished.
 */
static void
acked(Finish *f, int64 *ids, text **keys, text **tenants, int64 *next, int nids)
{
	for (int i = 0; i < nids; i++)
		finished(f, ids[i], PGQ_SUCCEEDED, 0, keys ? keys[i] : NULL,
				 tenants ? tenants[i] : NULL, next ? next[i] : 0);
}

/*
 * claim_append
 *		Append the record of a transition of some jobs (ids, sorted) of a
 *		claim, as (claim_id, last_seq + 1); an ack of all the jobs it still
 *		holds is written without ids.  Returns false if another record took
 *		that seq first; otherwise the jobs moved (finished()).
 */
static bool
claim_append(Finish *f, PgqBlock *block, PgqClaim *claim, int64 *ids, text **keys,
			 text **tenants, int64 *next, int nids)
{
	Datum	   *elems = palloc(sizeof(Datum) * nids);
	SPIPlanPtr	plan;
	int			rc;

	for (int i = 0; i < nids; i++)
		elems[i] = Int64GetDatum(ids[i]);
	f->args[0] = PointerGetDatum(construct_array(elems, nids, INT8OID, 8, FLOAT8PASSBYVAL,
												 TYPALIGN_DOUBLE));
	f->nulls[0] = f->op == FINISH_ACK && nids == claim_holds(claim) ? 'n' : ' ';
	f->args[11] = Int64GetDatum(claim->claim_id);
	f->args[12] = Int32GetDatum(claim->last_seq + 1);
	f->args[13] = Int32GetDatum(nids);
	if (f->op == FINISH_ACK)
		plan = pgq_block_plan(f->queue, block, PGQ_PLAN_CLAIM_ACK, claim_ack_sql,
							  FINISH_NARGS, finish_argtypes);
	else
	{
		if (exit_sql[f->op] == NULL)
			exit_sql[f->op] = op_fill(claim_exit_sql, f->op);
		plan = pgq_block_plan(f->queue, block, finish_ops[f->op].claim_kind, exit_sql[f->op],
							  FINISH_NARGS, finish_argtypes);
	}
	rc = SPI_execute_plan(plan, f->args, f->nulls, false, 0);
	f->nulls[0] = ' ';
	if (rc != SPI_OK_INSERT && rc != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not append to claim %lld of queue \"%s\": %s",
			 (long long) claim->claim_id, f->queue->name, SPI_result_code_string(rc));
	if (SPI_processed == 0)
		return false;
	if (f->op == FINISH_ACK)
	{
		acked(f, ids, keys, tenants, next, nids);
		return true;
	}
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		job_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		char		state = DatumGetChar(SPI_getbinval(tup, desc, 2, &isnull));
		Datum		due = SPI_getbinval(tup, desc, 3, &isnull);
		int			i;

		for (i = 0; i < nids && ids[i] != job_id; i++)
			;
		finished(f, job_id, state, isnull ? 0 : DatumGetTimestampTz(due),
				 keys && i < nids ? keys[i] : NULL, tenants && i < nids ? tenants[i] : NULL, 0);
	}
	return true;
}

/*
 * held_check
 *		Check that a group's claim, as read, still holds every job of the
 *		call for it, with no status row of its own.
 */
static void
held_check(Finish *f, PgqBlock *block, Held *held, HeldGroup *g, int64 *ids)
{
	for (int k = g->held_first; k < g->held_end; k++)
		if (held[k].group == g->tag)
			claim_check(f, &g->claim, &held[k]);
	claim_unshared(f, block, ids + g->first, g->nids);
}

/*
 * append_acks
 *		For an ack of jobs of several claims (groups, by claim id): the
 *		records of the claims all of whose jobs left are acked, in one
 *		statement, in that order; those that went in are done, the others
 *		lost the race for their seq (tried).
 */
static void
append_acks(Finish *f, PgqBlock *block, HeldGroup *groups, int ngroups, int64 *ids,
			text **keys, text **tenants, int64 *next)
{
	Datum	   *claim_ids;
	Datum	   *seqs;
	Datum	   *counts;
	int		   *which;
	int			n = 0;
	Datum		args[5];
	SPIPlanPtr	plan;
	int			rc;

	if (ngroups < 2)
		return;
	claim_ids = palloc(sizeof(Datum) * ngroups);
	seqs = palloc(sizeof(Datum) * ngroups);
	counts = palloc(sizeof(Datum) * ngroups);
	which = palloc(sizeof(int) * ngroups);
	for (int i = 0; i < ngroups; i++)
	{
		PgqClaim   *c = &groups[i].claim;

		if (groups[i].nids != claim_holds(c))
			continue;
		claim_ids[n] = Int64GetDatum(c->claim_id);
		seqs[n] = Int32GetDatum(c->last_seq + 1);
		counts[n] = Int32GetDatum(groups[i].nids);
		which[n++] = i;
	}
	if (n < 2)
		return;
	args[0] = Int32GetDatum(f->queue->queue_id);
	args[1] = TimestampTzGetDatum(f->now);
	args[2] = PointerGetDatum(construct_array(claim_ids, n, INT8OID, 8, FLOAT8PASSBYVAL,
											  TYPALIGN_DOUBLE));
	args[3] = PointerGetDatum(construct_array(seqs, n, INT4OID, 4, true, TYPALIGN_INT));
	args[4] = PointerGetDatum(construct_array(counts, n, INT4OID, 4, true, TYPALIGN_INT));
	plan = pgq_block_plan(f->queue, block, PGQ_PLAN_CLAIMS_ACK, claims_ack_sql, 5,
						  claims_ack_argtypes);
	rc = SPI_execute_plan(plan, args, NULL, false, 0);
	if (rc != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not append to claims of queue \"%s\": %s",
			 f->queue->name, SPI_result_code_string(rc));
	for (int k = 0; k < n; k++)
		groups[which[k]].tried = true;
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int64		claim_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r],
														   SPI_tuptable->tupdesc, 1, &isnull));
		HeldGroup  *g = bsearch(&claim_id, groups, ngroups, sizeof(HeldGroup), id_cmp);

		if (g == NULL || !g->tried)
			elog(ERROR, "claim %lld of queue \"%s\" was acked but not asked for",
				 (long long) claim_id, f->queue->name);
		g->appended = true;
		acked(f, ids + g->first, keys + g->first, tenants + g->first, next + g->first,
			  g->nids);
	}
	SPI_freetuptable(SPI_tuptable);
}

/*
 * finish_held
 *		Move the jobs that no status row holds: find the claim of each
 *		one's lane that holds it and check that it still holds every job of
 *		the call for it, then append the record of the transition to each
 *		claim, in claim id order (an ack of all that several claims hold:
 *		in one statement, append_acks).  A record that loses the race for
 *		its seq reads the claim again and retries, as often as the claim
 *		can change.  The work is linear in the jobs, whatever their claims.
 */
static void
finish_held(Finish *f, PgqBlock *block, Held *held, int nheld)
{
	int64	   *ids = palloc(sizeof(int64) * nheld);
	text	  **keys = palloc(sizeof(text *) * nheld);
	text	  **tenants = palloc(sizeof(text *) * nheld);
	int64	   *next = palloc(sizeof(int64) * nheld);
	HeldGroup  *groups = palloc0(sizeof(HeldGroup) * nheld);
	int			ngroups = 0;
	int			nids = 0;

	qsort(held, nheld, sizeof(Held), id_cmp);
	for (int i = 0; i < nheld; i++)
	{
		Held	   *h = &held[i];
		HeldGroup  *g = &groups[ngroups];
		Snapshot	snap;

		if (h->group >= 0)
			continue;
		snap = RegisterSnapshot(GetLatestSnapshot());
		if (!pgq_claim_find(block, h->job_id, h->priority, h->tenant, snap, &g->claim))
		{
			/* never claimed: available, as pgqueue_internal._state says */
			Unmoved		u = {.job_id = h->job_id,.exists = true,.state = '\0',
			.state_name = "available"};

			report_unmoved(f->queue, &u, f->now);
		}
		UnregisterSnapshot(snap);
		g->first = nids;
		g->tag = ngroups;

		/* held is sorted by id: the claim's jobs are among those up to hi */
		g->held_first = i;
		g->held_end = i;
		while (g->held_end < nheld && held[g->held_end].job_id <= g->claim.hi)
		{
			Held	   *k = &held[g->held_end++];

			if (k->group >= 0 || k->priority != h->priority || strcmp(k->tenant, h->tenant) != 0)
				continue;
			ids[nids] = k->job_id;
			keys[nids] = k->key;
			tenants[nids] = k->tenant_text;
			next[nids] = k->next;
			k->group = ngroups;
			nids++;
		}
		g->nids = nids - g->first;
		held_check(f, block, held, g, ids);
		ngroups++;
	}

	/* records go in by claim id, so that concurrent calls wait in one order */
	qsort(groups, ngroups, sizeof(HeldGroup), id_cmp);
	if (f->op == FINISH_ACK)
		append_acks(f, block, groups, ngroups, ids, keys, tenants, next);

	for (int i = 0; i < ngroups; i++)
	{
		HeldGroup  *g = &groups[i];

		for (int tries = 0; !g->appended; tries++)
		{
			if (g->tried)
			{
				Snapshot	snap;

				if (tries > g->claim.n + 2)
					ereport(ERROR,
							(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
							 errmsg("claim %lld of queue \"%s\" keeps changing",
									(long long) g->claim.claim_id, f->queue->name),
							 errhint("Retry the transaction.")));
				snap = RegisterSnapshot(GetLatestSnapshot());
				if (!pgq_claim_read(block, g->claim.claim_id, snap, &g->claim))
					elog(ERROR, "claim %lld of queue \"%s\" vanished",
						 (long long) g->claim.claim_id, f->queue->name);
				UnregisterSnapshot(snap);
				held_check(f, block, held, g, ids);
			}
			g->appended = claim_append(f, block, &g->claim, ids + g->first, keys + g->first,
									   tenants + g->first, next + g->first, g->nids);
			g->tried = true;
		}
	}
}

/*
 * finish_rows
 *		Move jobs of a block (sorted) by the statement that reads their
 *		latest status rows; a job that turns out to have none goes to its
 *		claim (finish_held).
 */
static void
finish_rows(Finish *f, PgqBlock *block, Request *reqs, int n)
{
	Datum	   *bids = palloc(sizeof(Datum) * n);
	Datum	   *battempts = palloc(sizeof(Datum) * n);
	bool	   *battempt_nulls = palloc(sizeof(bool) * n);
	int			dims[1] = {n};
	int			lbs[1] = {1};
	SPIPlanPtr	plan;
	Held	   *held;
	int			nheld = 0;
	int			rc;

	for (int i = 0; i < n; i++)
	{
		bids[i] = Int64GetDatum(reqs[i].job_id);
		battempts[i] = Int32GetDatum(reqs[i].attempt);
		battempt_nulls[i] = reqs[i].any_attempt;
	}
	f->args[0] = PointerGetDatum(construct_array(bids, n, INT8OID, 8,
												 FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	f->args[1] = PointerGetDatum(construct_md_array(battempts, battempt_nulls, 1, dims, lbs,
													INT4OID, 4, true, TYPALIGN_INT));
	if (op_sql[f->op] == NULL)
		op_sql[f->op] = op_fill(finish_sql, f->op);
	plan = pgq_block_plan(f->queue, block, finish_ops[f->op].kind, op_sql[f->op],
						  FINISH_NARGS, finish_argtypes);
	rc = SPI_execute_plan(plan, f->args, f->nulls, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not update jobs of queue \"%s\": %s",
			 f->queue->name, SPI_result_code_string(rc));

	/*
	 * The columns: job_id, state, attempt, due_at, new state, new due,
	 * exists, want, key, tenant, next, state name, priority
	 */
	held = palloc(sizeof(Held) * Max(SPI_processed, 1));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		bool		state_null;
		bool		new_state_null;
		Datum		new_state = SPI_getbinval(tup, desc, 5, &new_state_null);
		int64		job_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		char		state = DatumGetChar(SPI_getbinval(tup, desc, 2, &state_null));
		bool		exists = DatumGetBool(SPI_getbinval(tup, desc, 7, &isnull));
		Datum		want = SPI_getbinval(tup, desc, 8, &isnull);
		bool		want_null = isnull;
		Datum		key = SPI_getbinval(tup, desc, 9, &isnull);
		text	   *key_text = isnull ? NULL : DatumGetTextPCopy(key);
		Datum		tenant = SPI_getbinval(tup, desc, 10, &isnull);
		text	   *tenant_text = isnull ? NULL : DatumGetTextPCopy(tenant);
		Datum		next = SPI_getbinval(tup, desc, 11, &isnull);
		int64		next_id = isnull ? 0 : DatumGetInt64(next);

		if (new_state_null && state_null && exists && OidIsValid(block->claims_relid))
		{
			Held	   *h = &held[nheld++];

			/* no status row: its claim record, if any, holds it */
			h->job_id = job_id;
			h->any_attempt = want_null;
			h->want = want_null ? 0 : DatumGetInt32(want);
			h->priority = DatumGetInt32(SPI_getbinval(tup, desc, 13, &isnull));
			h->tenant[0] = '\0';
			if (tenant_text != NULL)
				text_to_cstring_buffer(tenant_text, h->tenant, NAMEDATALEN);
			h->key = key_text;
			h->tenant_text = tenant_text;
			h->next = next_id;
			h->group = -1;
			continue;
		}
		if (new_state_null)
		{
			Unmoved		u;

			u.job_id = job_id;
			u.exists = exists;
			u.state = state_null ? '\0' : state;
			u.attempt = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
			u.due = DatumGetTimestampTz(SPI_getbinval(tup, desc, 4, &isnull));
			u.any_attempt = want_null;
			u.want = want_null ? 0 : DatumGetInt32(want);
			u.state_name = SPI_getvalue(tup, desc, 12);
			report_unmoved(f->queue, &u, f->now);
		}
		{
			bool		due_null;
			Datum		due = SPI_getbinval(tup, desc, 6, &due_null);

			finished(f, job_id, DatumGetChar(new_state),
					 due_null ? 0 : DatumGetTimestampTz(due), key_text, tenant_text, next_id);
		}
	}
	if (nheld > 0)
		finish_held(f, block, held, nheld);
}

/*
 * key_next
 *		The jobs of a key in a block that follow job_id, as the snapshot of
 *		scan (of the block's (key, job_id) index) sees them, below bound and
 *		within PGQ_KEY_NEXT_SPAN ids: chain[0] is job_id, then up to
 *		PGQ_KEY_CHAIN - 1 of them in id order, each the key's next job
 *		after the one before.  Returns how many chain holds (1: no next job
 *		was found).  A next job further on is not looked for: the key's
 *		watermark then stops just past job_id, and the pop that gets that
 *		far probes (flow.c).  The span also keeps the index from reading
 *		every later job of the key on the page.
 */
#define PGQ_KEY_NEXT_SPAN	10000

static int
key_next(IndexScanDesc scan, TupleTableSlot *slot, text *key, int64 job_id, int64 bound,
		 int64 *chain)
{
	ScanKeyData skeys[3];
	int			n = 0;

	chain[n++] = job_id;
	ScanKeyEntryInitialize(&skeys[0], 0, 1, BTEqualStrategyNumber, InvalidOid,
						   scan->indexRelation->rd_indcollation[0], F_TEXTEQ,
						   PointerGetDatum(key));
	ScanKeyInit(&skeys[1], 2, BTGreaterStrategyNumber, F_INT8GT, Int64GetDatum(job_id));
	ScanKeyInit(&skeys[2], 2, BTLessStrategyNumber, F_INT8LT,
				Int64GetDatum(Min(job_id + PGQ_KEY_NEXT_SPAN, bound)));
	index_rescan(scan, skeys, 3, NULL, 0);
	while (n < PGQ_KEY_CHAIN && index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;

		chain[n++] = DatumGetInt64(slot_getattr(slot, PGQ_JATT_JOB_ID, &isnull));
		ExecClearTuple(slot);
	}
	return n;
}

/*
 * read_held
 *		Read jobs of a block without status rows (sorted) for their claims,
 *		as snap sees them: their lanes, keys and, for an ack, the next job
 *		of each key, from the key's entry if an earlier ack's look-up left
 *		it there, else looked up (one scan of the key index for all of
 *		them), with the jobs after it kept in the entry for later acks.  A
 *		job that does not exist is an error.
 */
static Held *
read_held(Finish *f, PgqBlock *block, Request *reqs, int n, Snapshot snap)
{
	Held	   *held = palloc(sizeof(Held) * n);
	Relation	jobs;
	Relation	pkey;
	Relation	keys = NULL;
	TupleTableSlot *slot;
	IndexScanDesc scan;
	IndexScanDesc next_scan = NULL;

	pgq_block_indexes(block);
	jobs = table_open(block->jobs_relid, AccessShareLock);
	pkey = index_open(block->jobs_pkey, AccessShareLock);
	slot = table_slot_create(jobs, NULL);
	scan = index_beginscan(jobs, pkey, snap, 1, 0);
	for (int i = 0; i < n; i++)
	{
		Held	   *h = &held[i];
		ScanKeyData skey;
		bool		isnull;
		Datum		d;

		ScanKeyInit(&skey, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(reqs[i].job_id));
		index_rescan(scan, &skey, 1, NULL, 0);
		if (!index_getnext_slot(scan, ForwardScanDirection, slot))
			ereport(ERROR,
					(errcode(ERRCODE_PGQ_JOB_NOT_FOUND),
					 errmsg("job %lld does not exist in queue \"%s\"",
							(long long) reqs[i].job_id, f->queue->name)));
		h->job_id = reqs[i].job_id;
		h->any_attempt = reqs[i].any_attempt;
		h->want = reqs[i].attempt;
		h->priority = DatumGetInt32(slot_getattr(slot, PGQ_JATT_PRIORITY, &isnull));
		d = slot_getattr(slot, PGQ_JATT_TENANT, &isnull);
		h->tenant_text = isnull ? NULL : DatumGetTextPCopy(d);
		h->tenant[0] = '\0';
		if (h->tenant_text != NULL)
			text_to_cstring_buffer(h->tenant_text, h->tenant, NAMEDATALEN);
		d = slot_getattr(slot, PGQ_JATT_KEY, &isnull);
		h->key = isnull ? NULL : DatumGetTextPCopy(d);
		ExecClearTuple(slot);
		h->next = 0;
		if (h->key != NULL && f->key_bound > 0)
		{
			/* where an earlier ack's look-up left it, else looked up */
			h->next = pgq_flow_key_next(f->queue, h->key, h->job_id);
			if (h->next == 0)
			{
				int64		chain[PGQ_KEY_CHAIN];
				int			nchain;

				if (next_scan == NULL)
				{
					keys = index_open(block->key_index, AccessShareLock);
					next_scan = index_beginscan(jobs, keys, snap, 3, 0);
				}
				nchain = key_next(next_scan, slot, h->key, h->job_id, f->key_bound, chain);
				pgq_flow_key_chain(f->queue, h->key, chain, nchain);
				h->next = nchain > 1 ? chain[1] : 0;
			}
		}
		h->group = -1;
	}
	index_endscan(scan);
	if (next_scan != NULL)
	{
		index_endscan(next_scan);
		index_close(keys, AccessShareLock);
	}
	ExecDropSingleTupleTableSlot(slot);
	index_close(pkey, AccessShareLock);
	table_close(jobs, AccessShareLock);
	return held;
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
	Request    *reqs = palloc(sizeof(Request) * Max(n, 1));
	int			nreqs = 0;
	int			start = 0;
	Finish		f;

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
	qsort(reqs, n, sizeof(Request), id_cmp);
	for (int i = 0; i < n; i++)
		if (nreqs == 0 || reqs[nreqs - 1].job_id != reqs[i].job_id)
			reqs[nreqs++] = reqs[i];

	SPI_connect();
	memset(&f, 0, sizeof(f));
	f.op = op;
	f.now = GetCurrentTimestamp();
	f.n = n;
	f.ids = ids;
	f.results = results;
	f.queue = pgq_queue_get(name);
	pgq_require_right(f.queue, PGQ_RIGHT_CONSUME);

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
			PgqBlock   *block = pgq_block_for_id(f.queue, reqs[i].job_id);

			if (block != NULL && block != last && !pgq_block_open(block, true))
				opened = false;
			last = block;
		}
		if (opened)
			break;
		if (tries == 3)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("the blocks of queue \"%s\" keep changing", f.queue->name),
					 errdetail("Maintenance compacted blocks of the queue while this call looked for its jobs."),
					 errhint("Retry the transaction.")));
		f.queue = pgq_queue_get(name);
	}

	memset(f.nulls, ' ', sizeof(f.nulls));
	f.args[2] = Int32GetDatum(f.queue->queue_id);
	f.args[3] = TimestampTzGetDatum(f.now);
	f.args[4] = Int32GetDatum(f.queue->max_attempts);
	f.args[5] = retry_in ? IntervalPGetDatum(retry_in) : (Datum) 0;
	f.nulls[5] = retry_in ? ' ' : 'n';
	f.args[6] = IntervalPGetDatum(&f.queue->backoff_base);
	f.args[7] = IntervalPGetDatum(&f.queue->backoff_cap);
	f.args[8] = Float8GetDatum(f.queue->backoff_jitter);
	f.args[9] = error ? PointerGetDatum(error) : (Datum) 0;
	f.nulls[9] = error ? ' ' : 'n';
	f.args[10] = lease ? IntervalPGetDatum(lease) : IntervalPGetDatum(&f.queue->default_lease);

	/*
	 * An ack's statements find the next job of each acked job's key: it may
	 * go next if it lies below the bound of open pushes, read before their
	 * snapshots (no job of the key can still appear between the two).
	 */
	if (op == FINISH_ACK && !IsolationUsesXactSnapshot())
		f.key_bound = pgq_lane_bound(f.queue);

	while (start < nreqs)
	{
		PgqBlock   *block = pgq_block_for_id(f.queue, reqs[start].job_id);
		int			end = start;
		Request    *rows = palloc(sizeof(Request) * (nreqs - start));
		Request    *fresh = palloc(sizeof(Request) * (nreqs - start));
		int			nrows = 0;
		int			nfresh = 0;

		if (block == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_PGQ_JOB_NOT_FOUND),
					 errmsg("job %lld does not exist in queue \"%s\"",
							(long long) reqs[start].job_id, f.queue->name)));
		while (end < nreqs && reqs[end].job_id <= block->last_id)
			end++;

		/*
		 * Jobs with status rows move by a statement that reads them; the
		 * others are read directly for their claims.  Only jobs close
		 * together are told apart this way, by one scan of the status
		 * rows in their range; the statement also hands the others over.
		 */
		if (OidIsValid(block->claims_relid) &&
			reqs[end - 1].job_id - reqs[start].job_id < 16 * (int64) (end - start))
		{
			PgqStatusIds status;

			pgq_status_ids(block, reqs[start].job_id, reqs[end - 1].job_id, &status);
			for (int i = start; i < end; i++)
				if (pgq_in_sorted(status.done, status.ndone, reqs[i].job_id) ||
					pgq_in_sorted(status.pending, status.npending, reqs[i].job_id))
					rows[nrows++] = reqs[i];
				else
					fresh[nfresh++] = reqs[i];
		}
		else
			for (int i = start; i < end; i++)
				rows[nrows++] = reqs[i];
		if (nrows > 0)
			finish_rows(&f, block, rows, nrows);
		if (nfresh > 0)
		{
			Snapshot	snap = RegisterSnapshot(GetLatestSnapshot());

			finish_held(&f, block, read_held(&f, block, fresh, nfresh, snap), nfresh);
			UnregisterSnapshot(snap);
		}
		start = end;
	}
	SPI_finish();
	return f.moved;
}

/*
 * pgq_claim_leave
 *		Lease expiry (expire, maintenance) or abort (reason, a repair) of
 *		jobs (ids, sorted) that a claim still holds, as one record: the jobs
 *		leave the claim for status rows "available" or "aborted".  Returns
 *		how many moved: 0 if the claim changed since it was read (the caller
 *		reads it again).
 */
int
pgq_claim_leave(PgqQueue *queue, PgqBlock *block, PgqClaim *claim, int64 *ids, int nids,
				text *reason)
{
	Finish		f;

	memset(&f, 0, sizeof(f));
	f.op = reason == NULL ? FINISH_EXPIRE : FINISH_ABORT;
	f.queue = queue;
	f.now = GetCurrentTimestamp();
	memset(f.nulls, ' ', sizeof(f.nulls));
	f.nulls[1] = f.nulls[5] = f.nulls[6] = f.nulls[7] = f.nulls[8] = f.nulls[10] = 'n';
	f.args[2] = Int32GetDatum(queue->queue_id);
	f.args[3] = TimestampTzGetDatum(f.now);
	f.args[4] = Int32GetDatum(queue->max_attempts);
	f.args[9] = PointerGetDatum(reason != NULL ? reason
								: cstring_to_text(psprintf("lease of attempt 1 expired at %s",
														   timestamptz_to_str(claim->lease_until))));
	if (!claim_append(&f, block, claim, ids, NULL, NULL, NULL, nids))
		return 0;
	/* the jobs' states changed outside the counted paths of flow control */
	pgq_note_for(queue)->flow.stale = true;
	return f.moved;
}

/*
 * pgq_claim_abort
 *		SQL: pgqueue_internal._claim_abort(queue_id, job_id, priority,
 *		tenant, reason) aborts one job that a claim holds, for queue_abort;
 *		false if no claim holds it now.
 */
Datum
pgq_claim_abort(PG_FUNCTION_ARGS)
{
	int64		job_id = PG_GETARG_INT64(1);
	char		tenant[NAMEDATALEN] = "";
	PgqQueue   *queue;
	PgqBlock   *block;
	PgqClaim	claim;
	Snapshot	snap;
	int64	   *ids;
	int			nids;
	bool		moved = false;

	if (!PG_ARGISNULL(3))
		text_to_cstring_buffer(PG_GETARG_TEXT_PP(3), tenant, NAMEDATALEN);
	SPI_connect();
	queue = pgq_queue_by_id(PG_GETARG_INT32(0));
	block = queue != NULL ? pgq_block_for_id(queue, job_id) : NULL;
	if (block != NULL && pgq_block_open(block, true))
	{
		snap = RegisterSnapshot(GetLatestSnapshot());
		if (pgq_claim_find(block, job_id, PG_GETARG_INT32(2), tenant, snap, &claim))
		{
			bool		writing;

			nids = pgq_claim_held(block, &claim, snap, &ids, &writing);
			if (pgq_in_sorted(ids, nids, job_id))
				moved = pgq_claim_leave(queue, block, &claim, &job_id, 1,
										pgq_clip_error(PG_GETARG_TEXT_PP(4))) > 0;
		}
		UnregisterSnapshot(snap);
	}
	SPI_finish();
	PG_RETURN_BOOL(moved);
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
