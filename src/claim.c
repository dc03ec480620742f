/*-------------------------------------------------------------------------
 *
 * claim.c
 *	  The state of a job: the one definition that pgqueue's C code and its
 *	  SQL (through pgqueue_internal._job_state) read.
 *
 * A job's state is, in this order:
 *   1. its latest status row, if it has one (per-job rows: scheduled, and
 *      everything after a job leaves a claim: fail, extend, release,
 *      lease expiry, retry, abort);
 *   2. else the claim record of its lane (priority, tenant) whose id range
 *      [lo, hi] holds it, if one does: claimed at the claim's time, attempt
 *      1, leased until the claim's lease end; succeeded when a later record
 *      of the claim acks it;
 *   3. else it was never claimed (available, or blocked by its key).
 * Rule 2 holds because the claims of a lane never overlap (lane cursors,
 * watermark.c), a claim takes every job of its lane in its range that had
 * no status row (a job it could not take gets one, "available"), and no
 * job can appear in a range later (claims stay below the bound of open
 * pushes).  A job leaves its claim for status rows of its own: the record
 * that says so and the first status row (seq 2; the claim was seq 1) are
 * written together, after a compare-and-append on the claim's (claim_id,
 * seq), which serializes everything that happens to the jobs of a claim.
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
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "claim.h"

PG_FUNCTION_INFO_V1(pgq_job_state_sql);
PG_FUNCTION_INFO_V1(pgq_job_claim_rows);
PG_FUNCTION_INFO_V1(pgq_block_states_sql);
PG_FUNCTION_INFO_V1(pgq_block_claim_rows);

/*
 * status_row_state
 *		The state that a status row in slot says (rule 1 of the file header)
 *		into *st; its error only if with_error (else NULL).
 */
static void
status_row_state(TupleTableSlot *slot, bool with_error, PgqJobState *st)
{
	bool		isnull;

	st->seq = DatumGetInt32(slot_getattr(slot, PGQ_SATT_SEQ, &isnull));
	st->state = DatumGetChar(slot_getattr(slot, PGQ_SATT_STATE, &isnull));
	st->attempt = DatumGetInt32(slot_getattr(slot, PGQ_SATT_ATTEMPT, &isnull));
	st->fails = DatumGetInt32(slot_getattr(slot, PGQ_SATT_FAILS, &isnull));
	st->at = DatumGetTimestampTz(slot_getattr(slot, PGQ_SATT_AT, &isnull));
	st->due_at = DatumGetTimestampTz(slot_getattr(slot, PGQ_SATT_DUE, &isnull));
	st->has_due = !isnull;
	st->error = NULL;
	if (with_error)
	{
		Datum		error = slot_getattr(slot, PGQ_SATT_ERROR, &isnull);

		if (!isnull)
			st->error = DatumGetTextPCopy(error);
	}
	st->claim_id = 0;
}

/*
 * latest_status
 *		The latest status row of a job into *st; false if it has none.
 */
static bool
latest_status(PgqBlock *block, int64 job_id, Snapshot snapshot, PgqJobState *st)
{
	Relation	status = table_open(block->status_relid, AccessShareLock);
	Relation	pkey = index_open(block->status_pkey, AccessShareLock);
	TupleTableSlot *slot = table_slot_create(status, NULL);
	ScanKeyData skey;
	IndexScanDesc scan;
	bool		found;

	ScanKeyInit(&skey, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(job_id));
	scan = index_beginscan(status, pkey, snapshot, 1, 0);
	index_rescan(scan, &skey, 1, NULL, 0);
	found = index_getnext_slot(scan, BackwardScanDirection, slot);
	if (found)
		status_row_state(slot, true, st);
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(pkey, AccessShareLock);
	table_close(status, AccessShareLock);
	return found;
}

/*
 * claimed_by_range
 *		Whether a job in a claim's range was claimed by it: it has no status
 *		row seq 1 (a job that leaves the claim gets rows from seq 2 on; one
 *		the claim passed over has rows from seq 1), as snapshot sees them.
 */
static bool
claimed_by_range(PgqBlock *block, int64 job_id, Snapshot snapshot)
{
	Relation	status = table_open(block->status_relid, AccessShareLock);
	Relation	pkey = index_open(block->status_pkey, AccessShareLock);
	TupleTableSlot *slot = table_slot_create(status, NULL);
	ScanKeyData skeys[2];
	IndexScanDesc scan;
	bool		found;

	ScanKeyInit(&skeys[0], 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(job_id));
	ScanKeyInit(&skeys[1], 2, BTEqualStrategyNumber, F_INT4EQ, Int32GetDatum(1));
	scan = index_beginscan(status, pkey, snapshot, 2, 0);
	index_rescan(scan, skeys, 2, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(pkey, AccessShareLock);
	table_close(status, AccessShareLock);
	return !found;
}

/*
 * pgq_lane_scan
 *		Begin a scan of a lane index of rel (priority, coalesce(tenant, ''),
 *		then an id: the jobs' lane index, or the claims' by range start)
 *		for one lane's entries with ids from lo to hi (0: no bound).
 */
IndexScanDesc
pgq_lane_scan(Relation rel, Relation index, Snapshot snapshot, int32 priority,
			  const char *tenant, int64 lo, int64 hi)
{
	ScanKeyData skeys[4];
	int			nkeys = 2;
	IndexScanDesc scan;

	ScanKeyInit(&skeys[0], 1, BTEqualStrategyNumber, F_INT4EQ, Int32GetDatum(priority));
	ScanKeyEntryInitialize(&skeys[1], 0, 2, BTEqualStrategyNumber, InvalidOid,
						   index->rd_indcollation[1], F_TEXTEQ, CStringGetTextDatum(tenant));
	if (lo > 0)
		ScanKeyInit(&skeys[nkeys++], 3, BTGreaterEqualStrategyNumber, F_INT8GE,
					Int64GetDatum(lo));
	if (hi > 0)
		ScanKeyInit(&skeys[nkeys++], 3, BTLessEqualStrategyNumber, F_INT8LE, Int64GetDatum(hi));
	scan = index_beginscan(rel, index, snapshot, nkeys, 0);
	index_rescan(scan, skeys, nkeys, NULL, 0);
	return scan;
}

/*
 * pgq_jobs_scan_begin
 *		Begin a scan of one lane's jobs of a block, jobs (opened), with ids
 *		from lo to hi, in id order, as snapshot sees them: through the lane
 *		index, or for the default lane (priority 0, no tenant), of which the
 *		lane index of a pushed block holds few jobs (_block_tables), through
 *		the primary key, passing the other lanes' jobs by.
 */
void
pgq_jobs_scan_begin(PgqJobsScan *js, PgqBlock *block, Relation jobs, Snapshot snapshot,
					int32 priority, const char *tenant, int64 lo, int64 hi)
{
	pgq_block_indexes(block);
	js->by_key = pgq_lane_is_default(priority, tenant);
	if (js->by_key)
	{
		ScanKeyData skeys[2];

		js->index = index_open(block->jobs_pkey, AccessShareLock);
		ScanKeyInit(&skeys[0], 1, BTGreaterEqualStrategyNumber, F_INT8GE, Int64GetDatum(lo));
		ScanKeyInit(&skeys[1], 1, BTLessEqualStrategyNumber, F_INT8LE, Int64GetDatum(hi));
		js->scan = index_beginscan(jobs, js->index, snapshot, 2, 0);
		index_rescan(js->scan, skeys, 2, NULL, 0);
	}
	else
	{
		js->index = index_open(block->jobs_lane, AccessShareLock);
		js->scan = pgq_lane_scan(jobs, js->index, snapshot, priority, tenant, lo, hi);
	}
}

/*
 * pgq_jobs_scan_next
 *		The next job of the lane into slot; false at the end.
 */
bool
pgq_jobs_scan_next(PgqJobsScan *js, TupleTableSlot *slot)
{
	while (index_getnext_slot(js->scan, ForwardScanDirection, slot))
	{
		bool		isnull;

		if (!js->by_key)
			return true;
		if (DatumGetInt32(slot_getattr(slot, PGQ_JATT_PRIORITY, &isnull)) != 0)
			continue;
		(void) slot_getattr(slot, PGQ_JATT_TENANT, &isnull);
		if (isnull)
			return true;
	}
	return false;
}

/*
 * pgq_jobs_scan_end
 *		End a scan of a lane's jobs.
 */
void
pgq_jobs_scan_end(PgqJobsScan *js)
{
	index_endscan(js->scan);
	index_close(js->index, AccessShareLock);
}

/*
 * claim_add_record
 *		Add one record of claim claim_id, in slot, to *claim: the claim
 *		itself (seq 0: returns true) or a later record (acks and leaves).
 *		The records of a claim must come in the order of their seq;
 *		*maxids is the room in claim's arrays (0 at first).
 */
static bool
claim_add_record(PgqClaim *claim, int64 claim_id, TupleTableSlot *slot, int *maxids)
{
	bool		isnull;
	int32		seq = DatumGetInt32(slot_getattr(slot, PGQ_CATT_SEQ, &isnull));
	char		kind = DatumGetChar(slot_getattr(slot, PGQ_CATT_KIND, &isnull));
	int32		n = DatumGetInt32(slot_getattr(slot, PGQ_CATT_N, &isnull));
	TimestampTz at = DatumGetTimestampTz(slot_getattr(slot, PGQ_CATT_AT, &isnull));
	Datum		ids;
	Datum	   *elems = NULL;
	bool	   *enulls;
	int			nelems = 0;

	claim->last_seq = Max(claim->last_seq, seq);
	if (seq == 0)
	{
		Datum		tenant;

		claim->claim_id = claim_id;
		claim->priority = DatumGetInt32(slot_getattr(slot, PGQ_CATT_PRIORITY, &isnull));
		tenant = slot_getattr(slot, PGQ_CATT_TENANT, &isnull);
		if (!isnull)
			text_to_cstring_buffer(DatumGetTextPP(tenant), claim->tenant, NAMEDATALEN);
		claim->lo = DatumGetInt64(slot_getattr(slot, PGQ_CATT_LO, &isnull));
		claim->hi = DatumGetInt64(slot_getattr(slot, PGQ_CATT_HI, &isnull));
		claim->n = n;
		claim->at = at;
		claim->lease_until = DatumGetTimestampTz(slot_getattr(slot, PGQ_CATT_LEASE, &isnull));
		return true;
	}
	if (kind == PGQ_CLAIM_ACKED)
		claim->nacked += n;
	else
		claim->nleft += n;
	ids = slot_getattr(slot, PGQ_CATT_IDS, &isnull);
	/* no ids: an ack of all the jobs that were left in the claim */
	claim->all_acked |= isnull;
	if (!isnull)
		deconstruct_array(DatumGetArrayTypeP(ids), INT8OID, 8, FLOAT8PASSBYVAL,
						  TYPALIGN_DOUBLE, &elems, &enulls, &nelems);
	if (claim->nids + nelems + 1 > *maxids)
	{
		*maxids = Max(16, 2 * (claim->nids + nelems + 1));
		claim->ids = claim->ids == NULL ? palloc(sizeof(int64) * *maxids)
			: repalloc(claim->ids, sizeof(int64) * *maxids);
		claim->kinds = claim->kinds == NULL ? palloc(*maxids)
			: repalloc(claim->kinds, *maxids);
		claim->ats = claim->ats == NULL ? palloc(sizeof(TimestampTz) * *maxids)
			: repalloc(claim->ats, sizeof(TimestampTz) * *maxids);
	}
	/* an ack of all is kept as id 0 */
	if (isnull)
	{
		claim->ids[claim->nids] = 0;
		claim->kinds[claim->nids] = kind;
		claim->ats[claim->nids++] = at;
	}
	for (int i = 0; i < nelems; i++)
	{
		claim->ids[claim->nids] = DatumGetInt64(elems[i]);
		claim->kinds[claim->nids] = kind;
		claim->ats[claim->nids++] = at;
	}
	return false;
}

/*
 * pgq_claim_read
 *		Read a claim record and every later record of it, as snapshot sees
 *		them; false if there is no such claim.
 */
bool
pgq_claim_read(PgqBlock *block, int64 claim_id, Snapshot snapshot, PgqClaim *claim)
{
	Relation	claims = table_open(block->claims_relid, AccessShareLock);
	Relation	pkey = index_open(block->claims_pkey, AccessShareLock);
	TupleTableSlot *slot = table_slot_create(claims, NULL);
	ScanKeyData skey;
	IndexScanDesc scan;
	bool		found = false;
	int			maxids = 0;

	memset(claim, 0, sizeof(*claim));
	ScanKeyInit(&skey, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(claim_id));
	scan = index_beginscan(claims, pkey, snapshot, 1, 0);
	index_rescan(scan, &skey, 1, NULL, 0);
	while (index_getnext_slot(scan, ForwardScanDirection, slot))
		found |= claim_add_record(claim, claim_id, slot, &maxids);
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(pkey, AccessShareLock);
	table_close(claims, AccessShareLock);
	return found;
}

/*
 * pgq_claim_fate
 *		What became of one job of a claim: PGQ_CLAIM_ACKED, PGQ_CLAIM_LEFT
 *		(with *at, when) or '\0' (it is still claimed).
 */
char
pgq_claim_fate(PgqClaim *claim, int64 job_id, TimestampTz *at)
{
	if (claim->ids_sorted)
	{
		int			lo = 0;
		int			hi = claim->nids;

		/* the first entry of job_id, the same one as in record order */
		while (lo < hi)
		{
			int			mid = lo + (hi - lo) / 2;

			if (claim->ids[mid] < job_id)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo < claim->nids && claim->ids[lo] == job_id)
		{
			*at = claim->ats[lo];
			return claim->kinds[lo];
		}
		if (claim->nids > 0 && claim->ids[0] == 0)
		{
			*at = claim->ats[0];
			return PGQ_CLAIM_ACKED;
		}
		return '\0';
	}
	for (int i = 0; i < claim->nids; i++)
		if (claim->ids[i] == job_id)
		{
			*at = claim->ats[i];
			return claim->kinds[i];
		}
	for (int i = 0; i < claim->nids; i++)
		if (claim->ids[i] == 0)
		{
			*at = claim->ats[i];
			return PGQ_CLAIM_ACKED;
		}
	return '\0';
}

/*
 * lane_last_claim
 *		The claim of a lane that begins last at or before id, into slot
 *		(from claims and its lane index, opened); false if there is none.
 *		A backward scan of the index reads every entry of the lane on the
 *		page above its lower bound before it returns one: it looks within
 *		PGQ_CLAIM_WINDOW ids below id first, where that claim usually
 *		begins, then within 16 times as many, then without a bound.
 */
#define PGQ_CLAIM_WINDOW	256

static bool
lane_last_claim(Relation claims, Relation lane, Snapshot snapshot, int32 priority,
				const char *tenant, int64 id, TupleTableSlot *slot)
{
	int64		windows[] = {PGQ_CLAIM_WINDOW, 16 * PGQ_CLAIM_WINDOW, 0};

	for (int i = 0; i < lengthof(windows); i++)
	{
		int64		from = windows[i] > 0 && windows[i] < id ? id - windows[i] : 0;
		IndexScanDesc scan = pgq_lane_scan(claims, lane, snapshot, priority, tenant, from, id);
		bool		found = index_getnext_slot(scan, BackwardScanDirection, slot);

		index_endscan(scan);
		if (found || from == 0)
			return found;
	}
	return false;
}

/*
 * pgq_claim_find
 *		The claim of a job's lane whose range holds the job, with its later
 *		records; false if there is none (or the block has no claims).
 */
bool
pgq_claim_find(PgqBlock *block, int64 job_id, int32 priority, const char *tenant,
			   Snapshot snapshot, PgqClaim *claim)
{
	Relation	claims;
	Relation	lane;
	TupleTableSlot *slot;
	int64		claim_id = 0;

	if (!OidIsValid(block->claims_relid))
		return false;
	pgq_block_indexes(block);
	claims = table_open(block->claims_relid, AccessShareLock);
	lane = index_open(block->claims_lane, AccessShareLock);
	slot = table_slot_create(claims, NULL);
	if (lane_last_claim(claims, lane, snapshot, priority, tenant, job_id, slot))
	{
		bool		isnull;

		if (DatumGetInt64(slot_getattr(slot, PGQ_CATT_HI, &isnull)) >= job_id)
			claim_id = DatumGetInt64(slot_getattr(slot, PGQ_CATT_CLAIM_ID, &isnull));
	}
	ExecDropSingleTupleTableSlot(slot);
	index_close(lane, AccessShareLock);
	table_close(claims, AccessShareLock);
	return claim_id != 0 && pgq_claim_read(block, claim_id, snapshot, claim);
}

/*
 * claimed_state
 *		The state of a job that a claim's range holds and that has no status
 *		row (rule 2 of the file header) into *st.
 */
static void
claimed_state(PgqClaim *claim, int64 job_id, PgqJobState *st)
{
	TimestampTz at;

	st->claim_id = claim->claim_id;
	st->attempt = 1;
	if (pgq_claim_fate(claim, job_id, &at) == PGQ_CLAIM_ACKED)
	{
		st->seq = 2;
		st->state = PGQ_SUCCEEDED;
		st->at = at;
	}
	else
	{
		st->seq = 1;
		st->state = PGQ_EXECUTING;
		st->at = claim->at;
		st->has_due = true;
		st->due_at = claim->lease_until;
	}
}

/*
 * pgq_status_due
 *		Whether a job of a block has its latest status row in one of states
 *		(their letters) with a due time at or before upto, as the
 *		statement the caller would run sees it (the transaction's snapshot,
 *		a new one under READ COMMITTED), and ready (if given, with that
 *		snapshot) says it may be taken.  A read that keeps no lock, so that a caller that finds
 *		nothing to do does not keep the block locked: it reads the status
 *		table in the order of its primary key, each job's rows together, the
 *		latest last.
 */
bool
pgq_status_due(PgqBlock *block, const char *states, TimestampTz upto,
			   bool (*ready) (PgqBlock *block, int64 job_id, Snapshot snapshot, void *arg),
			   void *arg)
{
	Snapshot	snapshot = RegisterSnapshot(GetTransactionSnapshot());
	Relation	status = table_open(block->status_relid, AccessShareLock);
	Relation	pkey;
	TupleTableSlot *slot = table_slot_create(status, NULL);
	IndexScanDesc scan;
	int64		job_id = 0;
	bool		candidate = false;
	bool		due = false;

	pgq_block_indexes(block);
	pkey = index_open(block->status_pkey, AccessShareLock);
	scan = index_beginscan(status, pkey, snapshot, 0, 0);
	index_rescan(scan, NULL, 0, NULL, 0);
	for (;;)
	{
		bool		more = index_getnext_slot(scan, ForwardScanDirection, slot);
		bool		isnull;
		int64		id = 0;
		Datum		at;

		if (more)
			id = DatumGetInt64(slot_getattr(slot, PGQ_SATT_JOB_ID, &isnull));
		/* the rows of job_id are all read: was its latest one due? */
		if ((!more || id != job_id) && candidate &&
			(ready == NULL || ready(block, job_id, snapshot, arg)))
		{
			due = true;
			break;
		}
		if (!more)
			break;
		job_id = id;
		at = slot_getattr(slot, PGQ_SATT_DUE, &isnull);
		candidate = !isnull && DatumGetTimestampTz(at) <= upto &&
			strchr(states, DatumGetChar(slot_getattr(slot, PGQ_SATT_STATE, &isnull))) != NULL;
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(pkey, AccessShareLock);
	table_close(status, AccessShareLock);
	UnregisterSnapshot(snapshot);
	return due;
}

/*
 * pgq_job_state
 *		The state of a job of a block (of lane priority, tenant) as
 *		snapshot sees it (see the file header).
 */
void
pgq_job_state(PgqBlock *block, int64 job_id, int32 priority, const char *tenant,
			  Snapshot snapshot, PgqJobState *st)
{
	PgqClaim	claim;

	memset(st, 0, sizeof(*st));
	pgq_block_indexes(block);
	if (latest_status(block, job_id, snapshot, st))
		return;
	if (!pgq_claim_find(block, job_id, priority, tenant, snapshot, &claim))
		return;
	claimed_state(&claim, job_id, st);
}

/*
 * The states of all the jobs of a block, read at once (pgq_block_states_read):
 * the latest status row of each job that has one, and the claims of every
 * lane with their later records.
 */
typedef struct PgqLatestStatus
{
	int64		job_id;
	int32		first_seq;		/* of its first row: 1 unless a claim took it */
	PgqJobState st;
} PgqLatestStatus;

typedef struct PgqLaneClaim
{
	PgqClaim	claim;
	ItemPointerData tid;		/* of its record seq 0 */
} PgqLaneClaim;

/* one claim record, copied, while the records are put in order */
typedef struct ClaimRecord
{
	int64		claim_id;
	int32		seq;
	ItemPointerData tid;
	HeapTuple	tuple;
} ClaimRecord;

/*
 * cmp_latest_status
 *		Order status rows by job and seq.
 */
static int
cmp_latest_status(const void *a, const void *b)
{
	const PgqLatestStatus *x = a;
	const PgqLatestStatus *y = b;

	if (x->job_id != y->job_id)
		return x->job_id < y->job_id ? -1 : 1;
	if (x->st.seq != y->st.seq)
		return x->st.seq < y->st.seq ? -1 : 1;
	return 0;
}

/*
 * cmp_claim_record
 *		Order claim records by claim and seq.
 */
static int
cmp_claim_record(const void *a, const void *b)
{
	const ClaimRecord *x = a;
	const ClaimRecord *y = b;

	if (x->claim_id != y->claim_id)
		return x->claim_id < y->claim_id ? -1 : 1;
	if (x->seq != y->seq)
		return x->seq < y->seq ? -1 : 1;
	return 0;
}

/*
 * cmp_lane_key
 *		Order a lane (priority, tenant) and an id against a claim: as the
 *		claims' lane index orders its entries.
 */
static int
cmp_lane_key(int32 priority, const char *tenant, int64 id, const PgqLaneClaim *c)
{
	int			r;

	if (priority != c->claim.priority)
		return priority < c->claim.priority ? -1 : 1;
	r = strcmp(tenant, c->claim.tenant);
	if (r != 0)
		return r;
	if (id != c->claim.lo)
		return id < c->claim.lo ? -1 : 1;
	return 0;
}

/*
 * cmp_lane_claim
 *		Order claims by lane and range start, then by the place of their
 *		record seq 0 (which orders equal entries of the lane index).
 */
static int
cmp_lane_claim(const void *a, const void *b)
{
	const PgqLaneClaim *x = a;
	const PgqLaneClaim *y = b;
	int			r = cmp_lane_key(x->claim.priority, x->claim.tenant, x->claim.lo, y);

	if (r != 0)
		return r;
	return ItemPointerCompare((ItemPointer) &x->tid, (ItemPointer) &y->tid);
}

/* a claim's ids with their place in record order, while they are sorted */
typedef struct FateEntry
{
	int64		id;
	int			pos;
} FateEntry;

/*
 * cmp_fate_entry
 *		Order the acks and leaves of a claim by job, then record order.
 */
static int
cmp_fate_entry(const void *a, const void *b)
{
	const FateEntry *x = a;
	const FateEntry *y = b;

	if (x->id != y->id)
		return x->id < y->id ? -1 : 1;
	return x->pos - y->pos;
}

/*
 * claim_sort_ids
 *		Sort the acks and leaves of a claim by job id, keeping the record
 *		order of the entries of one job, so that pgq_claim_fate can search
 *		them and still finds the entry it would find in record order.
 */
static void
claim_sort_ids(PgqClaim *claim)
{
	FateEntry  *e;
	int64	   *ids;
	char	   *kinds;
	TimestampTz *ats;

	if (claim->nids > 1)
	{
		e = palloc(sizeof(FateEntry) * claim->nids);
		for (int i = 0; i < claim->nids; i++)
		{
			e[i].id = claim->ids[i];
			e[i].pos = i;
		}
		qsort(e, claim->nids, sizeof(FateEntry), cmp_fate_entry);
		ids = palloc(sizeof(int64) * claim->nids);
		kinds = palloc(claim->nids);
		ats = palloc(sizeof(TimestampTz) * claim->nids);
		for (int i = 0; i < claim->nids; i++)
		{
			ids[i] = e[i].id;
			kinds[i] = claim->kinds[e[i].pos];
			ats[i] = claim->ats[e[i].pos];
		}
		pfree(e);
		pfree(claim->ids);
		pfree(claim->kinds);
		pfree(claim->ats);
		claim->ids = ids;
		claim->kinds = kinds;
		claim->ats = ats;
	}
	claim->ids_sorted = true;
}

/*
 * pgq_block_states_read
 *		Read what the states of a block's jobs are made of, as snapshot
 *		sees it, into *states: one sequential scan of its status table (the
 *		latest row of each job, without its error) and one of its claims
 *		table (NULL: the block has none).  The caller has the tables open.
 *		pgq_block_job_state then gives the state of each job.
 */
void
pgq_block_states_read(Relation status, Relation claims, Snapshot snapshot,
					  PgqBlockStates *states)
{
	TupleTableSlot *slot;
	TableScanDesc scan;
	int			max = 0;
	int			n = 0;

	memset(states, 0, sizeof(*states));

	/* rule 1: the latest status row of each job */
	slot = table_slot_create(status, NULL);
	scan = table_beginscan(status, snapshot, 0, NULL);
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;

		if (n == max)
		{
			max = Max(1024, max * 2);
			states->status = states->status == NULL
				? palloc_extended(sizeof(PgqLatestStatus) * max, MCXT_ALLOC_HUGE)
				: repalloc_huge(states->status, sizeof(PgqLatestStatus) * max);
		}
		states->status[n].job_id = DatumGetInt64(slot_getattr(slot, PGQ_SATT_JOB_ID, &isnull));
		status_row_state(slot, false, &states->status[n].st);
		n++;
	}
	table_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	if (n > 1)
		qsort(states->status, n, sizeof(PgqLatestStatus), cmp_latest_status);
	for (int i = 0; i < n; i++)
	{
		int32		first_seq = states->status[i].st.seq;

		if (states->nstatus > 0 &&
			states->status[states->nstatus - 1].job_id == states->status[i].job_id)
			first_seq = states->status[--states->nstatus].first_seq;
		states->status[states->nstatus] = states->status[i];
		states->status[states->nstatus++].first_seq = first_seq;
	}

	/* rule 2: the claims, each with its records in the order of their seq */
	if (claims != NULL)
	{
		ClaimRecord *records = NULL;
		TupleTableSlot *hslot;
		int			nrecords = 0;
		int			i = 0;

		max = 0;
		slot = table_slot_create(claims, NULL);
		scan = table_beginscan(claims, snapshot, 0, NULL);
		while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
		{
			bool		isnull;

			if (nrecords == max)
			{
				max = Max(256, max * 2);
				records = records == NULL
					? palloc_extended(sizeof(ClaimRecord) * max, MCXT_ALLOC_HUGE)
					: repalloc_huge(records, sizeof(ClaimRecord) * max);
			}
			records[nrecords].claim_id =
				DatumGetInt64(slot_getattr(slot, PGQ_CATT_CLAIM_ID, &isnull));
			records[nrecords].seq = DatumGetInt32(slot_getattr(slot, PGQ_CATT_SEQ, &isnull));
			records[nrecords].tid = slot->tts_tid;
			records[nrecords].tuple = ExecCopySlotHeapTuple(slot);
			nrecords++;
		}
		table_endscan(scan);
		ExecDropSingleTupleTableSlot(slot);
		if (nrecords > 1)
			qsort(records, nrecords, sizeof(ClaimRecord), cmp_claim_record);

		hslot = MakeSingleTupleTableSlot(RelationGetDescr(claims), &TTSOpsHeapTuple);
		max = 0;
		while (i < nrecords)
		{
			PgqLaneClaim *lc;
			int64		claim_id = records[i].claim_id;
			bool		found = false;
			int			maxids = 0;

			if (states->nclaims == max)
			{
				max = Max(64, max * 2);
				states->claims = states->claims == NULL
					? palloc_extended(sizeof(PgqLaneClaim) * max, MCXT_ALLOC_HUGE)
					: repalloc_huge(states->claims, sizeof(PgqLaneClaim) * max);
			}
			lc = &states->claims[states->nclaims];
			memset(lc, 0, sizeof(*lc));
			for (; i < nrecords && records[i].claim_id == claim_id; i++)
			{
				ExecStoreHeapTuple(records[i].tuple, hslot, true);
				if (claim_add_record(&lc->claim, claim_id, hslot, &maxids))
				{
					found = true;
					lc->tid = records[i].tid;
				}
			}
			/* a claim is found by its record seq 0 (pgq_claim_find) */
			if (found)
			{
				claim_sort_ids(&lc->claim);
				states->nclaims++;
			}
		}
		ExecDropSingleTupleTableSlot(hslot);
		if (records != NULL)
			pfree(records);
		if (states->nclaims > 1)
			qsort(states->claims, states->nclaims, sizeof(PgqLaneClaim), cmp_lane_claim);
	}
}

/*
 * pgq_slot_job_lane
 *		The id of the job row in slot, and its lane: *priority, and its
 *		tenant into a buffer of NAMEDATALEN bytes ('' for none).
 */
int64
pgq_slot_job_lane(TupleTableSlot *slot, int32 *priority, char *tenant)
{
	bool		isnull;
	Datum		t = slot_getattr(slot, PGQ_JATT_TENANT, &isnull);

	tenant[0] = '\0';
	if (!isnull)
		text_to_cstring_buffer(DatumGetTextPP(t), tenant, NAMEDATALEN);
	*priority = DatumGetInt32(slot_getattr(slot, PGQ_JATT_PRIORITY, &isnull));
	return DatumGetInt64(slot_getattr(slot, PGQ_JATT_JOB_ID, &isnull));
}

/*
 * states_latest
 *		The latest status row of a job in what pgq_block_states_read read
 *		(rule 1); NULL if it has none.
 */
static PgqLatestStatus *
states_latest(PgqBlockStates *states, int64 job_id)
{
	int			lo = 0;
	int			hi = states->nstatus - 1;

	while (lo <= hi)
	{
		int			mid = lo + (hi - lo) / 2;
		int64		id = states->status[mid].job_id;

		if (id == job_id)
			return &states->status[mid];
		if (id < job_id)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return NULL;
}

/*
 * states_claim
 *		The claim of a job's lane whose range holds the job, in what
 *		pgq_block_states_read read (rule 2): the last claim of the lane
 *		that begins at job_id or before (as pgq_claim_find reads the lane
 *		index backwards), if it reaches it; NULL if none does.
 */
static PgqClaim *
states_claim(PgqBlockStates *states, int64 job_id, int32 priority, const char *tenant)
{
	int			lo = 0;
	int			hi = states->nclaims;
	PgqClaim   *claim;

	while (lo < hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (cmp_lane_key(priority, tenant, job_id, &states->claims[mid]) >= 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return NULL;
	claim = &states->claims[lo - 1].claim;
	if (claim->priority != priority || strcmp(claim->tenant, tenant) != 0 || claim->hi < job_id)
		return NULL;
	return claim;
}

/*
 * pgq_block_job_state
 *		The state of a job of a block (of lane priority, tenant) from what
 *		pgq_block_states_read read: what pgq_job_state gives under the same
 *		snapshot, but for the error of its latest status row (NULL).
 */
void
pgq_block_job_state(PgqBlockStates *states, int64 job_id, int32 priority, const char *tenant,
					PgqJobState *st)
{
	PgqLatestStatus *latest = states_latest(states, job_id);
	PgqClaim   *claim;

	memset(st, 0, sizeof(*st));
	if (latest != NULL)
		*st = latest->st;
	else if ((claim = states_claim(states, job_id, priority, tenant)) != NULL)
		claimed_state(claim, job_id, st);
}

/*
 * pgq_in_sorted
 *		Whether a sorted array holds a value.
 */
bool
pgq_in_sorted(const int64 *a, int n, int64 v)
{
	int			lo = 0;
	int			hi = n - 1;

	while (lo <= hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (a[mid] == v)
			return true;
		if (a[mid] < v)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return false;
}

/*
 * pgq_claim_held
 *		The jobs a claim still holds, as snapshot sees its records: the jobs
 *		of its lane in its range without status rows, not yet acked or
 *		left.  Returns how many, sorted in *ids.  *writing tells that a
 *		status row of one of the others is being written (by a change of it
 *		that may still roll back): the answer is not final.
 */
int
pgq_claim_held(PgqBlock *block, PgqClaim *claim, Snapshot snapshot, int64 **ids,
			   bool *writing)
{
	Relation	jobs;
	TupleTableSlot *slot;
	PgqJobsScan scan;
	PgqStatusIds status;
	int			n = 0;
	int			max = 16;

	*ids = NULL;
	*writing = false;
	if (claim->all_acked || claim->nacked + claim->nleft >= claim->n)
		return 0;
	pgq_block_indexes(block);
	pgq_status_ids(block, claim->lo, claim->hi, &status);
	*ids = palloc(sizeof(int64) * max);
	jobs = table_open(block->jobs_relid, AccessShareLock);
	slot = table_slot_create(jobs, NULL);
	pgq_jobs_scan_begin(&scan, block, jobs, snapshot, claim->priority, claim->tenant,
						claim->lo, claim->hi);
	while (pgq_jobs_scan_next(&scan, slot))
	{
		bool		isnull;
		int64		job_id = DatumGetInt64(slot_getattr(slot, PGQ_JATT_JOB_ID, &isnull));
		TimestampTz at;

		if (pgq_in_sorted(status.done, status.ndone, job_id) ||
			pgq_claim_fate(claim, job_id, &at) != '\0')
			continue;
		if (pgq_in_sorted(status.pending, status.npending, job_id))
		{
			*writing = true;
			continue;
		}
		if (n == max)
		{
			max *= 2;
			*ids = repalloc(*ids, sizeof(int64) * max);
		}
		(*ids)[n++] = job_id;
	}
	pgq_jobs_scan_end(&scan);
	ExecDropSingleTupleTableSlot(slot);
	table_close(jobs, AccessShareLock);
	return n;
}

/*
 * pgq_status_ids
 *		The jobs with an id in [lo, hi] that have status rows, into *ids
 *		(PgqStatusIds).  A dirty snapshot sees both kinds; a job with a
 *		committed row is done, whatever else is being written for it.
 */
void
pgq_status_ids(PgqBlock *block, int64 lo, int64 hi, PgqStatusIds *ids)
{
	Relation	status = table_open(block->status_relid, AccessShareLock);
	Relation	pkey;
	TupleTableSlot *slot = table_slot_create(status, NULL);
	ScanKeyData skeys[2];
	IndexScanDesc scan;
	SnapshotData dirty;
	int			maxdone = 0;
	int			maxpending = 0;

	pgq_block_indexes(block);
	pkey = index_open(block->status_pkey, AccessShareLock);
	InitDirtySnapshot(dirty);
	memset(ids, 0, sizeof(*ids));
	ScanKeyInit(&skeys[0], 1, BTGreaterEqualStrategyNumber, F_INT8GE, Int64GetDatum(lo));
	ScanKeyInit(&skeys[1], 1, BTLessEqualStrategyNumber, F_INT8LE, Int64GetDatum(hi));
	scan = index_beginscan(status, pkey, &dirty, 2, 0);
	index_rescan(scan, skeys, 2, NULL, 0);
	while (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		int64		job_id = DatumGetInt64(slot_getattr(slot, PGQ_SATT_JOB_ID, &isnull));
		TransactionId writer = TransactionIdIsValid(dirty.xmin) ? dirty.xmin : dirty.xmax;

		if (ids->ndone > 0 && ids->done[ids->ndone - 1] == job_id)
			continue;
		if (!TransactionIdIsValid(writer))
		{
			if (ids->ndone == maxdone)
			{
				maxdone = Max(16, maxdone * 2);
				ids->done = ids->done == NULL ? palloc(sizeof(int64) * maxdone)
					: repalloc(ids->done, sizeof(int64) * maxdone);
			}
			ids->done[ids->ndone++] = job_id;
			/* committed: not pending after all */
			if (ids->npending > 0 && ids->pending[ids->npending - 1] == job_id)
				ids->npending--;
			continue;
		}
		if (ids->npending > 0 && ids->pending[ids->npending - 1] == job_id)
			continue;
		if (ids->npending == maxpending)
		{
			maxpending = Max(16, maxpending * 2);
			ids->pending = ids->pending == NULL ? palloc(sizeof(int64) * maxpending)
				: repalloc(ids->pending, sizeof(int64) * maxpending);
			ids->writers = ids->writers == NULL ? palloc(sizeof(TransactionId) * maxpending)
				: repalloc(ids->writers, sizeof(TransactionId) * maxpending);
		}
		ids->pending[ids->npending] = job_id;
		ids->writers[ids->npending++] = writer;
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(pkey, AccessShareLock);
	table_close(status, AccessShareLock);
}

/*
 * pgq_claims_overlap
 *		Whether a claim of a lane, committed or being written, holds an id
 *		in [lo, hi] (the claims of a lane never overlap, but for a range
 *		that the lane's cursor handed out twice: see pop.c).
 */
bool
pgq_claims_overlap(PgqBlock *block, int32 priority, const char *tenant, int64 lo, int64 hi)
{
	Relation	claims;
	Relation	lane;
	TupleTableSlot *slot;
	SnapshotData dirty;
	bool		overlap = false;

	pgq_block_indexes(block);
	claims = table_open(block->claims_relid, AccessShareLock);
	lane = index_open(block->claims_lane, AccessShareLock);
	slot = table_slot_create(claims, NULL);
	InitDirtySnapshot(dirty);
	if (lane_last_claim(claims, lane, &dirty, priority, tenant, hi, slot))
	{
		bool		isnull;

		overlap = DatumGetInt64(slot_getattr(slot, PGQ_CATT_HI, &isnull)) >= lo;
	}
	ExecDropSingleTupleTableSlot(slot);
	index_close(lane, AccessShareLock);
	table_close(claims, AccessShareLock);
	return overlap;
}

/*
 * pgq_claims_lane
 *		Read a lane's claims back (with a dirty snapshot, so that claims
 *		being written count), those that begin at from or later (0: all):
 *		returns the end of the last claim (the lane's cursor), and up to
 *		maxgaps ranges between claims (claims that rolled back, or ranges
 *		read while the claims' records were lost) into gaps; *resume is
 *		where the next gap begins if there were more (else 0).
 */
int64
pgq_claims_lane(PgqBlock *block, int32 priority, const char *tenant, int64 from,
				PgqRange *gaps, int maxgaps, int *ngaps, int64 *resume)
{
	Relation	claims;
	Relation	lane;
	TupleTableSlot *slot;
	IndexScanDesc scan;
	SnapshotData dirty;
	int64		next = Max(from, block->first_id);

	*ngaps = 0;
	*resume = 0;
	pgq_block_indexes(block);
	claims = table_open(block->claims_relid, AccessShareLock);
	lane = index_open(block->claims_lane, AccessShareLock);
	slot = table_slot_create(claims, NULL);
	InitDirtySnapshot(dirty);
	scan = pgq_lane_scan(claims, lane, &dirty, priority, tenant, next, 0);
	while (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		int64		lo = DatumGetInt64(slot_getattr(slot, PGQ_CATT_LO, &isnull));
		int64		hi = DatumGetInt64(slot_getattr(slot, PGQ_CATT_HI, &isnull));

		if (lo > next)
		{
			if (*ngaps < maxgaps)
			{
				gaps[*ngaps].lo = next;
				gaps[*ngaps].hi = lo - 1;
				(*ngaps)++;
			}
			else if (*resume == 0)
				*resume = next;
		}
		next = Max(next, hi + 1);
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(lane, AccessShareLock);
	table_close(claims, AccessShareLock);
	return next;
}

/*
 * pgq_job_state_sql
 *		SQL: pgqueue_internal._job_state(queue_id, job_id, priority, tenant)
 *		returns the state of one job (see the file header) as the statement
 *		sees it: seq, state, attempt, fails, at, due_at, error, claim_id;
 *		state NULL if it was never claimed.
 */
Datum
pgq_job_state_sql(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[8];
	bool		nulls[8];
	PgqQueue   *queue;
	PgqBlock   *block;
	PgqJobState st;
	char		tenant[NAMEDATALEN] = "";
	int64		job_id = PG_GETARG_INT64(1);

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (!PG_ARGISNULL(3))
		text_to_cstring_buffer(PG_GETARG_TEXT_PP(3), tenant, NAMEDATALEN);
	queue = pgq_queue_by_id(PG_GETARG_INT32(0));
	block = queue != NULL ? pgq_block_for_id(queue, job_id) : NULL;
	memset(nulls, true, sizeof(nulls));
	if (block != NULL && OidIsValid(block->status_relid))
	{
		pgq_job_state(block, job_id, PG_GETARG_INT32(2), tenant, GetActiveSnapshot(), &st);
		values[0] = Int32GetDatum(st.seq);
		values[1] = CharGetDatum(st.state);
		values[2] = Int32GetDatum(st.attempt);
		values[3] = Int32GetDatum(st.fails);
		values[4] = TimestampTzGetDatum(st.at);
		values[5] = TimestampTzGetDatum(st.due_at);
		values[6] = PointerGetDatum(st.error);
		values[7] = Int64GetDatum(st.claim_id);
		nulls[0] = nulls[2] = nulls[3] = false;
		nulls[1] = nulls[4] = st.state == '\0';
		nulls[5] = !st.has_due;
		nulls[6] = st.error == NULL;
		nulls[7] = st.claim_id == 0;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/*
 * put_claim_rows
 *		Add the transitions of a job that its claim holds to a result, as
 *		status rows: claimed (seq 1, executing) and, if an ack of the claim
 *		took it, succeeded (seq 2).
 */
static void
put_claim_rows(ReturnSetInfo *rsinfo, int32 queue_id, int64 job_id, PgqClaim *claim)
{
	Datum		values[9];
	bool		nulls[9];
	TimestampTz at;

	/* queue_id, job_id, seq, state, attempt, fails, at, due_at, error */
	memset(nulls, false, sizeof(nulls));
	values[0] = Int32GetDatum(queue_id);
	values[1] = Int64GetDatum(job_id);
	values[2] = Int32GetDatum(1);
	values[3] = CharGetDatum(PGQ_EXECUTING);
	values[4] = Int32GetDatum(1);
	values[5] = Int32GetDatum(0);
	values[6] = TimestampTzGetDatum(claim->at);
	values[7] = TimestampTzGetDatum(claim->lease_until);
	nulls[8] = true;
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	if (pgq_claim_fate(claim, job_id, &at) == PGQ_CLAIM_ACKED)
	{
		values[2] = Int32GetDatum(2);
		values[3] = CharGetDatum(PGQ_SUCCEEDED);
		values[6] = TimestampTzGetDatum(at);
		nulls[7] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
}

/*
 * pgq_job_claim_rows
 *		SQL: pgqueue_internal._job_claim_rows(queue_id, job_id, priority,
 *		tenant) returns the transitions of a job that its claim record holds
 *		(put_claim_rows); none if no claim took it.
 */
Datum
pgq_job_claim_rows(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int32		queue_id = PG_GETARG_INT32(0);
	int64		job_id = PG_GETARG_INT64(1);
	char		tenant[NAMEDATALEN] = "";
	PgqQueue   *queue;
	PgqBlock   *block;
	PgqClaim	claim;
	Snapshot	snapshot = GetActiveSnapshot();

	InitMaterializedSRF(fcinfo, 0);
	if (!PG_ARGISNULL(3))
		text_to_cstring_buffer(PG_GETARG_TEXT_PP(3), tenant, NAMEDATALEN);
	queue = pgq_queue_by_id(queue_id);
	block = queue != NULL ? pgq_block_for_id(queue, job_id) : NULL;
	if (block == NULL || !OidIsValid(block->claims_relid) || !OidIsValid(block->status_relid))
		return (Datum) 0;
	pgq_block_indexes(block);
	if (pgq_claim_find(block, job_id, PG_GETARG_INT32(2), tenant, snapshot, &claim) &&
		claimed_by_range(block, job_id, snapshot))
		put_claim_rows(rsinfo, queue_id, job_id, &claim);
	return (Datum) 0;
}

/*
 * block_jobs
 *		For every job of a block as the statement sees it, what _job_state
 *		(without claim_rows: job_id, state, at) or _job_claim_rows (with
 *		it) gives, from its status rows and claims read at once, then its
 *		jobs, into the result of an SRF whose arguments are queue_id and
 *		block_no (compaction: the new block covers the ids of the old ones
 *		until it commits).  Nothing if the block or its tables are gone.
 */
static void
block_jobs(FunctionCallInfo fcinfo, bool claim_rows)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int32		queue_id = PG_GETARG_INT32(0);
	Snapshot	snapshot = GetActiveSnapshot();
	PgqQueue   *queue;
	PgqBlock   *block;
	PgqBlockStates states;
	Relation	jobs;
	Relation	status;
	Relation	claims = NULL;
	TupleTableSlot *slot;
	TableScanDesc scan;

	InitMaterializedSRF(fcinfo, 0);
	queue = pgq_queue_by_id(queue_id);
	block = queue != NULL ? pgq_block_by_no(queue, PG_GETARG_INT32(1)) : NULL;
	if (block == NULL || !OidIsValid(block->jobs_relid) || !OidIsValid(block->status_relid))
		return;
	jobs = table_open(block->jobs_relid, AccessShareLock);
	status = table_open(block->status_relid, AccessShareLock);
	if (OidIsValid(block->claims_relid))
		claims = table_open(block->claims_relid, AccessShareLock);
	pgq_block_states_read(status, claims, snapshot, &states);

	slot = table_slot_create(jobs, NULL);
	scan = table_beginscan(jobs, snapshot, 0, NULL);
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		int32		priority;
		char		tenant[NAMEDATALEN];
		int64		job_id = pgq_slot_job_lane(slot, &priority, tenant);

		if (claim_rows)
		{
			PgqLatestStatus *latest = states_latest(&states, job_id);
			PgqClaim   *claim = states_claim(&states, job_id, priority, tenant);

			/* claimed by its range: no status row seq 1 (claimed_by_range) */
			if (claim != NULL && (latest == NULL || latest->first_seq != 1))
				put_claim_rows(rsinfo, queue_id, job_id, claim);
		}
		else
		{
			PgqJobState st;
			Datum		values[3];
			bool		nulls[3];

			pgq_block_job_state(&states, job_id, priority, tenant, &st);
			values[0] = Int64GetDatum(job_id);
			values[1] = CharGetDatum(st.state);
			values[2] = TimestampTzGetDatum(st.at);
			nulls[0] = false;
			nulls[1] = nulls[2] = st.state == '\0';
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	}
	table_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	if (claims != NULL)
		table_close(claims, AccessShareLock);
	table_close(status, AccessShareLock);
	table_close(jobs, AccessShareLock);
}

/*
 * pgq_block_states_sql
 *		SQL: pgqueue_internal._block_states(queue_id, block_no) returns the
 *		state of every job of a block (block_jobs): job_id, state, at.
 */
Datum
pgq_block_states_sql(PG_FUNCTION_ARGS)
{
	block_jobs(fcinfo, false);
	return (Datum) 0;
}

/*
 * pgq_block_claim_rows
 *		SQL: pgqueue_internal._block_claim_rows(queue_id, block_no) returns
 *		the transitions that claims hold of every job of a block
 *		(block_jobs), as status rows.
 */
Datum
pgq_block_claim_rows(PG_FUNCTION_ARGS)
{
	block_jobs(fcinfo, true);
	return (Datum) 0;
}
