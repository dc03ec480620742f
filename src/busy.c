/*-------------------------------------------------------------------------
 *
 * busy.c
 *	  Whether a block still holds an unfinished job, for maintenance:
 *	  pgqueue_internal._block_busy.
 *
 * Maintenance asks this of every closed block each round, and a block of
 * backlog must cost it almost nothing.  The jobs are looked at from the
 * newest down, where a queue drained in order keeps its unfinished ones,
 * and the first unfinished one ends the look.  This backend remembers that
 * job per block (the worker keeps it between rounds) and looks at it first
 * next time: while it is unfinished, the answer costs one look at one job,
 * however long the block waited for the rest.  When it has finished, a
 * block without status rows (its jobs all claimed and acked by claim
 * records, the usual end of a drained block) is counted instead of looked
 * at job by job.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "cache.h"
#include "claim.h"

PG_FUNCTION_INFO_V1(pgq_block_busy);

/* blocks whose unfinished job this backend remembers; more start over */
#define PGQ_BUSY_BLOCKS	4096

typedef struct BusyKey
{
	Oid			jobs_relid;
	int32		queue_id;
	int32		block_no;
} BusyKey;

/* an unfinished job of a block, as last seen */
typedef struct BusyJob
{
	BusyKey		key;
	int64		job_id;
	int32		priority;
	char		tenant[NAMEDATALEN];	/* '' for none */
} BusyJob;

static HTAB *busy_jobs = NULL;

/*
 * busy_entry
 *		The remembered job of a block; with create, made if missing (job_id
 *		0), else NULL if missing.
 */
static BusyJob *
busy_entry(PgqQueue *queue, PgqBlock *block, bool create)
{
	BusyKey		key;
	BusyJob    *entry;
	bool		found;

	if (busy_jobs == NULL || (create && hash_get_num_entries(busy_jobs) >= PGQ_BUSY_BLOCKS))
	{
		HASHCTL		ctl;

		if (busy_jobs != NULL)
			hash_destroy(busy_jobs);
		ctl.keysize = sizeof(BusyKey);
		ctl.entrysize = sizeof(BusyJob);
		ctl.hcxt = TopMemoryContext;
		busy_jobs = hash_create("pgqueue busy blocks", 64, &ctl,
								HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	memset(&key, 0, sizeof(key));
	key.jobs_relid = block->jobs_relid;
	key.queue_id = queue->queue_id;
	key.block_no = block->block_no;
	entry = hash_search(busy_jobs, &key, create ? HASH_ENTER : HASH_FIND, &found);
	if (create && !found)
		entry->job_id = 0;
	return entry;
}

/*
 * unfinished
 *		Whether a job's state, as snapshot sees it, is not final.
 */
static bool
unfinished(PgqBlock *block, int64 job_id, int32 priority, const char *tenant,
		   Snapshot snapshot)
{
	PgqJobState st;

	pgq_job_state(block, job_id, priority, tenant, snapshot, &st);
	return st.state != PGQ_SUCCEEDED && st.state != PGQ_ABORTED;
}

/*
 * claims_acked
 *		How many jobs the ack records of a block's claims took.
 */
static int64
claims_acked(PgqBlock *block, Snapshot snapshot)
{
	Relation	claims = table_open(block->claims_relid, AccessShareLock);
	TupleTableSlot *slot = table_slot_create(claims, NULL);
	TableScanDesc scan = table_beginscan(claims, snapshot, 0, NULL);
	int64		acked = 0;

	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;

		if (DatumGetChar(slot_getattr(slot, PGQ_CATT_KIND, &isnull)) == PGQ_CLAIM_ACKED)
			acked += DatumGetInt32(slot_getattr(slot, PGQ_CATT_N, &isnull));
	}
	table_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	table_close(claims, AccessShareLock);
	return acked;
}

/*
 * jobs_count
 *		How many jobs a block holds.
 */
static int64
jobs_count(PgqBlock *block, Snapshot snapshot)
{
	Relation	jobs = table_open(block->jobs_relid, AccessShareLock);
	TupleTableSlot *slot = table_slot_create(jobs, NULL);
	TableScanDesc scan = table_beginscan(jobs, snapshot, 0, NULL);
	int64		n = 0;

	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
		n++;
	table_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	table_close(jobs, AccessShareLock);
	return n;
}

/*
 * pgq_block_busy
 *		SQL: pgqueue_internal._block_busy(queue_id, block_no) tells whether
 *		a block holds an unfinished job, as the statement sees it.
 */
Datum
pgq_block_busy(PG_FUNCTION_ARGS)
{
	Snapshot	snapshot = GetActiveSnapshot();
	PgqQueue   *queue;
	PgqBlock   *block;
	BusyJob    *known;
	Relation	jobs;
	Relation	pkey;
	TupleTableSlot *slot;
	IndexScanDesc scan;
	bool		busy = false;

	queue = pgq_queue_by_id(PG_GETARG_INT32(0));
	block = queue != NULL ? pgq_block_by_no(queue, PG_GETARG_INT32(1)) : NULL;
	if (block == NULL || !pgq_block_open(block, true))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("block %d of queue %d does not exist",
						PG_GETARG_INT32(1), PG_GETARG_INT32(0))));
	pgq_block_indexes(block);

	/*
	 * A read only: the block's locks are given back (a round over a
	 * backlog does not keep every block locked), unless this transaction
	 * opened it before.
	 */

	/* the job that kept the block busy last time */
	known = busy_entry(queue, block, false);
	if (known != NULL && known->job_id != 0 &&
		unfinished(block, known->job_id, known->priority, known->tenant, snapshot))
	{
		pgq_block_close(block);
		PG_RETURN_BOOL(true);
	}

	/*
	 * Without status rows, a job is finished only if an ack record of its
	 * claim took it: the block is done when the acks took as many jobs as
	 * it holds.  Two reads of its tables instead of a look at each job.
	 */
	if (pgq_relation_empty(block->status_relid) &&
		claims_acked(block, snapshot) == jobs_count(block, snapshot))
	{
		pgq_block_close(block);
		PG_RETURN_BOOL(false);
	}

	jobs = table_open(block->jobs_relid, AccessShareLock);
	pkey = index_open(block->jobs_pkey, AccessShareLock);
	slot = table_slot_create(jobs, NULL);
	scan = index_beginscan(jobs, pkey, snapshot, 0, 0);
	index_rescan(scan, NULL, 0, NULL, 0);
	while (!busy && index_getnext_slot(scan, BackwardScanDirection, slot))
	{
		int32		priority;
		char		tenant[NAMEDATALEN];
		int64		job_id = pgq_slot_job_lane(slot, &priority, tenant);

		if (unfinished(block, job_id, priority, tenant, snapshot))
		{
			known = busy_entry(queue, block, true);
			known->job_id = job_id;
			known->priority = priority;
			strlcpy(known->tenant, tenant, NAMEDATALEN);
			busy = true;
		}
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(pkey, AccessShareLock);
	table_close(jobs, AccessShareLock);
	pgq_block_close(block);
	PG_RETURN_BOOL(busy);
}
