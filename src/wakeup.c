/*-------------------------------------------------------------------------
 *
 * wakeup.c
 *	  Waiting pops and the per-queue counters.
 *
 * A waiting pop sleeps on its queue's condition variable in shared memory
 * (queueshm.c).  What transactions did is applied when they end (note.c);
 * this file's part of it adds their counts to the queue's shared counters
 * and wakes waiting pops: a push of k jobs signals at most k waiters (no
 * thundering herd), a job that becomes available now (release, retry,
 * resume, lease expiry) broadcasts, a pop that gives back part of a
 * reserved range after claiming from it signals one waiter, and a retry
 * or schedule in the future lowers the queue's next_due, which waiters use
 * as their sleep deadline.
 * A rolled-back pop (or subtransaction that popped) wakes as many waiters
 * as it had claimed jobs, and counts nothing.  Nothing wakes anyone for a
 * push that has not committed or rolled back.
 *
 * Without shared memory, or when the table of queues is full, a waiting
 * pop polls every pgqueue.poll_interval instead.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/wait_event.h"

#include "note.h"
#include "wakeup.h"


PG_FUNCTION_INFO_V1(pgq_counters);

/* how often a waiting pop polls when it cannot sleep on shared memory, ms */
int			pgq_poll_interval = 100;

/* the queue this backend waits on, so that exit can unregister it */
static QueueShared *waiting_on = NULL;
static bool exit_callback_registered = false;

/*
 * pgq_wakeup_apply
 *		Note applier: add a note's counts to the queue's shared counters and
 *		wake its waiters.
 */
void
pgq_wakeup_apply(PgqNote *note, QueueShared *qs, bool commit)
{
	int64		wake;
	bool		broadcast = false;
	TimestampTz now = GetCurrentTimestamp();

	if (qs == NULL)
		return;
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
		/* a next_due already past is spent: waiters woke up for it */
		if (note->min_due <= now)
			broadcast = true;
		else if (qs->next_due == 0 || note->min_due < qs->next_due || qs->next_due <= now)
		{
			qs->next_due = note->min_due;
			qs->due_gen++;
		}
	}
	if (wake > 0 || broadcast)
		qs->wake_gen++;
	SpinLockRelease(&qs->mutex);

	if (broadcast)
		ConditionVariableBroadcast(&qs->cv);
	else
		for (int64 i = 0; i < wake; i++)
			ConditionVariableSignal(&qs->cv);
}

/*
 * pgq_wakeup_given_back
 *		A pop gave part of a range it had claimed jobs from back to its
 *		lane, where more jobs may wait: once the pop is done, a waiter that
 *		found the range reserved and went to sleep tries again.  A pop that claimed nothing
 *		wakes nobody, so that waiters do not wake each other in turn over a
 *		range that none of them can claim now (its first job's status row
 *		being written).
 */
void
pgq_wakeup_given_back(PgqQueue *queue)
{
	QueueShared *qs = pgq_queue_shared(pgq_queue_tag(queue), queue->queue_id, false);
	bool		wake;

	if (qs == NULL)
		return;
	SpinLockAcquire(&qs->mutex);
	wake = qs->waiters > 0;
	if (wake)
		qs->wake_gen++;
	SpinLockRelease(&qs->mutex);
	if (wake)
		ConditionVariableSignal(&qs->cv);
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
 * pgq_wait_begin
 *		Register as a waiter of the queue until pgq_wait_end.
 */
void
pgq_wait_begin(PgqWait *wait, PgqQueue *queue, TimestampTz deadline)
{
	wait->deadline = deadline;
	wait->qs = pgq_queue_wait_on(pgq_queue_tag(queue), queue->queue_id);
	if (wait->qs == NULL)
		return;
	if (!exit_callback_registered)
	{
		before_shmem_exit(exit_callback, (Datum) 0);
		exit_callback_registered = true;
	}
	waiting_on = wait->qs;
}

/*
 * pgq_wait_mark
 *		Remember the queue's known due time and its wake-ups sent before an
 *		attempt to claim.
 */
void
pgq_wait_mark(PgqWait *wait)
{
	wait->attempt_at = GetCurrentTimestamp();
	wait->limited = false;
	if (wait->qs == NULL)
		return;

	/*
	 * Off the condition variable's list while it tries, so that a wake-up
	 * this pop sends (pgq_wakeup_given_back) reaches another waiter;
	 * pgq_wait_sleep puts it back, and what was sent meanwhile moved
	 * wake_gen.
	 */
	ConditionVariableCancelSleep();
	SpinLockAcquire(&wait->qs->mutex);
	wait->due_gen = wait->qs->due_gen;
	wait->wake_gen = wait->qs->wake_gen;
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
		bool		woken;

		/*
		 * On the condition variable's list again: the attempt was made off
		 * it (pgq_wait_mark), and a wake-up sent since then reached
		 * somebody else or nobody.  Such wake-ups moved wake_gen, read
		 * after this: the attempt is made again at once.  Any later one
		 * finds this pop on the list.
		 */
		ConditionVariablePrepareToSleep(&wait->qs->cv);
		SpinLockAcquire(&wait->qs->mutex);
		woken = wait->qs->wake_gen != wait->wake_gen;
		SpinLockRelease(&wait->qs->mutex);
		if (woken)
			return true;

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

