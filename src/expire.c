/*-------------------------------------------------------------------------
 *
 * expire.c
 *	  Lease expiry, a maintenance duty: pgqueue_internal._expire_leases.
 *
 * An expired lease counts as a failed attempt: its job becomes available
 * at once, or aborted when its attempts are used up.  Leases held by
 * status rows end by one statement per block, through the index of
 * executing rows by lease end.  Leases of claim records (claim.c) end by
 * a record that the jobs the claim still holds leave it, with their status
 * rows (finish.c).
 *
 * A round must cost what changed, not what is stored, and the claims of a
 * block stay in its table after their jobs finished.  So the claims are
 * read by lease end from where this backend's last round of the block
 * left off (the worker keeps that between rounds; any other backend
 * starts at the beginning, and so does every block after a rollback that
 * may have taken back what a round did), up to now less
 * PGQ_EXPIRY_MARGIN: a claim
 * record's lease end is computed by the statement that inserts it, so a
 * claim that is not in the index yet ends after that.  A claim whose
 * transaction is still running is remembered and read again next round;
 * if too many are, the round stops at the first one it cannot remember.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/nbtree.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "storage/procarray.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "cache.h"
#include "claim.h"
#include "expire.h"
#include "finish.h"
#include "note.h"

PG_FUNCTION_INFO_V1(pgq_expire_leases);

/* how far behind now a round leaves claims to read again */
#define PGQ_EXPIRY_MARGIN	(1 * USECS_PER_SEC)

/* claims of running transactions remembered per block */
#define PGQ_EXPIRY_PENDING	64

/* blocks whose place this backend remembers; more start over */
#define PGQ_EXPIRY_BLOCKS	4096

/* a claim whose transaction was running when it was read */
typedef struct PendingClaim
{
	int64		claim_id;
	TransactionId xmin;
} PendingClaim;

/* where the last round of a block left off, in this backend */
typedef struct ExpiryKey
{
	Oid			claims_relid;
	int32		queue_id;
	int32		block_no;
} ExpiryKey;

typedef struct ExpiryState
{
	ExpiryKey	key;
	TimestampTz from;			/* claims ending before are done with */
	int			npending;
	PendingClaim pending[PGQ_EXPIRY_PENDING];
} ExpiryState;

static HTAB *expiry_states = NULL;

/*
 * forget_places
 *		A transaction or subtransaction that rolls back may take back what
 *		its rounds expired: every block is read from the start next time.
 */
static void
forget_places(void)
{
	if (expiry_states != NULL)
		hash_destroy(expiry_states);
	expiry_states = NULL;
}

static void
expiry_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT)
		forget_places();
}

static void
expiry_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
		forget_places();
}

/*
 * pgq_expiry_prune
 *		Forget the places of blocks whose claims table is gone (compacted
 *		or dropped), so that a long-lived backend (the maintenance worker)
 *		keeps none for the blocks it outlived.  In a transaction.
 */
void
pgq_expiry_prune(void)
{
	HASH_SEQ_STATUS seq;
	ExpiryState *st;

	if (expiry_states == NULL)
		return;
	hash_seq_init(&seq, expiry_states);
	while ((st = hash_seq_search(&seq)) != NULL)
		if (get_rel_relkind(st->key.claims_relid) == '\0')
			(void) hash_search(expiry_states, &st->key, HASH_REMOVE, NULL);
}

/* end the expired leases that status rows hold */
static const char *expire_sql =
"WITH i AS ("
"  INSERT INTO %2$s (queue_id, job_id, seq, state, attempt, fails, at, due_at, error)"
"  SELECT s.queue_id, s.job_id, s.seq + 1,"
"         CASE WHEN s.fails + 1 >= $2 THEN 'x' ELSE 'a' END,"
"         s.attempt, s.fails + 1, $1,"
"         CASE WHEN s.fails + 1 >= $2 THEN NULL ELSE $1 END,"
"         format('lease of attempt %%s expired at %%s', s.attempt, s.due_at)"
"  FROM %2$s s"
"  WHERE s.state = 'e' AND s.due_at < $1"
"    AND NOT EXISTS (SELECT 1 FROM %2$s n WHERE n.job_id = s.job_id AND n.seq > s.seq)"
"  ON CONFLICT DO NOTHING"
"  RETURNING state)"
" SELECT count(*), count(*) FILTER (WHERE state = 'x') FROM i";
static Oid	expire_argtypes[2] = {TIMESTAMPTZOID, INT4OID};

/*
 * expiry_state
 *		Where this backend's last round of a block left off; a new entry
 *		starts at the beginning.
 */
static ExpiryState *
expiry_state(PgqQueue *queue, PgqBlock *block)
{
	ExpiryKey	key;
	ExpiryState *st;
	bool		found;

	if (expiry_states == NULL || hash_get_num_entries(expiry_states) >= PGQ_EXPIRY_BLOCKS)
	{
		static bool callbacks_set = false;
		HASHCTL		ctl;

		if (!callbacks_set)
		{
			RegisterXactCallback(expiry_xact_callback, NULL);
			RegisterSubXactCallback(expiry_subxact_callback, NULL);
			callbacks_set = true;
		}
		if (expiry_states != NULL)
			hash_destroy(expiry_states);
		ctl.keysize = sizeof(ExpiryKey);
		ctl.entrysize = sizeof(ExpiryState);
		ctl.hcxt = TopMemoryContext;
		expiry_states = hash_create("pgqueue expiry", 64, &ctl,
									HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	memset(&key, 0, sizeof(key));
	key.claims_relid = block->claims_relid;
	key.queue_id = queue->queue_id;
	key.block_no = block->block_no;
	st = hash_search(expiry_states, &key, HASH_ENTER, &found);
	if (!found)
	{
		st->from = DT_NOBEGIN;
		st->npending = 0;
	}
	return st;
}

/*
 * expire_status
 *		End the expired leases of a block held by status rows; returns how
 *		many.
 */
static int64
expire_status(PgqQueue *queue, PgqBlock *block, TimestampTz now)
{
	SPIPlanPtr	plan = pgq_block_plan(queue, block, PGQ_PLAN_EXPIRE, expire_sql, 2,
									  expire_argtypes);
	Datum		args[2] = {TimestampTzGetDatum(now), Int32GetDatum(queue->max_attempts)};
	bool		isnull;
	int64		n;
	int64		aborted;
	int			rc;

	rc = SPI_execute_plan(plan, args, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not end the expired leases of queue \"%s\": %s",
			 queue->name, SPI_result_code_string(rc));
	n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	aborted = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2,
										  &isnull));
	if (n > 0)
	{
		if (n > aborted)
			pgq_note_due(queue, now);
		pgq_note(queue, PGQ_COUNT_ABORTED, aborted);
		/* the jobs' states changed outside the counted paths of flow control */
		pgq_note_for(queue)->flow.stale = true;
	}
	return n;
}

/*
 * remember
 *		Keep a claim to read again next round; false if there is no room.
 */
static bool
remember(PendingClaim *pending, int *npending, int64 claim_id, TransactionId xmin)
{
	if (*npending == PGQ_EXPIRY_PENDING)
		return false;
	pending[*npending].claim_id = claim_id;
	pending[*npending].xmin = xmin;
	(*npending)++;
	return true;
}

/*
 * expire_claim
 *		End the expired lease of one claim: the jobs it still holds leave it.
 *		Returns how many, or -1 if the claim must be read again next round
 *		(its transaction is running, or another change of it came first).
 */
static int
expire_claim(PgqQueue *queue, PgqBlock *block, int64 claim_id, TransactionId xmin)
{
	Snapshot	snap;
	PgqClaim	claim;
	int64	   *ids;
	int			n = 0;

	if (TransactionIdIsValid(xmin) && TransactionIdIsInProgress(xmin))
		return -1;
	snap = RegisterSnapshot(GetLatestSnapshot());
	if (pgq_claim_read(block, claim_id, snap, &claim))
	{
		bool		writing;

		/* a change of one of its jobs is being written: wait for its end */
		n = pgq_claim_held(block, &claim, snap, &ids, &writing);
		if (writing || (n > 0 && pgq_claim_leave(queue, block, &claim, ids, n, NULL) == 0))
			n = -1;
	}
	UnregisterSnapshot(snap);
	return n;
}

/*
 * expire_claim_in
 *		expire_claim with what it reads of the claim in cxt, reset after:
 *		a round may read many claims.
 */
static int
expire_claim_in(MemoryContext cxt, PgqQueue *queue, PgqBlock *block, int64 claim_id,
				TransactionId xmin)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);
	int			n = expire_claim(queue, block, claim_id, xmin);

	MemoryContextSwitchTo(old);
	MemoryContextReset(cxt);
	return n;
}

/*
 * expire_claims
 *		End the expired leases of a block's claims (see the file header);
 *		returns how many jobs left their claims.
 */
static int64
expire_claims(PgqQueue *queue, PgqBlock *block, TimestampTz now)
{
	ExpiryState *st = expiry_state(queue, block);
	PendingClaim pending[PGQ_EXPIRY_PENDING];
	int			npending = 0;
	TimestampTz from = st->from;
	TimestampTz until = now - PGQ_EXPIRY_MARGIN;
	TimestampTz next_from;
	int64		expired = 0;
	Relation	claims;
	Relation	lease;
	TupleTableSlot *slot;
	ScanKeyData skeys[2];
	IndexScanDesc scan;
	SnapshotData dirty;
	int			nkeys = 0;
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "pgqueue expiry",
											  ALLOCSET_SMALL_SIZES);

	/* the claims of running transactions seen last round */
	for (int i = 0; i < st->npending; i++)
	{
		int			n = expire_claim_in(cxt, queue, block, st->pending[i].claim_id,
										st->pending[i].xmin);

		if (n >= 0)
			expired += n;
		else
			remember(pending, &npending, st->pending[i].claim_id, st->pending[i].xmin);
	}

	next_from = Max(from, until);
	pgq_block_indexes(block);
	claims = table_open(block->claims_relid, AccessShareLock);
	lease = index_open(block->claims_lease, AccessShareLock);
	slot = table_slot_create(claims, NULL);
	InitDirtySnapshot(dirty);
	if (from != DT_NOBEGIN)
		ScanKeyInit(&skeys[nkeys++], 1, BTGreaterEqualStrategyNumber, F_TIMESTAMPTZ_GE,
					TimestampTzGetDatum(from));
	ScanKeyInit(&skeys[nkeys++], 1, BTLessStrategyNumber, F_TIMESTAMPTZ_LT,
				TimestampTzGetDatum(now));
	scan = index_beginscan(claims, lease, &dirty, nkeys, 0);
	index_rescan(scan, skeys, nkeys, NULL, 0);
	while (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		int64		claim_id = DatumGetInt64(slot_getattr(slot, PGQ_CATT_CLAIM_ID, &isnull));
		TimestampTz lease_until = DatumGetTimestampTz(slot_getattr(slot, PGQ_CATT_LEASE,
																   &isnull));
		TransactionId xmin = dirty.xmin;
		int			n;

		n = expire_claim_in(cxt, queue, block, claim_id, xmin);
		if (n >= 0)
			expired += n;
		else if (!remember(pending, &npending, claim_id, xmin))
		{
			/* no room: the next round starts at this claim */
			next_from = Min(next_from, lease_until);
			break;
		}
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(lease, AccessShareLock);
	table_close(claims, AccessShareLock);

	MemoryContextDelete(cxt);
	st = expiry_state(queue, block);
	st->from = next_from;
	st->npending = npending;
	memcpy(st->pending, pending, sizeof(PendingClaim) * npending);
	return expired;
}

/*
 * pgq_expire_leases
 *		SQL: pgqueue_internal._expire_leases(queue_id, block_no) ends the
 *		expired leases of one block; returns how many.
 */
Datum
pgq_expire_leases(PG_FUNCTION_ARGS)
{
	PgqQueue   *queue;
	PgqBlock   *block;
	TimestampTz now = GetCurrentTimestamp();
	int64		expired = 0;

	SPI_connect();
	for (int tries = 0;; tries++)
	{
		queue = pgq_queue_by_id(PG_GETARG_INT32(0));
		block = queue != NULL ? pgq_block_by_no(queue, PG_GETARG_INT32(1)) : NULL;
		if (block == NULL || pgq_block_open(block, true))
			break;
		/* a compaction dropped it meanwhile (read again), or a table is missing */
		if (tries > 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("relation \"%s\" does not exist",
							!OidIsValid(block->jobs_relid) ? block->jobs_name
							: !OidIsValid(block->status_relid) ? block->status_name
							: block->claims_name)));
	}
	if (block != NULL)
	{
		bool		ran = false;

		/* leases that ended before now (due_at < now) */
		if (!pgq_relation_empty(block->status_relid) &&
			pgq_status_due(block, "e", now - 1, NULL, NULL))
		{
			expired = expire_status(queue, block, now);
			ran = true;
		}
		if (OidIsValid(block->claims_relid) && !pgq_relation_empty(block->claims_relid))
			expired += expire_claims(queue, block, now);
		/* a block where nothing was written gives its locks back */
		if (!ran && expired == 0)
			pgq_block_close(block);
	}
	SPI_finish();
	PG_RETURN_INT64(expired);
}
