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
	pg_atomic_uint64 counters[PGQ_NUM_COUNTERS];
} QueueShared;

extern QueueTag pgq_queue_tag(PgqQueue *queue);
extern QueueShared *pgq_queue_shared(QueueTag tag, int32 queue_id, bool create);
extern bool pgq_shmem_ready(void);

#endif							/* PGQUEUE_SHMEM_H */
