/*-------------------------------------------------------------------------
 *
 * queueshm.h
 *	  Each queue's entry in shared memory (queueshm.c), and what to forget
 *	  of dropped queues in every table pgqueue keeps there.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGQUEUE_QUEUESHM_H
#define PGQUEUE_QUEUESHM_H

#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/spin.h"
#include "utils/hsearch.h"

#include "cache.h"

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

/* one queue's wake-ups, counters and flow-control state */
typedef struct QueueShared
{
	QueueTag	tag;			/* hash key */
	int32		queue_id;
	ConditionVariable cv;		/* waiting pops sleep here */
	slock_t		mutex;			/* protects the fields below */
	int			waiters;		/* pops sleeping or about to */
	TimestampTz next_due;		/* earliest known retry or schedule; 0: none */
	uint64		due_gen;		/* bumped whenever next_due is lowered */
	uint64		wake_gen;		/* bumped before every wake-up sent */
	FlowShared	flow;
	uint64		flow_gen;		/* bumped when tenants' counts went stale */
	uint64		key_gen;		/* bumped when a key's order was reset */
	uint32		rr;				/* where the next fair pop starts */
	pg_atomic_uint64 counters[PGQ_NUM_COUNTERS];
} QueueShared;

/*
 * What to forget: the entries of database dbid, but those of the queues in
 * live (sequence OIDs; nlive -1: keep all but seq_relid's); with dbid
 * InvalidOid, the entries of every database but those in live (OIDs of
 * databases).
 */
typedef struct PgqForget
{
	Oid			dbid;
	int			nlive;
	const Oid  *live;
	Oid			seq_relid;
} PgqForget;

/* queues with an entry; more queues poll and count nothing (GUC) */
extern int	pgq_max_queues;

extern Size pgq_queues_shmem_size(void);
extern HTAB *pgq_shmem_hash(const char *name, long size, Size keysize, Size entrysize);
extern void pgq_queues_shmem_request(void);
extern void pgq_queues_shmem_init(void);
extern bool pgq_shmem_ready(void);

extern QueueTag pgq_queue_tag(PgqQueue *queue);
extern bool pgq_same_queue(QueueTag a, QueueTag b);
extern bool pgq_forgotten(QueueTag tag, const PgqForget *forget);
extern QueueShared *pgq_queue_shared(QueueTag tag, int32 queue_id, bool create);
extern QueueShared *pgq_queue_wait_on(QueueTag tag, int32 queue_id);
extern void pgq_queues_forget(const PgqForget *forget);

#endif							/* PGQUEUE_QUEUESHM_H */
