/*-------------------------------------------------------------------------
 *
 * wakeup.h
 *	  Waiting pops and the per-queue counters (wakeup.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGQUEUE_WAKEUP_H
#define PGQUEUE_WAKEUP_H

#include "note.h"
#include "queueshm.h"

/* a pop waiting for jobs */
typedef struct PgqWait
{
	QueueShared *qs;			/* NULL: poll */
	TimestampTz deadline;
	TimestampTz attempt_at;		/* start of the last attempt to claim */
	TimestampTz next_due;		/* the queue's next_due before that attempt */
	uint64		due_gen;
	uint64		wake_gen;		/* the queue's wake_gen before that attempt */
	bool		limited;		/* flow control held that attempt back: poll */
} PgqWait;

/* GUC */
extern int	pgq_poll_interval;

extern void pgq_wakeup_apply(PgqNote *note, QueueShared *qs, bool commit);
extern void pgq_wakeup_given_back(PgqQueue *queue);
extern void pgq_wait_begin(PgqWait *wait, PgqQueue *queue, TimestampTz deadline);
extern void pgq_wait_mark(PgqWait *wait);
extern bool pgq_wait_sleep(PgqWait *wait);
extern void pgq_wait_end(PgqWait *wait);

#endif							/* PGQUEUE_WAKEUP_H */
