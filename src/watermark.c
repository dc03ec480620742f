/*-------------------------------------------------------------------------
 *
 * watermark.c
 *	  Open pushes and the low watermarks of lanes, in shared memory.
 *
 * A lane is the never-claimed jobs of one priority and one tenant (or of
 * the jobs without a tenant) in one block.  Its cursor hands out disjoint
 * id ranges to the pops that claim its jobs (claim records, claim.c):
 * every job of the lane below the cursor is claimed by the claim record
 * whose range holds it, or has status rows, but for the ranges in the
 * lane's returned list (reservations whose claim rolled back, and the
 * parts of reservations a pop did not need).  The cursor only passes ids
 * below the bound of open pushes (guarantee 3): a push that has not
 * committed yet holds it back.
 *
 * Open pushes are published in one slot per backend: before a transaction
 * allocates its first id in a queue it marks its slot for that queue, with
 * the sequence's last value + 1 as its floor (every id it allocates will
 * be above), then records its first id; the slot is cleared at transaction
 * end.  A pop reads the queue's sequence (L), then the slots, then takes
 * the snapshot of its claim.  Any id <= L was handed out before L was
 * read, so a pusher of it that is still running had already published its
 * slot and bounds the cursor; ids above L are never passed.
 *
 * The table of lanes has a fixed size (pgqueue.max_lanes), reserved at
 * server start.  A lane whose entry is new (first use, after a crash, or
 * after the entry was evicted to make room) does not know its cursor yet:
 * the first pop reads it back from the claim records (with a dirty
 * snapshot, so that claims being written count) while the others pass the
 * lane by: the cursor is the end of the last claim, and the gaps between
 * claims are ranges whose claim rolled back.  An entry is only evicted
 * while no pop holds a reservation of it that its claim record does not
 * show yet.  The lanes of blocks that were dropped or finished, and of
 * dropped queues, are forgotten by maintenance.
 *
 * Pops also claim never-claimed jobs one status row each (pop.c): above
 * the cursor, which open pushes hold back, and under REPEATABLE READ from
 * the block's first id.  Such a claimer registers its floor in the lane
 * for the length of its statement; while it is there, no range at or
 * above the floor is handed out, and a claimer from the first id waits
 * (passes the lane by) until no reservation is out.  So a job is never
 * taken by a range and by a row of its own at once.  A claimer leaves the
 * lane at the end of its statement, or of its backend.
 *
 * Without shared_preload_libraries none of this exists and pops claim
 * never-claimed jobs one status row each (pop.c).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

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

#include "note.h"
#include "watermark.h"

int			pgq_max_lanes = 8192;

/* one backend's open pushes */
typedef struct PushSlot
{
	slock_t		mutex;
	QueueTag	queue;			/* seq_relid is InvalidOid when free */
	bool		many;			/* pushed to several queues: holds back all of
								 * its database */
	bool		allocated;		/* min_id is an id, not the floor */
	int64		min_id;			/* lowest id it allocated, or may allocate */
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

/* reservation ranges given back, kept per lane; more make the lane unknown */
#define PGQ_LANE_RETURNED	8

typedef struct LaneEntry
{
	LaneKey		key;
	bool		known;			/* cursor and returned are valid */
	bool		rebuilding;		/* a pop reads them back from the claims */
	bool		more;			/* more gaps than returned holds: read again */
	int64		rebuild_from;	/* ... from this id on (0: from the start) */
	int			reserving;		/* reservations whose claim is not written yet */
	int			fresh;			/* claimers of one row a job (see above) */
	int64		fresh_floor;	/* the lowest of their floors */
	int64		cursor;
	double		seen_jobs;		/* jobs of the lane among seen_ids ids read */
	double		seen_ids;		/* by recent claims, older ones decayed */
	int			nreturned;
	PgqRange	returned[PGQ_LANE_RETURNED];	/* disjoint, by lo */
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
			push_slots->slots[i].allocated = false;
			push_slots->slots[i].min_id = 0;
		}
	}
	lanes_lock = &(GetNamedLWLockTranche("pgqueue lanes"))->lock;
	lane_hash = pgq_shmem_hash("pgqueue lanes", pgq_max_lanes, sizeof(LaneKey),
							   sizeof(LaneEntry));
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
 *		Clear the push slot when the transaction ends (a transaction that
 *		used a queue is not prepared: note.c).
 */
static void
xact_callback(XactEvent event, void *arg)
{
	if (!slot_in_use)
		return;
	switch (event)
	{
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
				slot->allocated = false;
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
 * seq_last
 *		The last id a queue's sequence handed out (0 if none yet).
 */
static int64
seq_last(PgqQueue *queue)
{
	LOCAL_FCINFO(fcinfo, 1);
	Datum		last;

	InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = ObjectIdGetDatum(queue->seq_relid);
	fcinfo->args[0].isnull = false;
	last = pg_sequence_last_value(fcinfo);
	return fcinfo->isnull ? 0 : DatumGetInt64(last);
}

/*
 * pgq_push_begin
 *		Publish that this transaction is about to allocate ids in a queue:
 *		every id it will allocate is above the sequence's last value, read
 *		now.  Must be called before the first nextval of each push.
 */
void
pgq_push_begin(PgqQueue *queue)
{
	PushSlot   *slot;
	QueueTag	tag;
	int64		floor = 0;

	if (push_slots == NULL)
		return;
	tag = pgq_queue_tag(queue);
	slot = my_slot();
	/* only this backend writes its slot's queue */
	if (!OidIsValid(slot->queue.seq_relid))
		floor = seq_last(queue) + 1;
	SpinLockAcquire(&slot->mutex);
	if (floor > 0)
	{
		slot->queue = tag;
		slot->min_id = floor;
	}
	else if (!pgq_same_queue(slot->queue, tag))
		slot->many = true;
	SpinLockRelease(&slot->mutex);
	slot_in_use = true;
}

/*
 * pgq_push_allocated
 *		Record the first id a push allocated, above the floor that
 *		pgq_push_begin published; ids only grow within a transaction, so it
 *		stays the lowest.
 */
void
pgq_push_allocated(int64 job_id)
{
	PushSlot   *slot;

	if (push_slots == NULL)
		return;
	slot = my_slot();
	SpinLockAcquire(&slot->mutex);
	if (!slot->allocated)
	{
		slot->min_id = job_id;
		slot->allocated = true;
	}
	SpinLockRelease(&slot->mutex);
}

/*
 * pgq_lane_bound
 *		Step one of advancing a lane: the highest watermark the pushes seen
 *		now allow, taken before the snapshot that looks for unclaimed jobs;
 *		pushes of this transaction do not count, since it sees them (it only
 *		advances lanes before it writes anything).  Also the bound below
 *		which keyed jobs may be claimed (flow.c).  Returns 0 (no advance
 *		possible) when shared memory is missing or a transaction of the
 *		queue's database pushes to several queues.
 */
int64
pgq_lane_bound(PgqQueue *queue)
{
	int64		bound;
	QueueTag	tag;

	if (push_slots == NULL)
		return 0;
	tag = pgq_queue_tag(queue);

	/* L: every id up to here was handed out before the slots are read */
	bound = seq_last(queue) + 1;

	pg_memory_barrier();
	for (int i = 0; i < push_slots->nslots; i++)
	{
		PushSlot   *slot = &push_slots->slots[i];

		/* this transaction sees its own pushes */
		if (slot == my_slot())
			continue;

		SpinLockAcquire(&slot->mutex);
		if (slot->many && slot->queue.dbid == tag.dbid)
			bound = 0;
		else if (pgq_same_queue(slot->queue, tag))
			bound = Min(bound, slot->min_id);
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
lane_key(LaneKey *key, QueueTag queue, int32 block_no, int32 priority, const char *tenant)
{
	memset(key, 0, sizeof(*key));
	key->queue = queue;
	key->block_no = block_no;
	key->priority = priority;
	strlcpy(key->tenant, tenant, NAMEDATALEN);
}

/*
 * lane_entry
 *		The entry of a lane, made (unknown) if it has none; when the table is
 *		full, another lane that no reservation holds is evicted.  NULL if
 *		every lane is held.  Caller holds the lock exclusively.
 */
static LaneEntry *
lane_entry(LaneKey *key)
{
	LaneEntry  *entry;
	bool		found;

	entry = hash_search(lane_hash, key, HASH_ENTER_NULL, &found);
	if (entry == NULL)
	{
		HASH_SEQ_STATUS status;
		LaneEntry  *victim;

		hash_seq_init(&status, lane_hash);
		while ((victim = hash_seq_search(&status)) != NULL)
			if (victim->reserving == 0 && victim->fresh == 0 && !victim->rebuilding)
			{
				hash_seq_term(&status);
				hash_search(lane_hash, &victim->key, HASH_REMOVE, NULL);
				entry = hash_search(lane_hash, key, HASH_ENTER, &found);
				break;
			}
		if (entry == NULL)
			return NULL;
	}
	if (!found)
	{
		entry->known = false;
		entry->rebuilding = false;
		entry->more = false;
		entry->rebuild_from = 0;
		entry->reserving = 0;
		entry->fresh = 0;
		entry->fresh_floor = PG_INT64_MAX;
		entry->cursor = 0;
		entry->seen_jobs = 1.0;
		entry->seen_ids = 1.0;
		entry->nreturned = 0;
	}
	return entry;
}

/*
 * What this backend holds in lanes' entries: reservations whose claim is
 * not written yet (PGQ_HOLD_RESERVE), a lane it reads back (PGQ_HOLD_REBUILD), lanes it claims in
 * one row a job at (PGQ_HOLD_FRESH).  Released as the work ends, and at exit for a
 * backend that ends with FATAL in the middle (errors are caught by the
 * callers).  A fixed array: nothing is allocated under the lock.
 */
#define PGQ_HOLDS	64

typedef struct LaneHold
{
	LaneKey		key;
	char		kind;
} LaneHold;

static LaneHold holds[PGQ_HOLDS];
static int	nholds = 0;

static void holds_exit(int code, Datum arg);

/*
 * hold_add
 *		Remember a hold; false if there is no room (the caller passes the
 *		lane by).  Caller holds the lock.
 */
static bool
hold_add(LaneKey *key, char kind)
{
	static bool exit_set = false;

	if (!exit_set)
	{
		before_shmem_exit(holds_exit, (Datum) 0);
		exit_set = true;
	}
	if (nholds == PGQ_HOLDS)
		return false;
	holds[nholds].key = *key;
	holds[nholds].kind = kind;
	nholds++;
	return true;
}

/*
 * hold_remove
 *		Forget one hold of a lane, of a kind.  Caller holds the lock.
 */
static void
hold_remove(LaneKey *key, char kind)
{
	for (int i = nholds - 1; i >= 0; i--)
		if (holds[i].kind == kind && memcmp(&holds[i].key, key, sizeof(LaneKey)) == 0)
		{
			holds[i] = holds[--nholds];
			return;
		}
}

/*
 * undo_hold
 *		Take back what a hold of a kind set in a lane's entry.  Caller holds
 *		the lock.
 */
static void
undo_hold(LaneEntry *entry, char kind)
{
	switch (kind)
	{
		case PGQ_HOLD_RESERVE:
			entry->reserving--;
			break;
		case PGQ_HOLD_REBUILD:
			entry->rebuilding = false;
			break;
		case PGQ_HOLD_FRESH:
			if (--entry->fresh == 0)
				entry->fresh_floor = PG_INT64_MAX;
			break;
	}
}

/*
 * release_holds
 *		Give up every hold of the kinds given (all of them with kind '\0').
 */
static void
release_holds(char kind)
{
	LWLockAcquire(lanes_lock, LW_EXCLUSIVE);
	for (int i = nholds - 1; i >= 0; i--)
	{
		LaneEntry  *entry;

		if (kind != '\0' && holds[i].kind != kind)
			continue;
		entry = hash_search(lane_hash, &holds[i].key, HASH_FIND, NULL);
		if (entry != NULL)
			undo_hold(entry, holds[i].kind);
		holds[i] = holds[--nholds];
	}
	LWLockRelease(lanes_lock);
}

/*
 * holds_exit
 *		before_shmem_exit callback: give up what a backend that ends in the
 *		middle of a pop holds.  The ranges of its reservations go back to
 *		their lanes with its transaction's notes.
 */
static void
holds_exit(int code, Datum arg)
{
	if (nholds > 0)
		release_holds('\0');
}

/*
 * give_back
 *		Add a range to a lane's returned list, merged with the ranges it
 *		touches so that the list stays disjoint; false if the list is full
 *		(the range is then a gap between claims, found when the lane is read
 *		back: see unknown).
 */
static bool
give_back(LaneEntry *entry, int64 lo, int64 hi)
{
	int			i;
	int			j;

	if (lo > hi)
		return true;
	/* merge every range that overlaps or touches [lo, hi] */
	for (i = 0; i < entry->nreturned;)
	{
		PgqRange   *r = &entry->returned[i];

		if (r->hi + 1 < lo || hi + 1 < r->lo)
		{
			i++;
			continue;
		}
		lo = Min(lo, r->lo);
		hi = Max(hi, r->hi);
		entry->returned[i] = entry->returned[--entry->nreturned];
	}
	if (entry->nreturned == PGQ_LANE_RETURNED)
		return false;
	/* keep them by lo: the oldest jobs go first */
	for (i = 0; i < entry->nreturned && entry->returned[i].lo < lo; i++)
		;
	for (j = entry->nreturned; j > i; j--)
		entry->returned[j] = entry->returned[j - 1];
	entry->returned[i].lo = lo;
	entry->returned[i].hi = hi;
	entry->nreturned++;
	return true;
}

/*
 * unknown
 *		A lane that lost track of a returned range: it is read back whole
 *		from its claim records, where the range is a gap.
 */
static void
unknown(LaneEntry *entry)
{
	entry->known = false;
	entry->rebuild_from = 0;
}

/*
 * lane_span
 *		How many ids a reservation for want jobs of a lane spans: want at
 *		the lane's density, as the ranges its recent claims read saw it
 *		(the ratio of their sums: a range that happened to hold one job in
 *		three ids does not make the next one tiny).  A lane thinned out by
 *		tenants or priorities (one job in fifty ids, say) gets a margin of
 *		PGQ_SPAN_MARGIN, so that a claim usually gets all it wants in one
 *		range (the ids it does not read go back to the lane:
 *		pgq_lane_claimed); a lane that held every id it read gets want ids
 *		exactly, so that it does not hold ids back from a concurrent pop.
 */
#define PGQ_SEEN_DECAY		0.75
#define PGQ_SPAN_MARGIN		1.25

static int64
lane_span(LaneEntry *entry, int want)
{
	double		per_job = entry->seen_ids / Max(entry->seen_jobs, 1.0);

	if (per_job <= 1.0)
		return want;
	return (int64) ceil(PGQ_SPAN_MARGIN * want * per_job);
}

/*
 * pgq_lane_reserve
 *		Reserve a range of ids for a claim of up to want jobs of a lane: the
 *		first returned range, or a range from the cursor below bound, as
 *		many ids as want jobs take at the lane's density.  Returns
 *		PGQ_LANE_GOT with *r, PGQ_LANE_EMPTY (nothing to claim now),
 *		PGQ_LANE_BUSY (another pop reads the lane back: pass it by) or
 *		PGQ_LANE_REBUILD: the caller must read the lane back from the claim
 *		records, from id r->lo on (0: all of them), and call
 *		pgq_lane_rebuilt (or pgq_lane_rebuild_failed).
 */
PgqLaneStatus
pgq_lane_reserve(PgqQueue *queue, PgqBlock *block, int32 priority, const char *tenant,
				 int want, int64 bound, PgqRange *r)
{
	LaneKey		key;
	LaneEntry  *entry;
	PgqLaneStatus result = PGQ_LANE_EMPTY;

	lane_key(&key, pgq_queue_tag(queue), block->block_no, priority, tenant);
	LWLockAcquire(lanes_lock, LW_EXCLUSIVE);
	entry = lane_entry(&key);
	if (entry == NULL || entry->rebuilding)
		result = PGQ_LANE_BUSY;
	else if (!entry->known)
	{
		if (entry->reserving > 0)
			result = PGQ_LANE_BUSY;
		else if (hold_add(&key, PGQ_HOLD_REBUILD))
		{
			entry->rebuilding = true;
			r->lo = entry->rebuild_from;
			result = PGQ_LANE_REBUILD;
		}
		else
			result = PGQ_LANE_BUSY;
	}
	else if (nholds == PGQ_HOLDS)
		result = PGQ_LANE_BUSY;
	else
	{
		int64		span = lane_span(entry, want);

		if (entry->nreturned > 0 && entry->returned[0].lo < entry->fresh_floor)
		{
			PgqRange   *first = &entry->returned[0];

			r->lo = first->lo;
			r->hi = Min(Min(first->hi, first->lo + span - 1), entry->fresh_floor - 1);
			if (r->hi == first->hi)
			{
				entry->nreturned--;
				memmove(&entry->returned[0], &entry->returned[1],
						sizeof(PgqRange) * entry->nreturned);
			}
			else
				first->lo = r->hi + 1;
			result = PGQ_LANE_GOT;
		}
		else
		{
			int64		end = Min(Min(Max(entry->cursor, block->first_id) + span,
									  Min(bound, block->last_id + 1)),
								  entry->fresh_floor);

			if (end > entry->cursor)
			{
				r->lo = Max(entry->cursor, block->first_id);
				r->hi = end - 1;
				entry->cursor = end;
				result = PGQ_LANE_GOT;
			}
		}
		if (result == PGQ_LANE_GOT)
		{
			entry->reserving++;
			hold_add(&key, PGQ_HOLD_RESERVE);
		}
		/* a list that had to drop gaps is read again once it is empty */
		if (entry->nreturned == 0 && entry->more)
		{
			entry->more = false;
			entry->known = false;
		}
	}
	LWLockRelease(lanes_lock);
	return result;
}

/*
 * pgq_lane_fresh_begin
 *		Register this backend as claiming never-claimed jobs of a lane one
 *		status row each (see the file header) and return its floor: the
 *		lane's cursor, or with from_start the block's first id.  Returns -1
 *		(pass the lane by) if the cursor is not known now, or with
 *		from_start while a reservation is out, if the table of lanes has no
 *		room, or if the cursor passed the block's end.  pgq_lane_fresh_end
 *		leaves every lane registered.
 */
int64
pgq_lane_fresh_begin(PgqQueue *queue, PgqBlock *block, int32 priority, const char *tenant,
					 bool from_start)
{
	LaneKey		key;
	LaneEntry  *entry;
	int64		floor = -1;

	if (lane_hash == NULL)
		return block->first_id;
	lane_key(&key, pgq_queue_tag(queue), block->block_no, priority, tenant);
	LWLockAcquire(lanes_lock, LW_EXCLUSIVE);
	entry = lane_entry(&key);
	if (entry != NULL && !entry->rebuilding &&
		(from_start ? entry->reserving == 0 : entry->known))
		floor = from_start ? block->first_id : Max(entry->cursor, block->first_id);
	/* a lane whose cursor passed its block has nothing above it */
	if (floor > block->last_id || (floor >= 0 && !hold_add(&key, PGQ_HOLD_FRESH)))
		floor = -1;
	if (floor >= 0)
	{
		entry->fresh++;
		entry->fresh_floor = Min(entry->fresh_floor, floor);
	}
	LWLockRelease(lanes_lock);
	return floor;
}

/*
 * pgq_lane_fresh_end
 *		Leave every lane this backend claims in one row a job at.
 */
void
pgq_lane_fresh_end(void)
{
	for (int i = 0; i < nholds; i++)
		if (holds[i].kind == PGQ_HOLD_FRESH)
		{
			release_holds(PGQ_HOLD_FRESH);
			return;
		}
}

/*
 * pgq_lane_claimed
 *		The claim of a reservation is written (or will never be): it read
 *		seen jobs of its lane, up to id used, and took what it could; the rest
 *		of the range goes back to the lane.  lost: the range was not the
 *		lane's to give (a claim holds part of it): the lane is read back
 *		from its claim records.
 */
void
pgq_lane_claimed(PgqQueue *queue, PgqBlock *block, int32 priority, const char *tenant,
				 PgqRange *r, int64 used, int seen, bool lost)
{
	LaneKey		key;
	LaneEntry  *entry;

	lane_key(&key, pgq_queue_tag(queue), block->block_no, priority, tenant);
	LWLockAcquire(lanes_lock, LW_EXCLUSIVE);
	entry = hash_search(lane_hash, &key, HASH_FIND, NULL);
	hold_remove(&key, PGQ_HOLD_RESERVE);
	if (entry != NULL)
	{
		entry->reserving--;
		/* a tail at the cursor is given back by moving the cursor back */
		if (lost)
			unknown(entry);
		else if (r->hi + 1 == entry->cursor && used + 1 <= r->hi)
			entry->cursor = used + 1;
		else if (!give_back(entry, used + 1, r->hi))
			unknown(entry);
		if (used >= r->lo)
		{
			entry->seen_jobs = PGQ_SEEN_DECAY * entry->seen_jobs + seen;
			entry->seen_ids = PGQ_SEEN_DECAY * entry->seen_ids + (used - r->lo + 1);
		}
	}
	LWLockRelease(lanes_lock);
}

/*
 * pgq_lane_release
 *		Give up a hold of a lane: a reservation whose claim failed (its
 *		(sub)transaction aborts and gives the range back:
 *		pgq_watermarks_apply), or a read-back that failed (the next pop
 *		tries).
 */
void
pgq_lane_release(PgqQueue *queue, PgqBlock *block, int32 priority, const char *tenant,
				 char kind)
{
	LaneKey		key;
	LaneEntry  *entry;

	lane_key(&key, pgq_queue_tag(queue), block->block_no, priority, tenant);
	LWLockAcquire(lanes_lock, LW_EXCLUSIVE);
	entry = hash_search(lane_hash, &key, HASH_FIND, NULL);
	hold_remove(&key, kind);
	if (entry != NULL)
		undo_hold(entry, kind);
	LWLockRelease(lanes_lock);
}

/*
 * pgq_lane_rebuilt
 *		Set a lane read back from its claim records (those from id from on;
 *		0: all of them, and then every range it had returned is among the
 *		gaps): its cursor and the gaps between its claims; resume, if not 0,
 *		is where the gaps that did not fit begin: once those given are used
 *		up, the lane is read again from there.
 */
void
pgq_lane_rebuilt(PgqQueue *queue, PgqBlock *block, int32 priority, const char *tenant,
				 int64 from, int64 cursor, PgqRange *gaps, int ngaps, int64 resume)
{
	LaneKey		key;
	LaneEntry  *entry;

	lane_key(&key, pgq_queue_tag(queue), block->block_no, priority, tenant);
	LWLockAcquire(lanes_lock, LW_EXCLUSIVE);
	entry = hash_search(lane_hash, &key, HASH_FIND, NULL);
	hold_remove(&key, PGQ_HOLD_REBUILD);
	if (entry != NULL)
	{
		entry->rebuilding = false;
		entry->known = true;
		entry->cursor = Max(entry->cursor, cursor);
		if (from == 0)
			entry->nreturned = 0;
		for (int i = 0; i < ngaps; i++)
			if (!give_back(entry, gaps[i].lo, gaps[i].hi))
			{
				/* no room: read on from this gap once the list is used up */
				resume = resume == 0 ? gaps[i].lo : Min(resume, gaps[i].lo);
				break;
			}
		entry->more = resume > 0;
		entry->rebuild_from = resume;
	}
	LWLockRelease(lanes_lock);
}

/*
 * pgq_lane_return
 *		Give a range back to its lane: its claim rolled back.  Nothing to do
 *		if the lane has no entry (a new one reads the gap back).
 */
void
pgq_lane_return(QueueTag queue, int32 block_no, int32 priority, const char *tenant,
				int64 lo, int64 hi)
{
	LaneKey		key;
	LaneEntry  *entry;

	if (lane_hash == NULL)
		return;
	lane_key(&key, queue, block_no, priority, tenant);
	LWLockAcquire(lanes_lock, LW_EXCLUSIVE);
	entry = hash_search(lane_hash, &key, HASH_FIND, NULL);
	if (entry != NULL && !give_back(entry, lo, hi))
		unknown(entry);
	LWLockRelease(lanes_lock);
}

/*
 * pgq_lanes_forget
 *		Remove the lanes of the queues to forget; with block_no, only those
 *		of that block.  Lanes with a reservation in progress stay (their
 *		claims are being written into a block that is going away).
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
			(block_no == NULL || entry->key.block_no == *block_no) &&
			entry->reserving == 0 && entry->fresh == 0 && !entry->rebuilding)
			hash_search(lane_hash, &entry->key, HASH_REMOVE, NULL);
	LWLockRelease(lanes_lock);
}

/*
 * pgq_watermarks_apply
 *		Note applier: a (sub)transaction whose claims roll back gives their
 *		ranges back to their lanes.
 */
void
pgq_watermarks_apply(PgqNote *note, QueueShared *qs, bool commit)
{
	ListCell   *lc;

	if (commit)
		return;
	foreach(lc, note->reservations)
	{
		PgqReservation *r = lfirst(lc);

		pgq_lane_return(note->tag, r->block_no, r->priority, r->tenant, r->lo, r->hi);
	}
}
