/*-------------------------------------------------------------------------
 *
 * compact.c
 *	  What compaction (pgqueue_internal._compact_step) needs below SQL: which rows a
 *	  snapshot did not see, waiting for the writers of a run of blocks, and
 *	  the rows on pages changed since a WAL position.
 *
 * Compaction copies a run of blocks under a snapshot without blocking
 * anyone, then fences the run (exclusive locks) and carries over what
 * changed meanwhile.  To keep the fence short, the work under it must not
 * grow with the size of the run.  Every heap insert into a WAL-logged
 * table stamps its page with the LSN of its WAL record, so a row inserted
 * after WAL position L lies on a page whose LSN is past L.  Compaction
 * reads L, waits for the transactions that hold a lock to write into the
 * run's tables (they may have inserted before L: a writer keeps that lock
 * until its top-level transaction ends), and only then takes its snapshot;
 * a row that snapshot does not see was inserted after L.  Before the fence
 * it carries over such rows as far as a second snapshot sees them; under
 * the fence, only the rows on pages changed since L are read again.  Other
 * page changes (row locks, hint bits logged for checksums, pruning) only
 * add pages to read.  An insert skips WAL only into a table created or
 * truncated in its own transaction with wal_level = minimal; that
 * transaction held an exclusive lock on the table, so it had ended before
 * compaction could read the run.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/subtrans.h"
#include "access/table.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/fmgrprotos.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"
#include "utils/xid8.h"

#include "cache.h"


/* longest sleep between two looks at a writer that has not ended yet, ms */
#define WRITER_POLL_MAX_MS	16

PG_FUNCTION_INFO_V1(pgq_unseen);
PG_FUNCTION_INFO_V1(pgq_wait_writers);
PG_FUNCTION_INFO_V1(pgq_changed_tids);

/*
 * widen_xid
 *		The full transaction id of xid, a normal xid not older than
 *		2^31 transactions before next.
 */
static FullTransactionId
widen_xid(TransactionId xid, FullTransactionId next)
{
	uint32		epoch = EpochFromFullTransactionId(next);

	if (xid >= XidFromFullTransactionId(next))
		epoch--;				/* from the previous epoch */
	return FullTransactionIdFromEpochAndXid(epoch, xid);
}

/*
 * visible_in
 *		Whether the snapshot saw the (top-level) transaction xid as done.
 */
static bool
visible_in(FullTransactionId xid, Datum snap)
{
	return DatumGetBool(DirectFunctionCall2(pg_visible_in_snapshot,
											FullTransactionIdGetDatum(xid), snap));
}

/*
 * pgq_unseen
 *		SQL: pgqueue_internal._unseen(xmin, snap) tells whether a row was written by a
 *		transaction that snap did not see and that is not this one (or one
 *		of its subtransactions): compaction's test for what changed after it
 *		took snap.
 *
 * A pg_snapshot lists only top-level transactions in progress, so a row
 * written by a subtransaction is judged by its top-level transaction,
 * found in pg_subtrans.  That lookup needs xmin to be no older than this
 * backend's xmin; snap must have been taken in this transaction while an
 * outer snapshot (the calling statement's) holds that xmin, as in
 * compaction.  Older xids are below snap's xmin and need no lookup.
 */
Datum
pgq_unseen(PG_FUNCTION_ARGS)
{
	TransactionId xid = DatumGetTransactionId(PG_GETARG_DATUM(0));
	Datum		snap = PG_GETARG_DATUM(1);
	FullTransactionId next;
	FullTransactionId full;
	FullTransactionId xmin;
	TransactionId top;

	if (!TransactionIdIsNormal(xid) || TransactionIdIsCurrentTransactionId(xid))
		PG_RETURN_BOOL(false);
	next = ReadNextFullTransactionId();
	full = widen_xid(xid, next);
	if (!visible_in(full, snap))
		PG_RETURN_BOOL(true);

	/* below snap's xmin: done before snap, whether subtransaction or not */
	xmin = DatumGetFullTransactionId(DirectFunctionCall1(pg_snapshot_xmin, snap));
	if (FullTransactionIdPrecedes(full, xmin))
		PG_RETURN_BOOL(false);
	top = SubTransGetTopmostTransaction(xid);
	if (top == xid)
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(!visible_in(widen_xid(top, next), snap));
}

/*
 * writer_ended
 *		Wait until the transaction vxid has ended or deadline has passed;
 *		returns whether it ended.  Polls, so that no lock wait ties this
 *		backend into a deadlock with the writer: the deadline ends it.
 */
static bool
writer_ended(VirtualTransactionId vxid, TimestampTz deadline)
{
	long		sleep_ms = 1;

	while (!VirtualXactLock(vxid, false))
	{
		if (GetCurrentTimestamp() >= deadline)
			return false;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 sleep_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		sleep_ms = Min(sleep_ms * 2, WRITER_POLL_MAX_MS);
	}
	return true;
}

/*
 * pgq_wait_writers
 *		SQL: pgqueue_internal._wait_writers(rels, timeout_ms) waits until every
 *		other transaction that holds a lock to write into one of the
 *		relations now (RowExclusiveLock or stronger) has ended.  Returns
 *		false if some had not ended after timeout_ms.  Takes no lock on the
 *		relations itself and does not wait for transactions that lock them
 *		later.
 */
Datum
pgq_wait_writers(PG_FUNCTION_ARGS)
{
	ArrayType  *rels = PG_GETARG_ARRAYTYPE_P(0);
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   PG_GETARG_INT32(1));
	Datum	   *relids;
	bool	   *nulls;
	int			nrels;
	List	   *writers = NIL;
	ListCell   *lc;

	deconstruct_array(rels, REGCLASSOID, sizeof(Oid), true, TYPALIGN_INT,
					  &relids, &nulls, &nrels);

	/* first who holds the locks now, then wait for each of them */
	for (int i = 0; i < nrels; i++)
	{
		LOCKTAG		tag;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("relations must not contain null elements")));
		SET_LOCKTAG_RELATION(tag, MyDatabaseId, DatumGetObjectId(relids[i]));
		writers = lappend(writers, GetLockConflicts(&tag, ShareLock, NULL));
	}
	foreach(lc, writers)
	{
		for (VirtualTransactionId *vxid = lfirst(lc);
			 VirtualTransactionIdIsValid(*vxid); vxid++)
		{
			if (!writer_ended(*vxid, deadline))
				PG_RETURN_BOOL(false);
		}
	}
	PG_RETURN_BOOL(true);
}

/*
 * pgq_changed_tids
 *		SQL: pgqueue_internal._changed_tids(rel, since) returns the tids of the rows
 *		(normal line pointers, live or not) on the pages of table rel whose
 *		LSN is past since: every row inserted after WAL position since is
 *		among them.  Pages are read one at a time under a share lock; old
 *		pages cost the read of their header.  As in a sequential scan, a
 *		table larger than a quarter of shared_buffers is read through a small
 *		ring of buffers; a smaller one stays in shared_buffers, so that the
 *		next call reads it from there.  A table that is not WAL-logged has
 *		no page LSNs: all its rows are returned.
 */
Datum
pgq_changed_tids(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	XLogRecPtr	since = PG_GETARG_LSN(1);
	Relation	rel = table_open(relid, AccessShareLock);
	bool		logged = rel->rd_rel->relpersistence == RELPERSISTENCE_PERMANENT;
	BufferAccessStrategy strategy = NULL;
	BlockNumber nblocks;
	ItemPointerData *tids;
	Datum	   *elems;
	int			ntids = 0;
	int			maxtids = 64;

	if (rel->rd_rel->relkind != RELKIND_RELATION ||
		RelationGetNamespace(rel) != get_namespace_oid("pgqueue_data", false))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table of pgqueue", RelationGetRelationName(rel))));
	if (pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_TABLE, RelationGetRelationName(rel));

	tids = palloc(sizeof(ItemPointerData) * maxtids);
	nblocks = RelationGetNumberOfBlocks(rel);
	if (nblocks > NBuffers / 4)
		strategy = GetAccessStrategy(BAS_BULKREAD);
	for (BlockNumber blkno = 0; blkno < nblocks; blkno++)
	{
		Buffer		buf;
		Page		page;

		CHECK_FOR_INTERRUPTS();
		buf = ReadBufferExtended(rel, MAIN_FORKNUM, blkno, RBM_NORMAL, strategy);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		if (!logged || BufferGetLSNAtomic(buf) > since)
		{
			OffsetNumber maxoff = PageGetMaxOffsetNumber(page);

			for (OffsetNumber off = FirstOffsetNumber; off <= maxoff; off++)
			{
				if (!ItemIdIsNormal(PageGetItemId(page, off)))
					continue;
				if (ntids == maxtids)
				{
					maxtids *= 2;
					tids = repalloc(tids, sizeof(ItemPointerData) * maxtids);
				}
				ItemPointerSet(&tids[ntids], blkno, off);
				ntids++;
			}
		}
		UnlockReleaseBuffer(buf);
	}
	table_close(rel, NoLock);
	if (strategy != NULL)
		FreeAccessStrategy(strategy);

	elems = palloc(sizeof(Datum) * Max(ntids, 1));
	for (int i = 0; i < ntids; i++)
		elems[i] = PointerGetDatum(&tids[i]);
	PG_RETURN_ARRAYTYPE_P(construct_array(elems, ntids, TIDOID, sizeof(ItemPointerData),
										  false, TYPALIGN_SHORT));
}
