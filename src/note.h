/*-------------------------------------------------------------------------
 *
 * note.h
 *	  What a transaction did to each queue, applied when it ends (note.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGQUEUE_NOTE_H
#define PGQUEUE_NOTE_H

#include "access/xact.h"
#include "nodes/pg_list.h"

#include "cache.h"
#include "queueshm.h"

/*
 * Flow-control counts of jobs: pushed (pending until commit), finished
 * (became succeeded or aborted), claimed (claiming until commit) and ended
 * (leases that ended).  events holds the same per tenant, and the key
 * transitions (flow.c).
 */
typedef struct FlowNote
{
	int64		pushed;
	int64		finished;
	int64		claimed;
	int64		ended;
	bool		stale;			/* repaired by SQL: counts must be read again */
	bool		locked;			/* holds the queue's flow lock (flow.c) */
	List	   *events;
} FlowNote;

/* ids of a lane that a claim of this transaction took (watermark.c) */
typedef struct PgqReservation
{
	int32		block_no;
	int32		priority;
	char		tenant[NAMEDATALEN];
	int64		lo;
	int64		hi;
} PgqReservation;

/* what one (sub)transaction did to one queue */
typedef struct PgqNote
{
	QueueTag	tag;
	int32		queue_id;
	SubTransactionId subid;
	int64		counts[PGQ_NUM_COUNTERS];
	TimestampTz min_due;		/* earliest job made due; 0 if none */
	FlowNote	flow;
	List	   *reservations;	/* PgqReservation: given back if it aborts */
} PgqNote;

/*
 * A module's part of applying a note, at the end of the transaction (after
 * its locks are released) or of an aborted subtransaction; qs is the
 * queue's entry in shared memory, NULL if it has none.
 */
typedef void (*PgqNoteApplier) (PgqNote *note, QueueShared *qs, bool commit);

extern void pgq_note_applier(PgqNoteApplier applier);
extern PgqNote *pgq_note_for(PgqQueue *queue);
extern void pgq_note(PgqQueue *queue, PgqCounter counter, int64 n);
extern void pgq_note_due(PgqQueue *queue, TimestampTz due);
extern PgqReservation *pgq_note_reservation(PgqQueue *queue, PgqBlock *block, int32 priority,
											const char *tenant, int64 lo, int64 hi);

#endif							/* PGQUEUE_NOTE_H */
