/*-------------------------------------------------------------------------
 *
 * wakeup.c
 *	  Waiting pops and the per-queue counters.
 *
 * Push, pop, ack, fail and the repair functions note what they did in a
 * backend-local list, per subtransaction; once the transaction has
 * committed and sent its cache invalidations and released its locks, the
 * notes are added to the queue's shared counters and wake waiting pops: a push of k jobs signals at most k
 * waiters on the queue's condition variable (no thundering herd), a job
 * that becomes available now (release, retry, resume, lease expiry)
 * broadcasts, and a retry or schedule in the future lowers the queue's
 * next_due, which waiters use as their sleep deadline.  A rolled-back pop
 * (or subtransaction that popped) wakes as many waiters as it had claimed
 * jobs, and counts nothing.  Nothing wakes anyone for a
 * push that has not committed or rolled back.
 *
 * Without shared memory, or when the table of queues is full, a waiting
 * pop polls every pgqueue.poll_interval instead.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/htup_details.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/wait_event.h"

#include "shmem.h"

PG_FUNCTION_INFO_V1(pgq_counters);
PG_FUNCTION_INFO_V1(pgq_wake);

/* what one (sub)transaction did to one queue, applied at commit */
typedef struct Note
{
	QueueTag	tag;
	int32		queue_id;
	SubTransactionId subid;
	int64		counts[PGQ_NUM_COUNTERS];
	TimestampTz min_due;		/* earliest job made due; 0 if none */
	FlowNote	flow;			/* flow-control changes (flow.c) */
} Note;

static Note *notes = NULL;
static int	nnotes = 0;
static int	maxnotes = 0;
static bool callbacks_registered = false;

/* the queue this backend waits on, so that exit can unregister it */
static QueueShared *waiting_on = NULL;

/*
 * apply_note
 *		Add one note's counts to the shared counters and wake waiters.
 */
static void
apply_note(Note *note, bool commit)
{
	QueueShared *qs = pgq_queue_shared(note->tag, note->queue_id, true);
	int64		wake;
	bool		broadcast = false;

	if (qs == NULL)
		return;
	pgq_flow_apply(qs, note->tag, &note->flow, commit);

	/* at abort only the claims count: the jobs are available again */
	wake = commit ? note->counts[PGQ_COUNT_PUSHED] : note->counts[PGQ_COUNT_POPPED];
	if (commit)
		for (int i = 0; i < PGQ_NUM_COUNTERS; i++)
			if (note->counts[i] != 0)
				pg_atomic_fetch_add_u64(&qs->counters[i], (uint64) note->counts[i]);

	SpinLockAcquire(&qs->mutex);
	wake = Min(wake, qs->waiters);
	if (commit && note->min_due != 0)
	{
		TimestampTz now = GetCurrentTimestamp();

		/* a next_due already past is spent: waiters woke up for it */
		if (note->min_due <= now)
			broadcast = true;
		else if (qs->next_due == 0 || note->min_due < qs->next_due || qs->next_due <= now)
		{
			qs->next_due = note->min_due;
			qs->due_gen++;
		}
	}
	SpinLockRelease(&qs->mutex);

	if (broadcast)
		ConditionVariableBroadcast(&qs->cv);
	else
		for (int64 i = 0; i < wake; i++)
			ConditionVariableSignal(&qs->cv);
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
	Note	   *done = palloc(sizeof(Note) * Max(n, 1));
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
		apply_note(&done[i], commit);
		list_free_deep(done[i].flow.events);
	}
	pfree(done);
}

/*
 * release_callback
 *		At the end of the top transaction, after its invalidations went out
 *		and its locks were released, apply the notes: a woken pop then sees
 *		the new queue state and waits on no lock of this transaction.
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
 *		one's are applied as aborted (its claims are available again).
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
 * exit_callback
 *		A backend that ends while waiting (FATAL, terminate) stops counting
 *		as a waiter.
 */
static void
exit_callback(int code, Datum arg)
{
	if (waiting_on != NULL)
	{
		SpinLockAcquire(&waiting_on->mutex);
		waiting_on->waiters--;
		SpinLockRelease(&waiting_on->mutex);
		waiting_on = NULL;
	}
}

/*
 * register_callbacks
 *		Install the callbacks once per backend.
 */
static void
register_callbacks(void)
{
	if (callbacks_registered)
		return;
	RegisterResourceReleaseCallback(release_callback, NULL);
	RegisterSubXactCallback(subxact_callback, NULL);
	before_shmem_exit(exit_callback, (Datum) 0);
	callbacks_registered = true;
}

/*
 * note_for
 *		This transaction's note for a queue, created empty if needed.
 */
static Note *
note_for(PgqQueue *queue)
{
	QueueTag	tag = pgq_queue_tag(queue);
	SubTransactionId subid = GetCurrentSubTransactionId();

	for (int i = 0; i < nnotes; i++)
		if (notes[i].tag.dbid == tag.dbid && notes[i].tag.seq_relid == tag.seq_relid &&
			notes[i].subid == subid)
			return &notes[i];
	register_callbacks();
	if (nnotes == maxnotes)
	{
		maxnotes = Max(8, maxnotes * 2);
		notes = notes == NULL
			? MemoryContextAlloc(TopMemoryContext, sizeof(Note) * maxnotes)
			: repalloc(notes, sizeof(Note) * maxnotes);
	}
	memset(&notes[nnotes], 0, sizeof(Note));
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
		note_for(queue)->counts[counter] += n;
}

/*
 * pgq_flow_note
 *		This (sub)transaction's flow-control note for a queue.
 */
FlowNote *
pgq_flow_note(PgqQueue *queue)
{
	return &note_for(queue)->flow;
}

/*
 * pgq_note_due
 *		A job of the queue becomes claimable at due: wake waiters at commit
 *		if that is now, or by then.
 */
void
pgq_note_due(PgqQueue *queue, TimestampTz due)
{
	Note	   *note = note_for(queue);

	if (note->min_due == 0 || due < note->min_due)
		note->min_due = due;
}

/*
 * pgq_wait_begin
 *		Register as a waiter of the queue until pgq_wait_end.
 */
void
pgq_wait_begin(PgqWait *wait, PgqQueue *queue, TimestampTz deadline)
{
	wait->deadline = deadline;
	wait->qs = pgq_queue_shared(pgq_queue_tag(queue), queue->queue_id, true);
	if (wait->qs == NULL)
		return;
	register_callbacks();
	ConditionVariablePrepareToSleep(&wait->qs->cv);
	SpinLockAcquire(&wait->qs->mutex);
	wait->qs->waiters++;
	SpinLockRelease(&wait->qs->mutex);
	waiting_on = wait->qs;
}

/*
 * pgq_wait_mark
 *		Remember the queue's known due time before an attempt to claim.
 */
void
pgq_wait_mark(PgqWait *wait)
{
	wait->attempt_at = GetCurrentTimestamp();
	wait->limited = false;
	if (wait->qs == NULL)
		return;
	SpinLockAcquire(&wait->qs->mutex);
	wait->due_gen = wait->qs->due_gen;
	wait->next_due = wait->qs->next_due;
	SpinLockRelease(&wait->qs->mutex);
}

/*
 * pgq_wait_sleep
 *		After an attempt that claimed nothing: sleep until a wake-up, the
 *		next known due time or the deadline.  Returns false once the
 *		deadline has passed.
 */
bool
pgq_wait_sleep(PgqWait *wait)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz until = wait->deadline;
	long		timeout_ms;

	if (now >= wait->deadline)
		return false;

	if (wait->qs != NULL)
	{
		/*
		 * A due time the attempt already covered is spent, unless a new one
		 * was noted meanwhile.
		 */
		SpinLockAcquire(&wait->qs->mutex);
		if (wait->next_due != 0 && wait->next_due <= wait->attempt_at &&
			wait->qs->due_gen == wait->due_gen)
			wait->qs->next_due = 0;
		else if (wait->qs->next_due != 0 && wait->qs->next_due < until)
			until = wait->qs->next_due;
		SpinLockRelease(&wait->qs->mutex);
	}
	/* nothing signals when a cap or a rate lets jobs go again */
	if (wait->qs == NULL || wait->limited)
		until = Min(until, now + (TimestampTz) pgq_poll_interval * 1000);

	timeout_ms = (long) ((until - now + 999) / 1000);
	if (timeout_ms < 1)
		timeout_ms = 1;

	if (wait->qs != NULL)
		(void) ConditionVariableTimedSleep(&wait->qs->cv, timeout_ms, PG_WAIT_EXTENSION);
	else
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	return true;
}

/*
 * pgq_wait_end
 *		Stop being a waiter.
 */
void
pgq_wait_end(PgqWait *wait)
{
	if (wait->qs == NULL)
		return;
	ConditionVariableCancelSleep();
	SpinLockAcquire(&wait->qs->mutex);
	wait->qs->waiters--;
	SpinLockRelease(&wait->qs->mutex);
	waiting_on = NULL;
}

/*
 * pgq_counters
 *		SQL: pgqueue_internal._counters(queue) returns the shared counters of a queue
 *		and its waiting pops now: zeros for a queue nothing happened to since
 *		the server started, NULLs without shared memory.
 */
Datum
pgq_counters(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[PGQ_NUM_COUNTERS + 1];
	bool		nulls[PGQ_NUM_COUNTERS + 1];
	PgqQueue   *queue;
	QueueShared *qs;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	memset(values, 0, sizeof(values));
	memset(nulls, !pgq_shmem_ready(), sizeof(nulls));

	SPI_connect();
	queue = pgq_queue_get(PG_GETARG_TEXT_PP(0));
	qs = pgq_queue_shared(pgq_queue_tag(queue), queue->queue_id, false);
	if (qs != NULL)
	{
		for (int i = 0; i < PGQ_NUM_COUNTERS; i++)
			values[i] = Int64GetDatum((int64) pg_atomic_read_u64(&qs->counters[i]));
		SpinLockAcquire(&qs->mutex);
		values[PGQ_NUM_COUNTERS] = Int32GetDatum(qs->waiters);
		SpinLockRelease(&qs->mutex);
	}
	SPI_finish();
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/*
 * pgq_wake
 *		SQL: pgqueue_internal._wake(queue, due) notes that jobs of the queue become
 *		claimable at due (now or later), for the SQL-level repair and
 *		maintenance functions; and counts aborted jobs if given.
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
	pgq_flow_note(queue)->stale = true;
	SPI_finish();
	PG_RETURN_VOID();
}
