/*-------------------------------------------------------------------------
 *
 * shmem.h
 *	  pgqueue's shared memory objects, for shmem.c and wakeup.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGQUEUE_SHMEM_H
#define PGQUEUE_SHMEM_H

#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "nodes/pg_list.h"
#include "storage/spin.h"

#include "pgqueue.h"

/*
 * A queue is named in shared memory by its database and the OID of its id
 * sequence: queue ids restart in every database and after the extension is
 * created again, sequence OIDs do not repeat while the sequence exists.
 */
typedef struct QueueTag
{
	Oid			dbid;
	Oid			seq_relid;
} QueueTag;

/*
 * Flow-control state of a queue, or of one tenant of a queue (flow.c).
 * depth and inflight are committed counts, read from the tables when not
 * known and kept up to date by every commit since; pending and claiming
 * are pushes and claims of transactions still running.
 */
typedef struct FlowShared
{
	bool		known;			/* depth and inflight are valid */
	uint64		gen;			/* tenants: the queue's flow_gen they are valid for */
	int64		depth;			/* unfinished jobs */
	int64		pending;		/* jobs pushed by running transactions */
	int64		inflight;		/* executing jobs */
	int64		claiming;		/* jobs claimed by running transactions */
	double		push_tokens;	/* token buckets; at: last refill, 0: full */
	TimestampTz push_at;
	double		pop_tokens;
	TimestampTz pop_at;
} FlowShared;

/* one queue's wake-ups and counters */
typedef struct QueueShared
{
	QueueTag	tag;			/* hash key */
	int32		queue_id;
	ConditionVariable cv;		/* waiting pops sleep here */
	slock_t		mutex;			/* protects the fields below */
	int			waiters;		/* pops sleeping or about to */
	TimestampTz next_due;		/* earliest known retry or schedule; 0: none */
	uint64		due_gen;		/* bumped whenever next_due is lowered */
	FlowShared	flow;
	uint64		flow_gen;		/* bumped when tenants' counts went stale */
	uint64		key_gen;		/* bumped when a key's order was reset */
	uint32		rr;				/* where the next fair pop starts */
	pg_atomic_uint64 counters[PGQ_NUM_COUNTERS];
} QueueShared;

/*
 * What one (sub)transaction did to the flow-control state, applied when it
 * ends (wakeup.c keeps the notes, flow.c applies them).  Counts of jobs:
 * pushed (pending until commit), finished (became succeeded or aborted),
 * claimed (claiming until commit) and ended (leases that ended).  events
 * holds the same per tenant, and the key transitions (FlowEvent).
 */
typedef struct FlowNote
{
	int64		pushed;
	int64		finished;
	int64		claimed;
	int64		ended;
	bool		stale;			/* repaired by SQL: counts must be read again */
	List	   *events;
} FlowNote;

extern QueueTag pgq_queue_tag(PgqQueue *queue);
extern QueueShared *pgq_queue_shared(QueueTag tag, int32 queue_id, bool create);
extern bool pgq_shmem_ready(void);

/* flow.c */
extern Size pgq_flow_shmem_size(void);
extern void pgq_flow_shmem_request(void);
extern void pgq_flow_shmem_startup(void);
extern void pgq_flow_apply(QueueShared *qs, QueueTag tag, FlowNote *note, bool commit);

/* wakeup.c */
extern FlowNote *pgq_flow_note(PgqQueue *queue);

#endif							/* PGQUEUE_SHMEM_H */
