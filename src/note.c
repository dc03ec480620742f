/*-------------------------------------------------------------------------
 *
 * note.c
 *	  What a transaction did to each queue, applied when it ends.
 *
 * Push, pop, ack, fail and the repair functions note what they did in a
 * backend-local list, one note per queue and subtransaction: counts of
 * jobs, the earliest time a job became due, and flow-control changes.  A
 * committed subtransaction's notes become its parent's; an aborted one's
 * are applied at once as aborted (its claims are available again).  Once
 * the top transaction has committed (or aborted), sent its cache
 * invalidations and released its locks, every note is applied, so that a
 * pop woken by it sees the new state and waits on no lock of this
 * transaction.  Applying is the modules' business: each registers its part
 * (flow.c settles flow-control counts, wakeup.c adds the counters and wakes
 * waiting pops), and the parts run in the order they were registered.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "flow.h"
#include "note.h"

PG_FUNCTION_INFO_V1(pgq_wake);

#define PGQ_MAX_APPLIERS	4

static PgqNoteApplier appliers[PGQ_MAX_APPLIERS];
static int	nappliers = 0;

static PgqNote *notes = NULL;
static int	nnotes = 0;
static int	maxnotes = 0;
static bool callbacks_registered = false;

/*
 * pgq_note_applier
 *		Register a module's part of applying notes; called from _PG_init.
 */
void
pgq_note_applier(PgqNoteApplier applier)
{
	if (nappliers == PGQ_MAX_APPLIERS)
		elog(ERROR, "too many pgqueue note appliers");
	appliers[nappliers++] = applier;
}

/*
 * apply_notes
 *		Apply the notes of one subtransaction (InvalidSubTransactionId: all)
 *		and forget them.
 */
static void
apply_notes(SubTransactionId subid, bool commit)
{
	int			kept = 0;
	int			n = nnotes;
	PgqNote    *done = palloc(sizeof(PgqNote) * Max(n, 1));
	int			ndone = 0;

	/* forget first, so that an error here cannot apply a note twice */
	for (int i = 0; i < n; i++)
	{
		if (subid == InvalidSubTransactionId || notes[i].subid == subid)
			done[ndone++] = notes[i];
		else
			notes[kept++] = notes[i];
	}
	nnotes = kept;
	for (int i = 0; i < ndone; i++)
	{
		QueueShared *qs = pgq_queue_shared(done[i].tag, done[i].queue_id, true);

		for (int a = 0; a < nappliers; a++)
			appliers[a] (&done[i], qs, commit);
		list_free_deep(done[i].flow.events);
		list_free_deep(done[i].reservations);
	}
	pfree(done);
}

/*
 * release_callback
 *		At the end of the top transaction, after its invalidations went out
 *		and its locks were released, apply the notes.
 */
static void
release_callback(ResourceReleasePhase phase, bool isCommit, bool isTopLevel, void *arg)
{
	if (phase == RESOURCE_RELEASE_AFTER_LOCKS && isTopLevel && nnotes > 0)
		apply_notes(InvalidSubTransactionId, isCommit);
}

/*
 * subxact_callback
 *		A committed subtransaction's notes become its parent's; an aborted
 *		one's are applied as aborted.
 */
static void
subxact_callback(SubXactEvent event, SubTransactionId mySubid,
				 SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		for (int i = 0; i < nnotes; i++)
			if (notes[i].subid == mySubid)
				notes[i].subid = parentSubid;
	}
	else if (event == SUBXACT_EVENT_ABORT_SUB)
		apply_notes(mySubid, false);
}

/*
 * note_xact_callback
 *		Before a commit shows, let flow control take what it needs until
 *		the notes are applied.  Refuse to prepare a transaction that used a
 *		queue: its notes (the ranges its claims took, what it counts) would
 *		be applied as committed when it is prepared, whatever becomes of it.
 */
static void
note_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_PRE_COMMIT)
		for (int i = 0; i < nnotes; i++)
			pgq_flow_pre_commit(&notes[i]);
	if (event == XACT_EVENT_PRE_PREPARE && nnotes > 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot prepare a transaction that used a pgqueue queue"),
				 errdetail("What it did to the queue is settled when it commits or rolls back.")));
}

/*
 * pgq_note_for
 *		This (sub)transaction's note for a queue, created empty if needed.
 */
PgqNote *
pgq_note_for(PgqQueue *queue)
{
	QueueTag	tag = pgq_queue_tag(queue);
	SubTransactionId subid = GetCurrentSubTransactionId();

	for (int i = 0; i < nnotes; i++)
		if (pgq_same_queue(notes[i].tag, tag) && notes[i].subid == subid)
			return &notes[i];
	if (!callbacks_registered)
	{
		RegisterResourceReleaseCallback(release_callback, NULL);
		RegisterSubXactCallback(subxact_callback, NULL);
		RegisterXactCallback(note_xact_callback, NULL);
		callbacks_registered = true;
	}
	if (nnotes == maxnotes)
	{
		maxnotes = Max(8, maxnotes * 2);
		notes = notes == NULL
			? MemoryContextAlloc(TopMemoryContext, sizeof(PgqNote) * maxnotes)
			: repalloc(notes, sizeof(PgqNote) * maxnotes);
	}
	memset(&notes[nnotes], 0, sizeof(PgqNote));
	notes[nnotes].tag = tag;
	notes[nnotes].queue_id = queue->queue_id;
	notes[nnotes].subid = subid;
	return &notes[nnotes++];
}

/*
 * pgq_note
 *		Count n events of one kind for the queue, at commit.
 */
void
pgq_note(PgqQueue *queue, PgqCounter counter, int64 n)
{
	if (n != 0)
		pgq_note_for(queue)->counts[counter] += n;
}

/*
 * pgq_note_due
 *		A job of the queue becomes claimable at due: wake waiters at commit
 *		if that is now, or by then.
 */
void
pgq_note_due(PgqQueue *queue, TimestampTz due)
{
	PgqNote    *note = pgq_note_for(queue);

	if (note->min_due == 0 || due < note->min_due)
		note->min_due = due;
}

/*
 * pgq_note_reservation
 *		A claim of this (sub)transaction took the ids lo to hi of a lane:
 *		give them back to the lane if it aborts.  The caller may narrow the
 *		range it returns (the claim took less).
 */
PgqReservation *
pgq_note_reservation(PgqQueue *queue, PgqBlock *block, int32 priority, const char *tenant,
					 int64 lo, int64 hi)
{
	PgqNote    *note = pgq_note_for(queue);
	PgqReservation *r = MemoryContextAlloc(TopMemoryContext, sizeof(PgqReservation));
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	r->block_no = block->block_no;
	r->priority = priority;
	strlcpy(r->tenant, tenant, NAMEDATALEN);
	r->lo = lo;
	r->hi = hi;
	note->reservations = lappend(note->reservations, r);
	MemoryContextSwitchTo(old);
	return r;
}

/*
 * pgq_wake
 *		SQL: pgqueue_internal._wake(queue, due, aborted) notes that jobs of
 *		the queue become claimable at due (now or later), for the SQL-level
 *		repair and maintenance functions; and counts aborted jobs if given.
 */
Datum
pgq_wake(PG_FUNCTION_ARGS)
{
	PgqQueue   *queue;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(2))
		PG_RETURN_VOID();
	SPI_connect();
	queue = pgq_queue_get(PG_GETARG_TEXT_PP(0));
	if (!PG_ARGISNULL(1))
		pgq_note_due(queue, PG_GETARG_TIMESTAMPTZ(1));
	pgq_note(queue, PGQ_COUNT_ABORTED, PG_GETARG_INT64(2));
	/* the jobs' states changed outside the counted paths */
	pgq_note_for(queue)->flow.stale = true;
	SPI_finish();
	PG_RETURN_VOID();
}
