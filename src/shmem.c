/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  Shared memory: open-push slots, per-lane low watermarks and the
 *	  per-queue entries that wakeup.c uses.
 *
 * A lane is the never-claimed jobs of one priority and one tenant (or of
 * the jobs without a tenant) in one block.  Its low
 * watermark is an id below which no job of the lane can still be claimed
 * for the first time, so pop starts its scan there instead of walking the
 * jobs other consumers already claimed.  A watermark may only pass an id
 * when the job is claimed by a committed transaction or can never appear;
 * a push that has not committed yet must hold it back (guarantee 3).
 *
 * Open pushes are published in one slot per backend: before a transaction
 * allocates its first id in a queue it marks its slot "allocating" for that
 * queue, then records the id; the slot is cleared at transaction end.  To
 * advance a lane, pop reads the queue's sequence (L), then the slots, then
 * looks for the first unclaimed job with a new snapshot.  Any id <= L was
 * handed out before L was read, so a pusher of it that is still running had
 * already published its slot and bounds the advance; ids above L are never
 * passed.
 *
 * Without shared_preload_libraries none of this exists and pop scans lanes
 * from the start of the block: slower on large blocks, equally correct.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/twophase.h"
#include "access/xact.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/fmgrprotos.h"
#include "utils/hsearch.h"

#include "shmem.h"

/* one backend's open pushes */
typedef struct PushSlot
{
	slock_t		mutex;
	QueueTag	queue;			/* seq_relid is InvalidOid when free */
	bool		many;			/* pushed to several queues: holds back all */
	int64		min_id;			/* lowest id allocated; 0 while allocating */
} PushSlot;

typedef struct LaneKey
{
	QueueTag	queue;
	int32		block_no;
	int32		priority;
	char		tenant[NAMEDATALEN];	/* '' for the jobs without a tenant */
} LaneKey;

typedef struct LaneEntry
{
	LaneKey		key;
	int64		watermark;
} LaneEntry;

/* what a database's maintenance worker is doing (worker.c) */
typedef struct DbSlot
{
	Oid			dbid;			/* InvalidOid: free */
	pid_t		pid;			/* running worker, -1 starting, 0 none */
	int			failures;		/* in a row */
	TimestampTz next_start;
} DbSlot;

/* databases with a maintenance worker; more get none */
#define PGQ_MAX_DBS		64

typedef struct PgqShared
{
	LWLock	   *lock;			/* protects the lane and queue hashes, dbs */
	DbSlot		dbs[PGQ_MAX_DBS];
	int			nslots;
	PushSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} PgqShared;

/* lanes with a shared watermark; more lanes just scan from the block start */
#define PGQ_MAX_LANES	8192

/* queues with wake-ups and counters; more queues poll and count nothing */
#define PGQ_MAX_QUEUES	1024

static PgqShared *shared = NULL;
static HTAB *lane_hash = NULL;
static HTAB *queue_hash = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* this backend's slot holds something that must be cleared at xact end */
static bool slot_in_use = false;

/*
 * shmem_size
 *		Bytes of shared memory pgqueue needs.
 */
static Size
shmem_size(int nslots)
{
	return add_size(add_size(offsetof(PgqShared, slots) + sizeof(PushSlot) * nslots,
							 hash_estimate_size(PGQ_MAX_LANES, sizeof(LaneEntry))),
					add_size(hash_estimate_size(PGQ_MAX_QUEUES, sizeof(QueueShared)),
							 pgq_flow_shmem_size()));
}

/*
 * slot_count
 *		One slot per PGPROC.
 */
static int
slot_count(void)
{
	return MaxBackends + NUM_AUXILIARY_PROCS + max_prepared_xacts;
}

/*
 * pgq_shmem_request
 *		shmem_request_hook: reserve shared memory and the lock.
 */
static void
pgq_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(shmem_size(slot_count()));
	RequestNamedLWLockTranche("pgqueue", 1);
	pgq_flow_shmem_request();
}

/*
 * pgq_shmem_startup
 *		shmem_startup_hook: create or attach to pgqueue's shared state.
 */
static void
pgq_shmem_startup(void)
{
	bool		found;
	HASHCTL		ctl;
	int			nslots = slot_count();

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("pgqueue", offsetof(PgqShared, slots) + sizeof(PushSlot) * nslots,
							 &found);
	if (!found)
	{
		shared->lock = &(GetNamedLWLockTranche("pgqueue"))->lock;
		memset(shared->dbs, 0, sizeof(shared->dbs));
		shared->nslots = nslots;
		for (int i = 0; i < nslots; i++)
		{
			SpinLockInit(&shared->slots[i].mutex);
			shared->slots[i].queue.seq_relid = InvalidOid;
			shared->slots[i].many = false;
			shared->slots[i].min_id = 0;
		}
	}
	ctl.keysize = sizeof(LaneKey);
	ctl.entrysize = sizeof(LaneEntry);
	lane_hash = ShmemInitHash("pgqueue lanes", PGQ_MAX_LANES, PGQ_MAX_LANES,
							  &ctl, HASH_ELEM | HASH_BLOBS);
	ctl.keysize = sizeof(QueueTag);
	ctl.entrysize = sizeof(QueueShared);
	queue_hash = ShmemInitHash("pgqueue queues", PGQ_MAX_QUEUES, PGQ_MAX_QUEUES,
							   &ctl, HASH_ELEM | HASH_BLOBS);
	pgq_flow_shmem_startup();
	LWLockRelease(AddinShmemInitLock);
}

/*
 * my_slot
 *		This backend's push slot.
 */
static PushSlot *
my_slot(void)
{
	return &shared->slots[MyProc->pgprocno];
}

/*
 * xact_callback
 *		Clear the push slot when the transaction ends; refuse to prepare a
 *		transaction that pushed, since its pushes would outlive the slot.
 */
static void
xact_callback(XactEvent event, void *arg)
{
	if (!slot_in_use)
		return;
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot prepare a transaction that pushed jobs to a pgqueue queue")));
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			{
				PushSlot   *slot = my_slot();

				SpinLockAcquire(&slot->mutex);
				slot->queue.seq_relid = InvalidOid;
				slot->many = false;
				slot->min_id = 0;
				SpinLockRelease(&slot->mutex);
				slot_in_use = false;
			}
			break;
		default:
			break;
	}
}

/*
 * pgq_shmem_init
 *		Install the hooks; called from _PG_init.  Shared memory exists only
 *		when pgqueue is in shared_preload_libraries.
 */
void
pgq_shmem_init(void)
{
	RegisterXactCallback(xact_callback, NULL);
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = pgq_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = pgq_shmem_startup;
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
 * same_queue
 *		Whether two tags name the same queue.
 */
static bool
same_queue(QueueTag a, QueueTag b)
{
	return a.dbid == b.dbid && a.seq_relid == b.seq_relid;
}

/*
 * pgq_push_begin
 *		Publish that this transaction is about to allocate ids in a queue.
 *		Must be called before the first nextval of each push.
 */
void
pgq_push_begin(PgqQueue *queue)
{
	PushSlot   *slot;
	QueueTag	tag;

	if (shared == NULL)
		return;
	tag = pgq_queue_tag(queue);
	slot = my_slot();
	SpinLockAcquire(&slot->mutex);
	if (!OidIsValid(slot->queue.seq_relid))
	{
		slot->queue = tag;
		slot->min_id = 0;
	}
	else if (!same_queue(slot->queue, tag))
		slot->many = true;
	SpinLockRelease(&slot->mutex);
	slot_in_use = true;
}

/*
 * pgq_push_allocated
 *		Record the first id a push allocated; ids only grow within a
 *		transaction, so the first one recorded stays the lowest.
 */
void
pgq_push_allocated(int64 job_id)
{
	PushSlot   *slot;

	if (shared == NULL)
		return;
	slot = my_slot();
	SpinLockAcquire(&slot->mutex);
	if (slot->min_id == 0)
		slot->min_id = job_id;
	SpinLockRelease(&slot->mutex);
}

/*
 * pgq_lane_watermark
 *		The shared watermark of a lane (tenant '' for the jobs without
 *		one), or the block's first id if none is known.
 */
int64
pgq_lane_watermark(PgqQueue *queue, PgqBlock *block, int32 priority, const char *tenant)
{
	LaneKey		key;
	LaneEntry  *entry;
	int64		watermark = block->first_id;

	if (shared == NULL)
		return watermark;
	memset(&key, 0, sizeof(key));
	key.queue = pgq_queue_tag(queue);
	key.block_no = block->block_no;
	key.priority = priority;
	strlcpy(key.tenant, tenant, NAMEDATALEN);
	LWLockAcquire(shared->lock, LW_SHARED);
	entry = hash_search(lane_hash, &key, HASH_FIND, NULL);
	if (entry != NULL)
		watermark = Max(watermark, entry->watermark);
	LWLockRelease(shared->lock);
	return watermark;
}

/*
 * pgq_lane_bound
 *		Step one of advancing a lane: the highest watermark the pushes seen
 *		now allow, taken before the snapshot that looks for unclaimed jobs;
 *		pushes of this transaction do not count, since it sees them (it only
 *		advances lanes before it writes anything).  Also the bound below
 *		which keyed jobs may be claimed (flow.c).  Returns 0 (no advance
 *		possible) when shared memory is missing or a push is still
 *		allocating.
 */
int64
pgq_lane_bound(PgqQueue *queue)
{
	LOCAL_FCINFO(fcinfo, 1);
	Datum		last;
	int64		bound;
	QueueTag	tag;

	if (shared == NULL)
		return 0;
	tag = pgq_queue_tag(queue);

	/* L: every id up to here was handed out before the slots are read */
	InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = ObjectIdGetDatum(queue->seq_relid);
	fcinfo->args[0].isnull = false;
	last = pg_sequence_last_value(fcinfo);
	bound = fcinfo->isnull ? 1 : DatumGetInt64(last) + 1;

	pg_memory_barrier();
	for (int i = 0; i < shared->nslots; i++)
	{
		PushSlot   *slot = &shared->slots[i];

		/* this transaction sees its own pushes */
		if (slot == my_slot())
			continue;

		SpinLockAcquire(&slot->mutex);
		if (slot->many)
			bound = 0;
		else if (same_queue(slot->queue, tag))
			bound = slot->min_id == 0 ? 0 : Min(bound, slot->min_id);
		SpinLockRelease(&slot->mutex);
		if (bound == 0)
			break;
	}
	return bound;
}

/*
 * pgq_lane_advance
 *		Raise a lane's shared watermark to watermark (never lower it).
 */
void
pgq_lane_advance(PgqQueue *queue, PgqBlock *block, int32 priority, const char *tenant,
				 int64 watermark)
{
	LaneKey		key;
	LaneEntry  *entry;
	bool		found;

	if (shared == NULL || watermark <= block->first_id)
		return;
	memset(&key, 0, sizeof(key));
	key.queue = pgq_queue_tag(queue);
	key.block_no = block->block_no;
	key.priority = priority;
	strlcpy(key.tenant, tenant, NAMEDATALEN);
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	entry = hash_search(lane_hash, &key, HASH_ENTER_NULL, &found);
	if (entry != NULL)
	{
		if (!found || entry->watermark < watermark)
			entry->watermark = watermark;
	}
	LWLockRelease(shared->lock);
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
	QueueShared *qs;
	bool		found;

	if (shared == NULL)
		return NULL;
	LWLockAcquire(shared->lock, LW_SHARED);
	qs = hash_search(queue_hash, &tag, HASH_FIND, NULL);
	LWLockRelease(shared->lock);
	if (qs != NULL || !create)
		return qs;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	qs = hash_search(queue_hash, &tag, HASH_ENTER_NULL, &found);
	if (qs != NULL && !found)
	{
		qs->queue_id = queue_id;
		ConditionVariableInit(&qs->cv);
		SpinLockInit(&qs->mutex);
		qs->waiters = 0;
		qs->next_due = 0;
		qs->due_gen = 0;
		memset(&qs->flow, 0, sizeof(qs->flow));
		qs->flow_gen = 0;
		qs->key_gen = 0;
		qs->rr = 0;
		for (int i = 0; i < PGQ_NUM_COUNTERS; i++)
			pg_atomic_init_u64(&qs->counters[i], 0);
	}
	LWLockRelease(shared->lock);
	return qs;
}

/*
 * pgq_shmem_ready
 *		Whether pgqueue's shared memory exists (preloaded).
 */
bool
pgq_shmem_ready(void)
{
	return shared != NULL;
}

/*
 * db_slot
 *		The slot of a database, taken from the free ones if it has none;
 *		NULL when all are taken.  Caller holds the lock exclusively.
 */
static DbSlot *
db_slot(Oid dbid)
{
	DbSlot	   *free_slot = NULL;

	for (int i = 0; i < PGQ_MAX_DBS; i++)
	{
		if (shared->dbs[i].dbid == dbid)
			return &shared->dbs[i];
		if (free_slot == NULL && !OidIsValid(shared->dbs[i].dbid))
			free_slot = &shared->dbs[i];
	}
	if (free_slot != NULL)
	{
		memset(free_slot, 0, sizeof(DbSlot));
		free_slot->dbid = dbid;
	}
	return free_slot;
}

/*
 * pgq_db_should_start
 *		For the launcher: whether to start a worker for the database now;
 *		if so, the database is marked as starting one.
 */
bool
pgq_db_should_start(Oid dbid)
{
	DbSlot	   *slot;
	bool		start = false;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	slot = db_slot(dbid);
	if (slot != NULL && slot->pid == 0 && GetCurrentTimestamp() >= slot->next_start)
	{
		slot->pid = -1;
		start = true;
	}
	LWLockRelease(shared->lock);
	return start;
}

/*
 * pgq_db_started
 *		A worker runs for the database.
 */
void
pgq_db_started(Oid dbid)
{
	DbSlot	   *slot;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	slot = db_slot(dbid);
	if (slot != NULL)
		slot->pid = MyProcPid;
	LWLockRelease(shared->lock);
}

/*
 * pgq_db_finished
 *		The database's worker ended: cleanly, to be started again after
 *		delay seconds, or (delay -1) by failing, to be started again after a
 *		backoff that doubles with each failure in a row, up to five minutes.
 */
void
pgq_db_finished(Oid dbid, int delay)
{
	DbSlot	   *slot;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	slot = db_slot(dbid);
	if (slot != NULL)
	{
		slot->pid = 0;
		if (delay >= 0)
			slot->failures = 0;
		else
		{
			slot->failures++;
			delay = 1 << Min(slot->failures, 8);
			delay = Min(delay, 300);
		}
		slot->next_start = GetCurrentTimestamp() + (TimestampTz) delay * USECS_PER_SEC;
	}
	LWLockRelease(shared->lock);
}

/*
 * pgq_db_poke
 *		Let the launcher start the database's worker at its next look, if
 *		none runs: a database that just got the extension (or its first
 *		queue) need not wait for the minute a worker that found no
 *		extension there asked for.
 */
void
pgq_db_poke(Oid dbid)
{
	DbSlot	   *slot;

	if (shared == NULL)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	slot = db_slot(dbid);
	if (slot != NULL && slot->pid == 0)
		slot->next_start = 0;
	LWLockRelease(shared->lock);
}
