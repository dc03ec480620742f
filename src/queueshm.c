/*-------------------------------------------------------------------------
 *
 * queueshm.c
 *	  Each queue's entry in shared memory: the condition variable its
 *	  waiting pops sleep on, its counters and its flow-control state.
 *
 * The table has a fixed size (pgqueue.max_queues), reserved at server
 * start.  An entry is made the first time a queue needs one; when the
 * table is full, the queues without an entry go without: their waiting
 * pops poll, they count nothing, and flow control refuses them (it cannot
 * work without).  Entries of dropped queues, of dropped databases and of
 * databases that lost the extension are forgotten by maintenance
 * (pgq_queues_forget), but never while a pop waits on one.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"

#include "queueshm.h"

int			pgq_max_queues = 1024;

/* protects the membership of the table; an entry's mutex, its fields */
static LWLock *queues_lock = NULL;
static HTAB *queue_hash = NULL;

/*
 * pgq_queues_shmem_size
 *		Bytes of shared memory of the table of queues.
 */
Size
pgq_queues_shmem_size(void)
{
	return hash_estimate_size(pgq_max_queues, sizeof(QueueShared));
}

/*
 * pgq_shmem_hash
 *		Create or attach to a shared table of at most size entries, all
 *		allocated at server start (hash_estimate_size(size, entrysize)
 *		bytes).  It is made partitioned, with one partition that its
 *		caller locks as a whole: a table that is not splits a bucket on
 *		every insert past its number of buckets, even when full, and takes
 *		the new segment from the spare shared memory.
 */
HTAB *
pgq_shmem_hash(const char *name, long size, Size keysize, Size entrysize)
{
	HASHCTL		ctl;

	ctl.keysize = keysize;
	ctl.entrysize = entrysize;
	ctl.num_partitions = 1;
	return ShmemInitHash(name, size, size, &ctl,
						 HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE | HASH_PARTITION);
}

/*
 * pgq_queues_shmem_request
 *		Reserve the lock of the table (shmem_request_hook).
 */
void
pgq_queues_shmem_request(void)
{
	RequestNamedLWLockTranche("pgqueue queues", 1);
}

/*
 * pgq_queues_shmem_init
 *		Create or attach to the table; the caller holds AddinShmemInitLock.
 */
void
pgq_queues_shmem_init(void)
{
	queues_lock = &(GetNamedLWLockTranche("pgqueue queues"))->lock;
	queue_hash = pgq_shmem_hash("pgqueue queues", pgq_max_queues, sizeof(QueueTag),
								sizeof(QueueShared));
}

/*
 * pgq_shmem_ready
 *		Whether pgqueue's shared memory exists (preloaded).
 */
bool
pgq_shmem_ready(void)
{
	return queue_hash != NULL;
}

/*
 * pgq_queue_tag
 *		The shared-memory name of a queue.
 */
QueueTag
pgq_queue_tag(PgqQueue *queue)
{
	QueueTag	tag;

	tag.dbid = MyDatabaseId;
	tag.seq_relid = queue->seq_relid;
	return tag;
}

/*
 * pgq_same_queue
 *		Whether two tags name the same queue.
 */
bool
pgq_same_queue(QueueTag a, QueueTag b)
{
	return a.dbid == b.dbid && a.seq_relid == b.seq_relid;
}

/*
 * pgq_forgotten
 *		Whether an entry of the queue tag is to be forgotten.
 */
bool
pgq_forgotten(QueueTag tag, const PgqForget *forget)
{
	if (!OidIsValid(forget->dbid))
	{
		for (int i = 0; i < forget->nlive; i++)
			if (forget->live[i] == tag.dbid)
				return false;
		return true;
	}
	if (tag.dbid != forget->dbid)
		return false;
	if (forget->nlive < 0)
		return tag.seq_relid == forget->seq_relid;
	for (int i = 0; i < forget->nlive; i++)
		if (forget->live[i] == tag.seq_relid)
			return false;
	return true;
}

/*
 * entry_init
 *		Set up a new entry.
 */
static void
entry_init(QueueShared *qs, int32 queue_id)
{
	qs->queue_id = queue_id;
	ConditionVariableInit(&qs->cv);
	SpinLockInit(&qs->mutex);
	qs->waiters = 0;
	qs->next_due = 0;
	qs->due_gen = 0;
	qs->wake_gen = 0;
	memset(&qs->flow, 0, sizeof(qs->flow));
	qs->flow_gen = 0;
	qs->key_gen = 0;
	qs->rr = 0;
	for (int i = 0; i < PGQ_NUM_COUNTERS; i++)
		pg_atomic_init_u64(&qs->counters[i], 0);
}

/*
 * lookup
 *		The entry of a queue, made if create; NULL if missing or if the
 *		table is full.  With wait, counts a waiter in it before letting the
 *		lock go, so that it cannot be forgotten meanwhile.
 */
static QueueShared *
lookup(QueueTag tag, int32 queue_id, bool create, bool wait)
{
	QueueShared *qs;
	bool		found;

	if (queue_hash == NULL)
		return NULL;
	LWLockAcquire(queues_lock, LW_SHARED);
	qs = hash_search(queue_hash, &tag, HASH_FIND, NULL);
	if (qs == NULL && create)
	{
		LWLockRelease(queues_lock);
		LWLockAcquire(queues_lock, LW_EXCLUSIVE);
		qs = hash_search(queue_hash, &tag, HASH_ENTER_NULL, &found);
		if (qs != NULL && !found)
			entry_init(qs, queue_id);
	}
	if (qs != NULL && wait)
	{
		SpinLockAcquire(&qs->mutex);
		qs->waiters++;
		SpinLockRelease(&qs->mutex);
	}
	LWLockRelease(queues_lock);
	return qs;
}

/*
 * pgq_queue_shared
 *		The shared entry of a queue; with create, made on first use.  NULL
 *		without shared memory, when the queue has none yet (without create)
 *		or when the table of queues is full.
 */
QueueShared *
pgq_queue_shared(QueueTag tag, int32 queue_id, bool create)
{
	return lookup(tag, queue_id, create, false);
}

/*
 * pgq_queue_wait_on
 *		The shared entry of a queue, made if needed, with one more waiter
 *		counted; NULL as for pgq_queue_shared.  The waiter must be taken
 *		off (wakeup.c) before the entry can be forgotten.
 */
QueueShared *
pgq_queue_wait_on(QueueTag tag, int32 queue_id)
{
	return lookup(tag, queue_id, true, true);
}

/*
 * pgq_queues_forget
 *		Remove the entries of the queues to forget, but those with waiting
 *		pops.
 */
void
pgq_queues_forget(const PgqForget *forget)
{
	HASH_SEQ_STATUS status;
	QueueShared *qs;

	if (queue_hash == NULL)
		return;
	LWLockAcquire(queues_lock, LW_EXCLUSIVE);
	hash_seq_init(&status, queue_hash);
	while ((qs = hash_seq_search(&status)) != NULL)
	{
		int			waiters;

		if (!pgq_forgotten(qs->tag, forget))
			continue;
		SpinLockAcquire(&qs->mutex);
		waiters = qs->waiters;
		SpinLockRelease(&qs->mutex);
		if (waiters == 0)
			hash_search(queue_hash, &qs->tag, HASH_REMOVE, NULL);
	}
	LWLockRelease(queues_lock);
}
