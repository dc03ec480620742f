/*-------------------------------------------------------------------------
 *
 * watermark.c
 *	  Open pushes and the low watermarks of lanes, in shared memory.
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
 * The table of lanes has a fixed size (pgqueue.max_lanes), reserved at
 * server start; when it is full a new lane evicts another one, whose pops
 * then scan from the start of its block again.  A watermark is only ever a
 * hint that saves reading, so losing one costs time, never a job.  The
 * lanes of blocks that were dropped or finished, and of dropped queues,
 * are forgotten by maintenance.
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
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/fmgrprotos.h"
#include "utils/hsearch.h"

#include "watermark.h"

int			pgq_max_lanes = 8192;

/* one backend's open pushes */
typedef struct PushSlot
{
	slock_t		mutex;
	QueueTag	queue;			/* seq_relid is InvalidOid when free */
	bool		many;			/* pushed to several queues: holds back all */
	int64		min_id;			/* lowest id allocated; 0 while allocating */
} PushSlot;

typedef struct PushSlots
{
	int			nslots;
	PushSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} PushSlots;

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

static PushSlots *push_slots = NULL;
static LWLock *lanes_lock = NULL;	/* protects the table of lanes */
static HTAB *lane_hash = NULL;

/* this backend's slot holds something that must be cleared at xact end */
static bool slot_in_use = false;

/*
 * slot_count
 *		One push slot per PGPROC.
 */
static int
slot_count(void)
{
	return MaxBackends + NUM_AUXILIARY_PROCS + max_prepared_xacts;
}

/*
 * pgq_watermarks_shmem_size
 *		Bytes of shared memory of the push slots and the table of lanes.
 */
Size
pgq_watermarks_shmem_size(void)
{
	return add_size(add_size(offsetof(PushSlots, slots),
							 mul_size(sizeof(PushSlot), slot_count())),
					hash_estimate_size(pgq_max_lanes, sizeof(LaneEntry)));
}

/*
 * pgq_watermarks_shmem_request
 *		Reserve the lock of the table of lanes (shmem_request_hook).
 */
void
pgq_watermarks_shmem_request(void)
{
	RequestNamedLWLockTranche("pgqueue lanes", 1);
}

/*
 * pgq_watermarks_shmem_init
 *		Create or attach to the push slots and the table of lanes; the
 *		caller holds AddinShmemInitLock.
 */
void
pgq_watermarks_shmem_init(void)
{
	bool		found;
	HASHCTL		ctl;
	int			nslots = slot_count();

	push_slots = ShmemInitStruct("pgqueue push slots",
								 offsetof(PushSlots, slots) + sizeof(PushSlot) * nslots,
								 &found);
	if (!found)
	{
		push_slots->nslots = nslots;
		for (int i = 0; i < nslots; i++)
		{
			SpinLockInit(&push_slots->slots[i].mutex);
			push_slots->slots[i].queue.seq_relid = InvalidOid;
			push_slots->slots[i].many = false;
			push_slots->slots[i].min_id = 0;
		}
	}
	lanes_lock = &(GetNamedLWLockTranche("pgqueue lanes"))->lock;
	ctl.keysize = sizeof(LaneKey);
	ctl.entrysize = sizeof(LaneEntry);
	lane_hash = ShmemInitHash("pgqueue lanes", pgq_max_lanes, pgq_max_lanes,
							  &ctl, HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
}

/*
 * my_slot
 *		This backend's push slot.
 */
static PushSlot *
my_slot(void)
{
	return &push_slots->slots[MyProc->pgprocno];
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
 * pgq_watermarks_init
 *		Install the transaction callback; called from _PG_init.
 */
void
pgq_watermarks_init(void)
{
	RegisterXactCallback(xact_callback, NULL);
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

	if (push_slots == NULL)
		return;
	tag = pgq_queue_tag(queue);
	slot = my_slot();
	SpinLockAcquire(&slot->mutex);
	if (!OidIsValid(slot->queue.seq_relid))
	{
		slot->queue = tag;
		slot->min_id = 0;
	}
	else if (!pgq_same_queue(slot->queue, tag))
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

	if (push_slots == NULL)
		return;
	slot = my_slot();
	SpinLockAcquire(&slot->mutex);
	if (slot->min_id == 0)
		slot->min_id = job_id;
	SpinLockRelease(&slot->mutex);
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

	if (push_slots == NULL)
		return 0;
	tag = pgq_queue_tag(queue);

	/* L: every id up to here was handed out before the slots are read */
	InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = ObjectIdGetDatum(queue->seq_relid);
	fcinfo->args[0].isnull = false;
	last = pg_sequence_last_value(fcinfo);
	bound = fcinfo->isnull ? 1 : DatumGetInt64(last) + 1;

	pg_memory_barrier();
	for (int i = 0; i < push_slots->nslots; i++)
	{
		PushSlot   *slot = &push_slots->slots[i];

		/* this transaction sees its own pushes */
		if (slot == my_slot())
			continue;

		SpinLockAcquire(&slot->mutex);
		if (slot->many)
			bound = 0;
		else if (pgq_same_queue(slot->queue, tag))
			bound = slot->min_id == 0 ? 0 : Min(bound, slot->min_id);
		SpinLockRelease(&slot->mutex);
		if (bound == 0)
			break;
	}
	return bound;
}

/*
 * lane_key
 *		The key of a lane.
 */
static void
lane_key(LaneKey *key, PgqQueue *queue, PgqBlock *block, int32 priority, const char *tenant)
{
	memset(key, 0, sizeof(*key));
	key->queue = pgq_queue_tag(queue);
	key->block_no = block->block_no;
	key->priority = priority;
	strlcpy(key->tenant, tenant, NAMEDATALEN);
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

	if (lane_hash == NULL)
		return watermark;
	lane_key(&key, queue, block, priority, tenant);
	LWLockAcquire(lanes_lock, LW_SHARED);
	entry = hash_search(lane_hash, &key, HASH_FIND, NULL);
	if (entry != NULL)
		watermark = Max(watermark, entry->watermark);
	LWLockRelease(lanes_lock);
	return watermark;
}

/*
 * pgq_lane_advance
 *		Raise a lane's shared watermark to watermark (never lower it).  A
 *		new lane evicts another one when the table is full.
 */
void
pgq_lane_advance(PgqQueue *queue, PgqBlock *block, int32 priority, const char *tenant,
				 int64 watermark)
{
	LaneKey		key;
	LaneEntry  *entry;
	bool		found;

	if (lane_hash == NULL || watermark <= block->first_id)
		return;
	lane_key(&key, queue, block, priority, tenant);
	LWLockAcquire(lanes_lock, LW_EXCLUSIVE);
	entry = hash_search(lane_hash, &key, HASH_ENTER_NULL, &found);
	if (entry == NULL)
	{
		HASH_SEQ_STATUS status;
		LaneEntry  *victim;

		hash_seq_init(&status, lane_hash);
		victim = hash_seq_search(&status);
		hash_seq_term(&status);
		hash_search(lane_hash, &victim->key, HASH_REMOVE, NULL);
		entry = hash_search(lane_hash, &key, HASH_ENTER, &found);
	}
	if (!found || entry->watermark < watermark)
		entry->watermark = watermark;
	LWLockRelease(lanes_lock);
}

/*
 * pgq_lanes_forget
 *		Remove the lanes of the queues to forget; with block_no, only those
 *		of that block.
 */
void
pgq_lanes_forget(const PgqForget *forget, const int32 *block_no)
{
	HASH_SEQ_STATUS status;
	LaneEntry  *entry;

	if (lane_hash == NULL)
		return;
	LWLockAcquire(lanes_lock, LW_EXCLUSIVE);
	hash_seq_init(&status, lane_hash);
	while ((entry = hash_seq_search(&status)) != NULL)
		if (pgq_forgotten(entry->key.queue, forget) &&
			(block_no == NULL || entry->key.block_no == *block_no))
			hash_search(lane_hash, &entry->key, HASH_REMOVE, NULL);
	LWLockRelease(lanes_lock);
}
