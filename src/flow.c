/*-------------------------------------------------------------------------
 *
 * flow.c
 *	  Flow control: ordering keys, in-flight caps, token-bucket rate limits
 *	  and maximum depth, per queue and per tenant.
 *
 * Ordering keys.  A job with a key may be claimed only when every job of
 * its key with a lower id has finished (succeeded or aborted) and, since a
 * claim must also see all of those, only below the bound of open pushes
 * (watermark.c): then the jobs of a key visible to a claim are a prefix of the
 * key's jobs in id order, and "lowest unfinished job of its key" picks one
 * job per key, so two consumers never hold two jobs of one key.  The test
 * is pgqueue_internal._key_ready(), called by the claim statements for each keyed
 * candidate.  It probes the block tables through their (key, job_id)
 * index, starting at the key's shared watermark: no unfinished job of the
 * key below it.  A key's entry also remembers which of its jobs is
 * executing ("held"), set at claim time and cleared when that job
 * finishes, so that the later jobs of a busy key are passed over without a
 * probe; a held mark older than PGQ_HELD_TTL is probed again, which also
 * repairs a mark that a repair function (SQL) left behind.  An ack moves
 * the watermark to the key's next job, which it looks up in the key index
 * (finish.c); the look-up reads the few jobs of the key after that one as
 * well, and the entry keeps them (chain), so that the acks of the next
 * jobs find their next without a look-up.  Jobs below the bound of open
 * pushes never change, so a chain read there holds for good.  Entries are
 * a cache: one that is evicted, or invalidated by a forced retry (key_gen),
 * only costs a probe or a look-up.
 *
 * Limits.  max_in_flight, max_depth, push_rate and pop_rate (and their
 * tenant_ forms) are enforced against counts in shared memory: committed
 * depth and in-flight counts, read from the tables the first time they
 * are needed (and again after a repair function or the maintenance worker
 * changed jobs outside the counted paths), plus the pushes and claims of
 * running transactions, which reserve their share at once and settle when
 * their transaction ends (see wakeup.c's notes).  Rates are token buckets
 * holding one second's worth of tokens.  A push that the bucket refuses
 * raises PQ004, one that would exceed a maximum depth PQ005; a pop that
 * hits a cap or an empty bucket returns fewer jobs.  Priority-aware
 * shedding: a push of priority p <= 0 must leave 20 % x (1 - p) of the
 * bucket (at most 90 %), so low priorities are refused first as the
 * bucket drains.
 *
 * Everything here needs shared memory; a queue that uses it on a server
 * without pgqueue in shared_preload_libraries gets a clear error.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/genam.h"
#include "access/nbtree.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "executor/tuptable.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/fmgroids.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "args.h"
#include "claim.h"
#include "flow.h"
#include "note.h"

PG_FUNCTION_INFO_V1(pgq_key_ready);
PG_FUNCTION_INFO_V1(pgq_tenant_take);

/* tenants with limits and keys with a cached watermark, per server (GUCs) */
int			pgq_max_tenants = 4096;
int			pgq_max_keys = 16384;

/* how long a held mark is trusted without a probe */
#define PGQ_HELD_TTL		(1 * USECS_PER_SEC)

typedef struct TenantTag
{
	QueueTag	queue;
	char		name[NAMEDATALEN];
} TenantTag;

typedef struct TenantShared
{
	TenantTag	tag;			/* hash key */
	slock_t		mutex;
	int			pins;			/* backends using the entry (tenant_entry) */
	TimestampTz full_at;		/* when its token buckets are full again */
	FlowShared	flow;
} TenantShared;

typedef struct KeyTag
{
	QueueTag	queue;
	char		key[NAMEDATALEN];
} KeyTag;

typedef struct KeyShared
{
	KeyTag		tag;			/* hash key */
	slock_t		mutex;
	uint64		gen;			/* the queue's key_gen this entry is valid for */
	int64		watermark;		/* no unfinished job of the key below; 0: unknown */
	int64		held;			/* its executing job; 0: none known */
	TimestampTz held_at;
	int			nchain;
	int64		chain[PGQ_KEY_CHAIN];	/* each the key's next job after the one
										 * before */
} KeyShared;

/* a change of one tenant's counts or of one key, in a FlowNote */
typedef enum FlowEventKind
{
	FLOW_TENANT,				/* counts of a tenant */
	FLOW_KEY_CLAIMED,			/* a job of a key was claimed (undone at abort) */
	FLOW_KEY_DONE				/* a job of a key finished (at commit) */
} FlowEventKind;

typedef struct FlowEvent
{
	FlowEventKind kind;
	char		name[NAMEDATALEN];	/* tenant or key */
	int64		job_id;
	int64		next;			/* FLOW_KEY_DONE: the key's next job, 0 if not known */
	int64		pushed;
	int64		finished;
	int64		claimed;
	int64		ended;
} FlowEvent;

/* the pop whose claim statements are running (set by pop.c) */
typedef struct FlowPop
{
	PgqQueue   *queue;
	QueueShared *qs;
	int64		bound;			/* keyed jobs only below this id */
	bool		may_advance;	/* probes may move key watermarks */
	int			ntaken;			/* tenant reservations of this statement */
	int			maxtaken;
	TenantShared **taken;
	int			ntenants;		/* distinct tenants reserved by this pop */
	int			maxtenants;
	NameData   *tenants;		/* (at most pgq_max_tenants / 8) */
	MemoryContext cxt;			/* lives as long as the pop */
} FlowPop;

static LWLock *flow_lock = NULL;	/* protects membership of both tables */
static HTAB *tenant_hash = NULL;
static HTAB *key_hash = NULL;
static FlowPop *current_pop = NULL;

/*
 * pgq_flow_shmem_size
 *		Bytes of shared memory for the tenant and key tables.
 */
Size
pgq_flow_shmem_size(void)
{
	return add_size(hash_estimate_size(pgq_max_tenants, sizeof(TenantShared)),
					hash_estimate_size(pgq_max_keys, sizeof(KeyShared)));
}

/*
 * pgq_flow_shmem_request
 *		Reserve the lock of the tenant and key tables (shmem_request_hook).
 */
void
pgq_flow_shmem_request(void)
{
	RequestNamedLWLockTranche("pgqueue flow", 1);
}

/*
 * pgq_flow_shmem_init
 *		Create or attach to the tenant and key tables; the caller holds
 *		AddinShmemInitLock.
 */
void
pgq_flow_shmem_init(void)
{
	flow_lock = &(GetNamedLWLockTranche("pgqueue flow"))->lock;
	tenant_hash = pgq_shmem_hash("pgqueue tenants", pgq_max_tenants, sizeof(TenantTag),
								 sizeof(TenantShared));
	key_hash = pgq_shmem_hash("pgqueue keys", pgq_max_keys, sizeof(KeyTag), sizeof(KeyShared));
}

/*
 * queue_limited, tenant_limited
 *		Whether a queue has limits of its own, or per tenant.
 */
static bool
queue_limited(PgqQueue *queue)
{
	return queue->max_in_flight > 0 || queue->max_depth > 0 ||
		queue->push_rate > 0 || queue->pop_rate > 0;
}

static bool
tenant_limited(PgqQueue *queue)
{
	return queue->tenant_max_in_flight > 0 || queue->tenant_max_depth > 0 ||
		queue->tenant_push_rate > 0 || queue->tenant_pop_rate > 0;
}

/*
 * tenant_claims_counted
 *		Whether a queue's pops reserve each claim of a tenant (pgq_flow_take)
 *		and count the tenant's jobs in flight.
 */
static bool
tenant_claims_counted(PgqQueue *queue)
{
	return queue->tenant_max_in_flight > 0 || queue->tenant_pop_rate > 0;
}

/*
 * require_shmem
 *		The queue's shared entry; an error when flow control cannot work.
 */
static QueueShared *
require_shmem(PgqQueue *queue, const char *what)
{
	QueueShared *qs = NULL;

	if (!pgq_shmem_ready())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s of queue \"%s\" need pgqueue in shared_preload_libraries",
						what, queue->name),
				 errhint("Add pgqueue to shared_preload_libraries and restart the server.")));
	qs = pgq_queue_shared(pgq_queue_tag(queue), queue->queue_id, true);
	if (qs == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many queues in shared memory for %s of queue \"%s\"",
						what, queue->name),
				 errdetail("The %d entries of the shared table of queues (pgqueue.max_queues) are in use.",
						   pgq_max_queues),
				 errhint("Drop unused queues, or raise pgqueue.max_queues.")));
	return qs;
}

/*
 * bucket_take
 *		Refill a token bucket of rate tokens per second (one second's worth
 *		at most) and take n tokens if at least keep would remain.
 */
static bool
bucket_take(double *tokens, TimestampTz *at, double rate, TimestampTz now,
			double n, double keep)
{
	double		burst = Max(rate, 1.0);

	if (*at == 0)
		*tokens = burst;
	else if (now > *at)
		*tokens = Min(burst, *tokens + rate * (double) (now - *at) / USECS_PER_SEC);
	*at = now;
	if (*tokens - n < keep)
		return false;
	*tokens -= n;
	return true;
}

/*
 * shed_keep
 *		The share of a push bucket that a push of this priority must leave.
 */
static double
shed_keep(double rate, int32 priority)
{
	double		share = priority > 0 ? 0.0 : Min(0.9, 0.2 * (1.0 - (double) priority));

	return share * Max(rate, 1.0);
}

/*
 * flow_locktag
 *		The tag of one of a queue's flow-control locks (PGQ_LOCKTAG_FLOW or
 *		PGQ_LOCKTAG_RECOUNT).
 */
static void
flow_locktag(LOCKTAG *tag, int32 queue_id, uint16 kind)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, (uint32) queue_id, 0, kind);
}

/* a count of flow_count: what it reads and what it found */
typedef struct FlowCount
{
	PgqQueue   *queue;
	const char *tenant;			/* NULL: the whole queue */
	Snapshot	snapshot;
	int64		depth;
	int64		inflight;
} FlowCount;

/*
 * flow_count
 *		Read a queue's (or one tenant's) unfinished and executing jobs from
 *		the tables, as the snapshot sees them; under pgq_read_released,
 *		since it reads every block of the queue.
 */
static void
flow_count(void *arg)
{
	FlowCount  *c = arg;
	Oid			argtypes[2] = {INT4OID, TEXTOID};
	Datum		args[2];
	char		nulls[2] = {' ', c->tenant ? ' ' : 'n'};
	bool		isnull;
	SPIPlanPtr	plan;
	int			rc;

	args[0] = Int32GetDatum(c->queue->queue_id);
	args[1] = c->tenant ? CStringGetTextDatum(c->tenant) : (Datum) 0;
	SPI_connect();
	plan = SPI_prepare("SELECT depth, inflight FROM pgqueue_internal._flow_count($1, $2)",
					   2, argtypes);
	if (plan == NULL)
		elog(ERROR, "could not prepare the count of queue \"%s\": %s",
			 c->queue->name, SPI_result_code_string(SPI_result));
	rc = SPI_execute_snapshot(plan, args, nulls, c->snapshot, InvalidSnapshot, true, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not count the jobs of queue \"%s\": %s",
			 c->queue->name, SPI_result_code_string(rc));
	c->depth = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
										   &isnull));
	c->inflight = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2,
											  &isnull));
	SPI_finish();
}

/*
 * counted
 *		Whether the committed counts of a flow are valid.
 */
static bool
counted(QueueShared *qs, FlowShared *flow, slock_t *mutex)
{
	uint64		gen;
	bool		known;

	SpinLockAcquire(&qs->mutex);
	gen = qs->flow_gen;
	SpinLockRelease(&qs->mutex);
	SpinLockAcquire(mutex);
	known = flow->known && flow->gen == gen;
	SpinLockRelease(mutex);
	return known;
}

/*
 * ensure_counted
 *		Make the committed counts of a queue (tenant NULL) or tenant valid,
 *		reading them from the tables if they are not.
 *
 * A transaction settles its counts after its commit became visible, so a
 * count taken with a snapshot must not simply replace the shared counts:
 * a commit the snapshot missed may have settled already (lost), or one it
 * saw may settle later (counted twice).  Every transaction that settles
 * counts holds the queue's flow lock from before its commit shows until it
 * settled (pgq_flow_pre_commit); the recount takes that lock exclusively
 * just long enough to take its snapshot and start the shared counts from
 * zero.  Then every commit the snapshot sees has settled before, and every
 * later one settles on top of the zero, so the count is added, not stored.
 * Recounts of a queue take turns; a repair committed meanwhile (flow_gen)
 * leaves the counts unknown, for the next call to count again.
 */
static void
ensure_counted(PgqQueue *queue, QueueShared *qs, FlowShared *flow, slock_t *mutex,
			   const char *tenant)
{
	LOCKTAG		recount_tag;
	LOCKTAG		flow_tag;
	Snapshot	snapshot;
	uint64		gen;
	bool		repaired;
	FlowCount	count;

	if (counted(qs, flow, mutex))
		return;
	flow_locktag(&recount_tag, queue->queue_id, PGQ_LOCKTAG_RECOUNT);
	(void) LockAcquire(&recount_tag, ExclusiveLock, false, false);
	if (counted(qs, flow, mutex))
	{
		LockRelease(&recount_tag, ExclusiveLock, false);
		return;
	}
	flow_locktag(&flow_tag, queue->queue_id, PGQ_LOCKTAG_FLOW);
	(void) LockAcquire(&flow_tag, ExclusiveLock, false, false);
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	SpinLockAcquire(&qs->mutex);
	gen = qs->flow_gen;
	SpinLockRelease(&qs->mutex);
	SpinLockAcquire(mutex);
	flow->depth = 0;
	flow->inflight = 0;
	flow->known = false;
	SpinLockRelease(mutex);
	LockRelease(&flow_tag, ExclusiveLock, false);

	count.queue = queue;
	count.tenant = tenant;
	count.snapshot = snapshot;
	pgq_read_released(flow_count, &count);
	UnregisterSnapshot(snapshot);

	SpinLockAcquire(&qs->mutex);
	repaired = qs->flow_gen != gen;
	SpinLockRelease(&qs->mutex);
	SpinLockAcquire(mutex);
	flow->depth += count.depth;
	flow->inflight += count.inflight;
	flow->gen = gen;
	flow->known = !repaired;
	SpinLockRelease(mutex);
	LockRelease(&recount_tag, ExclusiveLock, false);
}

/*
 * tenant_idle
 *		Whether a tenant's entry holds nothing that a new entry would not
 *		(nobody uses it, no running transaction reserved anything, no
 *		unfinished job counted, full token buckets), so it may be removed.
 *		Caller holds its mutex.
 */
static bool
tenant_idle(TenantShared *entry, TimestampTz now, bool gone)
{
	return entry->pins == 0 && entry->flow.pending == 0 && entry->flow.claiming == 0 &&
		now >= entry->full_at &&
		(!gone || !entry->flow.known || (entry->flow.depth == 0 && entry->flow.inflight == 0));
}

/*
 * tenant_entry
 *		The shared entry of one tenant of a queue, created on first use if
 *		create (else NULL if missing), pinned until tenant_unpin.  When the
 *		table is full, a new tenant takes the place of an idle one (whose
 *		counts are read from the tables again when it comes back); when no
 *		entry is idle, the caller gets an error.
 */
static TenantShared *
tenant_entry(QueueTag queue, const char *name, bool create)
{
	TenantTag	tag;
	TenantShared *entry;
	bool		found;
	TimestampTz now = GetCurrentTimestamp();

	memset(&tag, 0, sizeof(tag));
	tag.queue = queue;
	strlcpy(tag.name, name, NAMEDATALEN);
	LWLockAcquire(flow_lock, LW_SHARED);
	entry = hash_search(tenant_hash, &tag, HASH_FIND, NULL);
	if (entry == NULL && create)
	{
		LWLockRelease(flow_lock);
		LWLockAcquire(flow_lock, LW_EXCLUSIVE);
		entry = hash_search(tenant_hash, &tag, HASH_ENTER_NULL, &found);
		if (entry == NULL)
		{
			HASH_SEQ_STATUS status;
			TenantShared *victim;

			hash_seq_init(&status, tenant_hash);
			while ((victim = hash_seq_search(&status)) != NULL)
			{
				bool		idle;

				SpinLockAcquire(&victim->mutex);
				idle = tenant_idle(victim, now, false);
				SpinLockRelease(&victim->mutex);
				if (idle)
				{
					hash_seq_term(&status);
					hash_search(tenant_hash, &victim->tag, HASH_REMOVE, NULL);
					entry = hash_search(tenant_hash, &tag, HASH_ENTER, &found);
					break;
				}
			}
		}
		if (entry != NULL && !found)
		{
			SpinLockInit(&entry->mutex);
			entry->pins = 0;
			entry->full_at = 0;
			memset(&entry->flow, 0, sizeof(entry->flow));
		}
	}
	if (entry != NULL)
	{
		SpinLockAcquire(&entry->mutex);
		entry->pins++;
		SpinLockRelease(&entry->mutex);
	}
	LWLockRelease(flow_lock);
	if (entry == NULL && create)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("too many tenants with limits"),
				 errdetail("The %d tenants pgqueue can track with limits (pgqueue.max_tenants) are all in use by running transactions.",
						   pgq_max_tenants),
				 errhint("Retry later, or raise pgqueue.max_tenants.")));
	return entry;
}

/*
 * tenant_unpin
 *		Stop using a tenant's entry; with release, remove it if it is idle
 *		and has no unfinished job counted either (a tenant that is gone).
 */
static void
tenant_unpin(TenantShared *entry, bool release)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		gone;

	SpinLockAcquire(&entry->mutex);
	entry->pins--;
	gone = release && tenant_idle(entry, now, true);
	SpinLockRelease(&entry->mutex);
	if (!gone)
		return;
	LWLockAcquire(flow_lock, LW_EXCLUSIVE);
	SpinLockAcquire(&entry->mutex);
	gone = tenant_idle(entry, now, true);
	SpinLockRelease(&entry->mutex);
	if (gone)
		hash_search(tenant_hash, &entry->tag, HASH_REMOVE, NULL);
	LWLockRelease(flow_lock);
}

/*
 * bucket_used
 *		A token bucket of a tenant was drawn from: the entry must stay until
 *		the bucket is full again.  Caller holds its mutex.
 */
static void
bucket_used(TenantShared *entry, double rate, TimestampTz now)
{
	TimestampTz full = now + (TimestampTz) (Max(rate, 1.0) / rate * USECS_PER_SEC);

	entry->full_at = Max(entry->full_at, full);
}

/*
 * add_event
 *		Add counts to a tenant's event of a note, or a key event.
 */
static FlowEvent *
add_event(FlowNote *note, FlowEventKind kind, const char *name, int64 job_id)
{
	ListCell   *lc;
	FlowEvent  *ev;
	MemoryContext old;

	if (kind == FLOW_TENANT)
		foreach(lc, note->events)
		{
			ev = lfirst(lc);
			if (ev->kind == FLOW_TENANT && strcmp(ev->name, name) == 0)
				return ev;
		}
	old = MemoryContextSwitchTo(TopMemoryContext);
	ev = palloc0(sizeof(FlowEvent));
	ev->kind = kind;
	strlcpy(ev->name, name, NAMEDATALEN);
	ev->job_id = job_id;
	note->events = lappend(note->events, ev);
	MemoryContextSwitchTo(old);
	return ev;
}

/*
 * settle
 *		Apply one transaction's counts to a FlowShared at its end.
 */
static void
settle(FlowShared *flow, int64 pushed, int64 finished, int64 claimed, int64 ended,
	   bool commit)
{
	flow->pending -= pushed;
	flow->claiming -= claimed;
	if (commit)
	{
		flow->depth += pushed - finished;
		flow->inflight += claimed - ended;
	}
}

/*
 * key_tag
 *		The shared name of a key; false if the key is too long to cache.
 */
static bool
key_tag(QueueTag queue, text *key, KeyTag *tag)
{
	int			len = VARSIZE_ANY_EXHDR(key);

	if (len >= NAMEDATALEN || memchr(VARDATA_ANY(key), '\0', len) != NULL)
		return false;
	memset(tag, 0, sizeof(*tag));
	tag->queue = queue;
	memcpy(tag->key, VARDATA_ANY(key), len);
	return true;
}

/*
 * key_update
 *		Change a key's shared entry under the lock, creating it (evicting
 *		another one when the table is full) if create.  op: 'c'laimed,
 *		'u'nclaimed (abort), 'd'one, 'p'robed.  For 'd', blocker is the
 *		key's next job if known (0: not known).  For 'p', job_id is the job
 *		probed, blocker the first unfinished job below it (0: none) and
 *		executing whether that one is executing.
 */
static void
key_update(KeyTag *tag, uint64 gen, char op, int64 job_id, int64 blocker, bool executing,
		   bool may_advance, bool create)
{
	KeyShared  *entry;
	bool		found = true;
	TimestampTz now = GetCurrentTimestamp();

	/* most keys have an entry: look with the shared lock first */
	LWLockAcquire(flow_lock, LW_SHARED);
	entry = hash_search(key_hash, tag, HASH_FIND, NULL);
	if (entry == NULL && create)
	{
		LWLockRelease(flow_lock);
		LWLockAcquire(flow_lock, LW_EXCLUSIVE);
		entry = hash_search(key_hash, tag, HASH_ENTER_NULL, &found);
	}
	if (entry == NULL && create)
	{
		HASH_SEQ_STATUS status;
		KeyShared  *victim;

		hash_seq_init(&status, key_hash);
		victim = hash_seq_search(&status);
		if (victim != NULL)
		{
			hash_seq_term(&status);
			hash_search(key_hash, &victim->tag, HASH_REMOVE, NULL);
			entry = hash_search(key_hash, tag, HASH_ENTER_NULL, &found);
		}
	}
	if (entry == NULL)
	{
		LWLockRelease(flow_lock);
		return;
	}
	if (!found)
	{
		SpinLockInit(&entry->mutex);
		entry->gen = gen;
		entry->watermark = 0;
		entry->held = 0;
		entry->held_at = 0;
		entry->nchain = 0;
	}

	SpinLockAcquire(&entry->mutex);
	if (entry->gen != gen)
	{
		if (op == 'c')
		{
			/* a claim is news for any generation */
			entry->gen = gen;
			entry->watermark = 0;
			entry->held = 0;
		}
		else
			op = 0;
	}
	switch (op)
	{
		case 'c':
			entry->held = job_id;
			entry->held_at = now;
			break;
		case 'u':
			if (entry->held == job_id)
				entry->held = 0;
			break;
		case 'd':
			if (entry->held == job_id)
				entry->held = 0;
			if (entry->watermark == job_id)
				entry->watermark = blocker != 0 ? blocker : job_id + 1;
			break;
		case 'p':
			if (blocker != 0)
			{
				if (executing)
				{
					entry->held = blocker;
					entry->held_at = now;
				}
				if (may_advance && blocker > entry->watermark)
					entry->watermark = blocker;
			}
			else
			{
				if (entry->held != job_id)
					entry->held = 0;
				if (may_advance && job_id > entry->watermark)
					entry->watermark = job_id;
			}
			break;
	}
	SpinLockRelease(&entry->mutex);
	LWLockRelease(flow_lock);
}

/*
 * key_probe_block
 *		The first unfinished job of a key with an id in [lo, hi) in one
 *		block (0: none), read through the block's indexes with snapshot.
 */
static int64
key_probe_block(PgqBlock *block, text *key, int64 lo, int64 hi, Snapshot snapshot,
				bool *executing)
{
	Relation	jobs = table_open(block->jobs_relid, NoLock);
	Relation	index;
	ScanKeyData skeys[3];
	IndexScanDesc scan;
	TupleTableSlot *jslot;
	int64		found = 0;

	pgq_block_indexes(block);
	index = index_open(block->key_index, AccessShareLock);
	jslot = table_slot_create(jobs, NULL);

	ScanKeyEntryInitialize(&skeys[0], 0, 1, BTEqualStrategyNumber, InvalidOid,
						   index->rd_indcollation[0], F_TEXTEQ, PointerGetDatum(key));
	ScanKeyInit(&skeys[1], 2, BTGreaterEqualStrategyNumber, F_INT8GE, Int64GetDatum(lo));
	/* bounded above too: the index reads no more of the key's jobs than that */
	ScanKeyInit(&skeys[2], 2, BTLessStrategyNumber, F_INT8LT, Int64GetDatum(hi));
	scan = index_beginscan(jobs, index, snapshot, 3, 0);
	index_rescan(scan, skeys, 3, NULL, 0);
	while (found == 0 && index_getnext_slot(scan, ForwardScanDirection, jslot))
	{
		bool		isnull;
		int64		job_id = DatumGetInt64(slot_getattr(jslot, PGQ_JATT_JOB_ID, &isnull));
		Datum		tenant = slot_getattr(jslot, PGQ_JATT_TENANT, &isnull);
		char		name[NAMEDATALEN] = "";
		PgqJobState st;

		if (!isnull)
			text_to_cstring_buffer(DatumGetTextPP(tenant), name, NAMEDATALEN);
		pgq_job_state(block, job_id,
					  DatumGetInt32(slot_getattr(jslot, PGQ_JATT_PRIORITY, &isnull)), name,
					  snapshot, &st);
		if (st.state != PGQ_SUCCEEDED && st.state != PGQ_ABORTED)
		{
			found = job_id;
			*executing = st.state == PGQ_EXECUTING;
		}
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(jslot);
	index_close(index, AccessShareLock);
	table_close(jobs, NoLock);
	return found;
}

/*
 * key_probe
 *		The first unfinished job of a key with an id in [lo, hi), in any
 *		block: returns its id (0: none) and whether it is executing; -1 if
 *		a block that may hold one is being compacted.  Reads with a new
 *		snapshot, taken after the bound of open pushes was read.
 */
static int64
key_probe(FlowPop *pop, text *key, int64 lo, int64 hi, bool *executing)
{
	PgqQueue   *queue = pop->queue;
	Snapshot	snapshot = RegisterSnapshot(GetLatestSnapshot());
	int64		found = 0;

	*executing = false;
	for (int i = 0; i < queue->nblocks && found == 0; i++)
	{
		PgqBlock   *block = &queue->blocks[i];

		if (block->last_id < lo || block->first_id >= hi || block->state == 'd')
			continue;
		if (!pgq_block_open(block, false))
			found = -1;
		else
		{
			/* a read only: the locks of every block probed are not kept */
			found = key_probe_block(block, key, lo, hi, snapshot, executing);
			pgq_block_close(block);
		}
	}
	UnregisterSnapshot(snapshot);
	return found;
}

/*
 * key_ready
 *		Whether job_id, a job of key, may be claimed now (see the file
 *		header).
 */
static bool
key_ready(FlowPop *pop, text *key, int64 job_id)
{
	KeyTag		tag;
	bool		cached;
	int64		lo = pop->queue->nblocks > 0 ? pop->queue->blocks[0].first_id : job_id;
	uint64		gen;
	int64		blocker;
	bool		executing;

	if (job_id >= pop->bound)
		return false;
	cached = key_tag(pgq_queue_tag(pop->queue), key, &tag);
	SpinLockAcquire(&pop->qs->mutex);
	gen = pop->qs->key_gen;
	SpinLockRelease(&pop->qs->mutex);

	if (cached)
	{
		KeyShared  *entry;
		int			verdict = -1;
		TimestampTz now = GetCurrentTimestamp();

		LWLockAcquire(flow_lock, LW_SHARED);
		entry = hash_search(key_hash, &tag, HASH_FIND, NULL);
		if (entry != NULL)
		{
			SpinLockAcquire(&entry->mutex);
			if (entry->gen == gen)
			{
				if (entry->held != 0 && entry->held != job_id &&
					now - entry->held_at < PGQ_HELD_TTL)
					verdict = 0;
				else if (entry->watermark == job_id &&
						 (entry->held == 0 || entry->held == job_id))
					verdict = 1;
				else if (entry->watermark != 0 && entry->watermark < job_id)
					lo = Max(lo, entry->watermark);
			}
			SpinLockRelease(&entry->mutex);
		}
		LWLockRelease(flow_lock);
		if (verdict >= 0)
			return verdict == 1;
	}

	blocker = key_probe(pop, key, lo, job_id, &executing);
	if (blocker < 0)
		return false;
	if (cached)
		key_update(&tag, gen, 'p', job_id, blocker, executing, pop->may_advance,
				   executing || blocker == 0);
	return blocker == 0;
}

/*
 * pgq_flow_key_next
 *		The next job of a key after job_id, as an earlier look-up left it in
 *		the key's entry; 0 if it is not known there.
 */
int64
pgq_flow_key_next(PgqQueue *queue, text *key, int64 job_id)
{
	KeyTag		tag;
	KeyShared  *entry;
	int64		next = 0;

	if (!pgq_shmem_ready() || !key_tag(pgq_queue_tag(queue), key, &tag))
		return 0;
	LWLockAcquire(flow_lock, LW_SHARED);
	entry = hash_search(key_hash, &tag, HASH_FIND, NULL);
	if (entry != NULL)
	{
		SpinLockAcquire(&entry->mutex);
		for (int i = 0; i + 1 < entry->nchain; i++)
			if (entry->chain[i] == job_id)
			{
				next = entry->chain[i + 1];
				break;
			}
		SpinLockRelease(&entry->mutex);
	}
	LWLockRelease(flow_lock);
	return next;
}

/*
 * pgq_flow_key_chain
 *		Keep in a key's entry, if it has one, the jobs of the key that
 *		follow one another from job_id on: chain[0] is job_id, and each
 *		next one is the key's next job after the one before it, below the
 *		bound of open pushes (n of them, at most PGQ_KEY_CHAIN are kept).
 */
void
pgq_flow_key_chain(PgqQueue *queue, text *key, const int64 *chain, int n)
{
	KeyTag		tag;
	KeyShared  *entry;

	if (!pgq_shmem_ready() || n < 2 || !key_tag(pgq_queue_tag(queue), key, &tag))
		return;
	n = Min(n, PGQ_KEY_CHAIN);
	LWLockAcquire(flow_lock, LW_SHARED);
	entry = hash_search(key_hash, &tag, HASH_FIND, NULL);
	if (entry != NULL)
	{
		SpinLockAcquire(&entry->mutex);
		memcpy(entry->chain, chain, sizeof(int64) * n);
		entry->nchain = n;
		SpinLockRelease(&entry->mutex);
	}
	LWLockRelease(flow_lock);
}

/*
 * pgq_flow_key_ready
 *		Whether job_id, a job of key, may be claimed now by the running pop
 *		(see the file header).
 */
bool
pgq_flow_key_ready(text *key, int64 job_id)
{
	Assert(current_pop != NULL);
	return key_ready(current_pop, key, job_id);
}

/*
 * pgq_key_ready
 *		SQL: pgqueue_internal._key_ready(key, job_id), for the claim statements of
 *		queue_pop only.
 */
Datum
pgq_key_ready(PG_FUNCTION_ARGS)
{
	if (current_pop == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pgqueue_internal._key_ready can only be used by queue_pop")));
	PG_RETURN_BOOL(key_ready(current_pop, PG_GETARG_TEXT_PP(0), PG_GETARG_INT64(1)));
}

/*
 * pgq_tenant_take
 *		SQL: pgqueue_internal._take(tenant), pgq_flow_take for the claim
 *		statements of queue_pop only.
 */
Datum
pgq_tenant_take(PG_FUNCTION_ARGS)
{
	if (current_pop == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pgqueue_internal._take can only be used by queue_pop")));
	PG_RETURN_BOOL(PG_ARGISNULL(0) || pgq_flow_take(PG_GETARG_TEXT_PP(0)));
}

/*
 * pgq_flow_take
 *		Reserve room for one more claim of a tenant by the running pop under
 *		its in-flight cap and pop rate; false if there is none.
 *		pgq_flow_claims_done settles the reservations with what was claimed.
 */
bool
pgq_flow_take(text *tenant_name)
{
	FlowPop    *pop = current_pop;
	PgqQueue   *queue = pop->queue;
	TenantShared *tenant;
	char		name[NAMEDATALEN];
	bool		ok = true;
	TimestampTz now;

	if (!tenant_claims_counted(queue))
		return true;
	pgq_check_tenant(tenant_name, name);

	/*
	 * One pop reserves entries of at most max_tenants / 8 tenants, as one
	 * push may name: the others have no room in it
	 */
	{
		int			i;

		for (i = 0; i < pop->ntenants; i++)
			if (strcmp(NameStr(pop->tenants[i]), name) == 0)
				break;
		if (i == pop->ntenants)
		{
			if (pop->ntenants >= pgq_max_tenants / 8)
				return false;
			if (pop->ntenants == pop->maxtenants)
			{
				pop->maxtenants = Max(16, pop->maxtenants * 2);
				pop->tenants = pop->tenants == NULL
					? MemoryContextAlloc(pop->cxt, sizeof(NameData) * pop->maxtenants)
					: repalloc(pop->tenants, sizeof(NameData) * pop->maxtenants);
			}
			namestrcpy(&pop->tenants[pop->ntenants++], name);
		}
	}
	tenant = tenant_entry(pgq_queue_tag(queue), name, true);
	PG_TRY();
	{
		if (queue->tenant_max_in_flight > 0)
			ensure_counted(queue, pop->qs, &tenant->flow, &tenant->mutex, name);
	}
	PG_CATCH();
	{
		tenant_unpin(tenant, true);
		PG_RE_THROW();
	}
	PG_END_TRY();

	now = GetCurrentTimestamp();
	SpinLockAcquire(&tenant->mutex);
	if (queue->tenant_max_in_flight > 0 &&
		tenant->flow.inflight + tenant->flow.claiming >= queue->tenant_max_in_flight)
		ok = false;
	if (ok && queue->tenant_pop_rate > 0)
	{
		ok = bucket_take(&tenant->flow.pop_tokens, &tenant->flow.pop_at,
						 queue->tenant_pop_rate, now, 1.0, 0.0);
		bucket_used(tenant, queue->tenant_pop_rate, now);
	}
	if (ok)
		tenant->flow.claiming++;
	SpinLockRelease(&tenant->mutex);
	tenant_unpin(tenant, !ok);

	if (ok)
	{
		if (pop->ntaken == pop->maxtaken)
		{
			pop->maxtaken = Max(16, pop->maxtaken * 2);
			pop->taken = pop->taken == NULL
				? MemoryContextAlloc(TopTransactionContext, sizeof(TenantShared *) * pop->maxtaken)
				: repalloc(pop->taken, sizeof(TenantShared *) * pop->maxtaken);
		}
		pop->taken[pop->ntaken++] = tenant;
	}
	return ok;
}

/*
 * pgq_flow_pop_begin
 *		Start a pop: check that the queue's flow control can work, reserve
 *		up to n claims under the queue's cap and pop rate and return how many
 *		may be claimed.  bound is the bound of open pushes (0: keyed jobs
 *		cannot be claimed now).  Key probes may move a key's shared watermark
 *		only in a transaction that has written nothing yet, which sees no
 *		finished job of its own that could still roll back.
 */
int
pgq_flow_pop_begin(PgqQueue *queue, int n, int64 bound)
{
	static FlowPop pop;
	QueueShared *qs = NULL;
	int			allowed = n;

	if (queue_limited(queue) || tenant_limited(queue))
		qs = require_shmem(queue, "the limits");
	else if (pgq_shmem_ready())
		qs = pgq_queue_shared(pgq_queue_tag(queue), queue->queue_id, true);

	if (qs != NULL && queue->max_in_flight > 0)
		ensure_counted(queue, qs, &qs->flow, &qs->mutex, NULL);
	if (qs != NULL && queue_limited(queue))
	{
		TimestampTz now = GetCurrentTimestamp();

		SpinLockAcquire(&qs->mutex);
		if (queue->max_in_flight > 0)
			allowed = (int) Max(0, Min((int64) allowed, queue->max_in_flight -
									   qs->flow.inflight - qs->flow.claiming));
		if (queue->pop_rate > 0 && allowed > 0)
		{
			bucket_take(&qs->flow.pop_tokens, &qs->flow.pop_at, queue->pop_rate, now, 0.0, 0.0);
			allowed = (int) Min((double) allowed, floor(qs->flow.pop_tokens));
			qs->flow.pop_tokens -= allowed;
		}
		qs->flow.claiming += allowed;
		SpinLockRelease(&qs->mutex);
	}

	memset(&pop, 0, sizeof(pop));
	pop.queue = queue;
	pop.qs = qs;
	pop.bound = qs != NULL ? bound : 0;
	pop.may_advance = GetTopTransactionIdIfAny() == InvalidTransactionId;
	pop.cxt = CurrentMemoryContext;
	current_pop = &pop;
	return allowed;
}

/*
 * pgq_flow_rotation
 *		Where a fair pop starts dealing claims among tenants: a counter
 *		shared by the queue's pops, advanced by the number of tenants each
 *		pop served, so that the next pop starts with the next tenants.
 *		Returns the counter before adding served.
 */
uint32
pgq_flow_rotation(uint32 served)
{
	static uint32 local = 0;
	uint32		r;

	if (current_pop == NULL || current_pop->qs == NULL)
	{
		r = local;
		local += served;
		return r;
	}
	SpinLockAcquire(&current_pop->qs->mutex);
	r = current_pop->qs->rr;
	current_pop->qs->rr += served;
	SpinLockRelease(&current_pop->qs->mutex);
	return r;
}

/*
 * pgq_flow_claimed
 *		A claim statement claimed a job: note its tenant and key.
 */
void
pgq_flow_claimed(PgqQueue *queue, text *key, text *tenant, int64 job_id)
{
	FlowPop    *pop = current_pop;
	FlowNote   *note;

	if (pop == NULL || pop->qs == NULL ||
		(key == NULL && !queue_limited(queue) &&
		 (tenant == NULL || !tenant_claims_counted(queue))))
		return;
	note = &pgq_note_for(queue)->flow;
	if (queue_limited(queue))
		note->claimed++;
	if (tenant != NULL && tenant_claims_counted(queue))
	{
		char		name[NAMEDATALEN];

		pgq_check_tenant(tenant, name);
		add_event(note, FLOW_TENANT, name, 0)->claimed++;
	}
	if (key != NULL)
	{
		KeyTag		tag;
		uint64		gen;

		if (!key_tag(pgq_queue_tag(queue), key, &tag))
			return;
		SpinLockAcquire(&pop->qs->mutex);
		gen = pop->qs->key_gen;
		SpinLockRelease(&pop->qs->mutex);
		key_update(&tag, gen, 'c', job_id, 0, false, false, true);
		add_event(note, FLOW_KEY_CLAIMED, tag.key, job_id);
	}
}

/*
 * give_back
 *		Return one tenant reservation that did not become a claim.
 */
static void
give_back(FlowPop *pop, TenantShared *tenant)
{
	SpinLockAcquire(&tenant->mutex);
	tenant->flow.claiming--;
	if (pop->queue->tenant_pop_rate > 0)
		tenant->flow.pop_tokens += 1.0;
	SpinLockRelease(&tenant->mutex);
}

/*
 * pgq_flow_claims_done
 *		After a claim statement: give back the tenant reservations that did
 *		not become claims (claimed_tenants: the tenants of the jobs claimed).
 */
void
pgq_flow_claims_done(text **claimed_tenants, int nclaimed)
{
	FlowPop    *pop = current_pop;

	if (pop == NULL || pop->ntaken == 0)
		return;
	for (int i = 0; i < pop->ntaken; i++)
	{
		TenantShared *tenant = pop->taken[i];
		bool		used = false;

		/* match each claim with one reservation of its tenant */
		for (int c = 0; c < nclaimed && !used; c++)
		{
			char		name[NAMEDATALEN];

			if (claimed_tenants[c] == NULL)
				continue;
			pgq_check_tenant(claimed_tenants[c], name);
			if (strcmp(name, tenant->tag.name) == 0)
			{
				claimed_tenants[c] = NULL;
				used = true;
			}
		}
		if (!used)
			give_back(pop, tenant);
	}
	pop->ntaken = 0;
}

/*
 * pgq_flow_pop_end
 *		End a pop that reserved reserved claims and claimed claimed jobs:
 *		give back the rest.  Also called on error, with claimed 0 (the
 *		transaction's note then releases what was claimed).
 */
void
pgq_flow_pop_end(int reserved, int claimed)
{
	FlowPop    *pop = current_pop;

	current_pop = NULL;
	if (pop == NULL)
		return;
	/* reservations of a claim statement that failed */
	for (int i = 0; i < pop->ntaken; i++)
		give_back(pop, pop->taken[i]);
	pop->ntaken = 0;
	if (pop->qs == NULL || !queue_limited(pop->queue))
		return;
	SpinLockAcquire(&pop->qs->mutex);
	pop->qs->flow.claiming -= reserved - claimed;
	if (pop->queue->pop_rate > 0)
		pop->qs->flow.pop_tokens += reserved - claimed;
	SpinLockRelease(&pop->qs->mutex);
}

/*
 * pgq_flow_push
 *		Admit a push of n jobs, or raise PQ004 (rate limited) or PQ005
 *		(queue full): check the maximum depths and take tokens from the push
 *		buckets, with priority-aware shedding, and reserve the jobs' depth
 *		until the transaction ends.  Also refuses keys and limits without
 *		shared memory.
 */
void
pgq_flow_push(PgqQueue *queue, int n, bool *key_nulls, Datum *tenants, bool *tenant_nulls,
			  Datum *priorities)
{
	QueueShared *qs;
	FlowNote   *note;
	bool		keyed = false;
	bool		by_tenant = tenant_limited(queue);
	int32		min_priority = PG_INT32_MAX;
	TimestampTz now;
	char	   *names = NULL;
	int		   *counts = NULL;
	int			ntenants = 0;
	int			done = 0;
	TenantShared *volatile pinned = NULL;

	for (int i = 0; i < n; i++)
	{
		keyed |= !key_nulls[i];
		min_priority = Min(min_priority, DatumGetInt32(priorities[i]));
	}
	if (!keyed && !queue_limited(queue) && !by_tenant)
		return;
	qs = require_shmem(queue, keyed && !queue_limited(queue) && !by_tenant
					   ? "ordering keys" : "the limits");
	if (!queue_limited(queue) && !by_tenant)
		return;

	/*
	 * The distinct tenants of the push with their job counts.  One push may
	 * reserve an eighth of the table of tenants at most, so that it cannot
	 * fill the table alone while it runs.
	 */
	if (by_tenant)
	{
		HASHCTL		ctl;
		HTAB	   *seen;

		ctl.keysize = NAMEDATALEN;
		ctl.entrysize = NAMEDATALEN + sizeof(int);
		ctl.hcxt = CurrentMemoryContext;
		seen = hash_create("pgqueue push tenants", 64, &ctl,
						   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
		names = palloc(NAMEDATALEN * n);
		counts = palloc0(sizeof(int) * n);
		for (int i = 0; i < n; i++)
		{
			char		name[NAMEDATALEN];
			char	   *entry;
			bool		found;

			if (tenant_nulls[i])
				continue;
			pgq_check_tenant(DatumGetTextPP(tenants[i]), name);
			entry = hash_search(seen, name, HASH_ENTER, &found);
			if (!found)
			{
				if (ntenants >= pgq_max_tenants / 8)
					ereport(ERROR,
							(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
							 errmsg("a push to queue \"%s\" may name at most %d tenants",
									queue->name, pgq_max_tenants / 8),
							 errdetail("The queue has tenant limits, which track each tenant in shared memory (pgqueue.max_tenants is %d).",
									   pgq_max_tenants),
							 errhint("Push the jobs in smaller batches.")));
				memcpy(names + ntenants * NAMEDATALEN, name, NAMEDATALEN);
				*(int *) (entry + NAMEDATALEN) = ntenants++;
			}
			counts[*(int *) (entry + NAMEDATALEN)]++;
		}
	}

	if (queue->max_depth > 0)
		ensure_counted(queue, qs, &qs->flow, &qs->mutex, NULL);
	now = GetCurrentTimestamp();
	SpinLockAcquire(&qs->mutex);
	if (queue->max_depth > 0 &&
		qs->flow.depth + qs->flow.pending + n > queue->max_depth)
	{
		int64		depth = qs->flow.depth + qs->flow.pending;

		SpinLockRelease(&qs->mutex);
		ereport(ERROR,
				(errcode(ERRCODE_PGQ_QUEUE_FULL),
				 errmsg("queue \"%s\" is full", queue->name),
				 errdetail("It holds %lld unfinished jobs, at most %lld are allowed; this push adds %d.",
						   (long long) depth, (long long) queue->max_depth, n),
				 errhint("Retry later, when consumers have caught up.")));
	}
	if (queue->push_rate > 0 &&
		!bucket_take(&qs->flow.push_tokens, &qs->flow.push_at, queue->push_rate, now, n,
					 shed_keep(queue->push_rate, min_priority)))
	{
		SpinLockRelease(&qs->mutex);
		ereport(ERROR,
				(errcode(ERRCODE_PGQ_RATE_LIMITED),
				 errmsg("push to queue \"%s\" is rate limited", queue->name),
				 errdetail("The queue takes %g jobs per second; priority %d may not use the last %.0f %% of the bucket.",
						   queue->push_rate, min_priority,
						   100.0 * shed_keep(queue->push_rate, min_priority) / Max(queue->push_rate, 1.0)),
				 errhint("Retry later.")));
	}
	qs->flow.pending += n;
	SpinLockRelease(&qs->mutex);
	note = &pgq_note_for(queue)->flow;
	note->pushed += n;

	PG_TRY();
	{
		for (; done < ntenants; done++)
		{
			char	   *name = names + done * NAMEDATALEN;
			TenantShared *tenant = tenant_entry(pgq_queue_tag(queue), name, true);
			int			c = counts[done];

			pinned = tenant;
			if (queue->tenant_max_depth > 0)
				ensure_counted(queue, qs, &tenant->flow, &tenant->mutex, name);
			SpinLockAcquire(&tenant->mutex);
			if (queue->tenant_max_depth > 0 &&
				tenant->flow.depth + tenant->flow.pending + c > queue->tenant_max_depth)
			{
				SpinLockRelease(&tenant->mutex);
				ereport(ERROR,
						(errcode(ERRCODE_PGQ_QUEUE_FULL),
						 errmsg("tenant \"%s\" of queue \"%s\" is full", name, queue->name),
						 errdetail("A tenant may have at most %lld unfinished jobs.",
								   (long long) queue->tenant_max_depth),
						 errhint("Retry later, when consumers have caught up.")));
			}
			if (queue->tenant_push_rate > 0)
				bucket_used(tenant, queue->tenant_push_rate, now);
			if (queue->tenant_push_rate > 0 &&
				!bucket_take(&tenant->flow.push_tokens, &tenant->flow.push_at,
							 queue->tenant_push_rate, now, c,
							 shed_keep(queue->tenant_push_rate, min_priority)))
			{
				SpinLockRelease(&tenant->mutex);
				ereport(ERROR,
						(errcode(ERRCODE_PGQ_RATE_LIMITED),
						 errmsg("push to tenant \"%s\" of queue \"%s\" is rate limited",
								name, queue->name),
						 errdetail("A tenant may push %g jobs per second.", queue->tenant_push_rate),
						 errhint("Retry later.")));
			}
			tenant->flow.pending += c;
			SpinLockRelease(&tenant->mutex);
			add_event(note, FLOW_TENANT, name, 0)->pushed += c;
			tenant_unpin(tenant, false);
			pinned = NULL;
		}
	}
	PG_CATCH();
	{
		/*
		 * Let go of the tenant that refused the push (its entry is removed
		 * if that leaves it idle) and give the queue's tokens back; the
		 * note releases the reservations of the others.
		 */
		if (pinned != NULL)
			tenant_unpin(pinned, true);
		if (queue->push_rate > 0)
		{
			SpinLockAcquire(&qs->mutex);
			qs->flow.push_tokens += n;
			SpinLockRelease(&qs->mutex);
		}
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/*
 * pgq_flow_finished
 *		A lease of a job ended (ack, fail, release) into state: count it,
 *		and at commit let the next job of its key go if the job finished.
 *		next, if not 0, is that next job: the caller saw that no other job
 *		of the key lies between the two or can still appear there, so the
 *		key's watermark moves to it and it is claimed without a probe.
 */
void
pgq_flow_finished(PgqQueue *queue, text *key, text *tenant, int64 job_id, char state,
				  int64 next)
{
	FlowNote   *note;
	bool		terminal = state == PGQ_SUCCEEDED || state == PGQ_ABORTED;

	if (!pgq_shmem_ready() ||
		(!queue_limited(queue) && (tenant == NULL || !tenant_limited(queue)) &&
		 (key == NULL || !terminal)))
		return;
	note = &pgq_note_for(queue)->flow;
	if (queue_limited(queue))
	{
		note->ended++;
		note->finished += terminal ? 1 : 0;
	}
	if (tenant != NULL && tenant_limited(queue))
	{
		char		name[NAMEDATALEN];
		FlowEvent  *ev;

		pgq_check_tenant(tenant, name);
		ev = add_event(note, FLOW_TENANT, name, 0);
		ev->ended += tenant_claims_counted(queue) ? 1 : 0;
		ev->finished += terminal ? 1 : 0;
	}
	if (key != NULL && terminal)
	{
		KeyTag		tag;

		if (key_tag(pgq_queue_tag(queue), key, &tag))
			add_event(note, FLOW_KEY_DONE, tag.key, job_id)->next = next;
	}
}

/*
 * flow_unlock
 *		Give up the flow lock that pgq_flow_pre_commit took, if it did.
 */
static void
flow_unlock(PgqNote *pnote)
{
	LOCKTAG		tag;

	if (!pnote->flow.locked)
		return;
	flow_locktag(&tag, pnote->queue_id, PGQ_LOCKTAG_FLOW);
	LockRelease(&tag, ShareLock, true);
	pnote->flow.locked = false;
}

/*
 * pgq_flow_pre_commit
 *		Before a transaction's commit shows, take the queue's flow lock if
 *		its note has counts to settle, until pgq_flow_apply settled them
 *		(see ensure_counted).  A session lock: the transaction's own locks
 *		are gone when the notes are applied.
 */
void
pgq_flow_pre_commit(PgqNote *pnote)
{
	FlowNote   *note = &pnote->flow;
	LOCKTAG		tag;
	ListCell   *lc;
	bool		counts = note->pushed != 0 || note->finished != 0 ||
		note->claimed != 0 || note->ended != 0;

	foreach(lc, note->events)
		counts |= ((FlowEvent *) lfirst(lc))->kind == FLOW_TENANT;
	if (!counts || note->locked)
		return;
	flow_locktag(&tag, pnote->queue_id, PGQ_LOCKTAG_FLOW);
	(void) LockAcquire(&tag, ShareLock, true, false);
	note->locked = true;
}

/*
 * pgq_flow_apply
 *		Apply a (sub)transaction's flow note at its end (from wakeup.c).
 */
void
pgq_flow_apply(PgqNote *pnote, QueueShared *qs, bool commit)
{
	FlowNote   *note = &pnote->flow;
	QueueTag	tag = pnote->tag;
	ListCell   *lc;
	uint64		gen;

	if (qs == NULL)
	{
		flow_unlock(pnote);
		return;
	}
	SpinLockAcquire(&qs->mutex);
	settle(&qs->flow, note->pushed, note->finished, note->claimed, note->ended, commit);
	if (commit && note->stale)
	{
		qs->flow.known = false;
		qs->flow_gen++;
		qs->key_gen++;
	}
	gen = qs->key_gen;
	SpinLockRelease(&qs->mutex);

	foreach(lc, note->events)
	{
		FlowEvent  *ev = lfirst(lc);

		if (ev->kind == FLOW_TENANT)
		{
			TenantShared *tenant = tenant_entry(tag, ev->name, false);

			if (tenant == NULL)
				continue;
			SpinLockAcquire(&tenant->mutex);
			settle(&tenant->flow, ev->pushed, ev->finished, ev->claimed, ev->ended, commit);
			SpinLockRelease(&tenant->mutex);
			/* a tenant with nothing left is forgotten */
			tenant_unpin(tenant, true);
		}
		else if (ev->kind == FLOW_KEY_CLAIMED ? !commit : commit)
		{
			KeyTag		ktag;

			memset(&ktag, 0, sizeof(ktag));
			ktag.queue = tag;
			strlcpy(ktag.key, ev->name, NAMEDATALEN);
			key_update(&ktag, gen, ev->kind == FLOW_KEY_CLAIMED ? 'u' : 'd', ev->job_id,
					   ev->next, false, false, false);
		}
	}
	flow_unlock(pnote);
}

/*
 * pgq_flow_forget
 *		Remove the tenants and keys of the queues to forget, but tenants
 *		that a running transaction uses.
 */
void
pgq_flow_forget(const PgqForget *forget)
{
	HASH_SEQ_STATUS status;
	TenantShared *tenant;
	KeyShared  *key;
	TimestampTz now = GetCurrentTimestamp();

	if (tenant_hash == NULL)
		return;
	LWLockAcquire(flow_lock, LW_EXCLUSIVE);
	hash_seq_init(&status, tenant_hash);
	while ((tenant = hash_seq_search(&status)) != NULL)
	{
		bool		idle;

		if (!pgq_forgotten(tenant->tag.queue, forget))
			continue;
		SpinLockAcquire(&tenant->mutex);
		idle = tenant_idle(tenant, now, false);
		SpinLockRelease(&tenant->mutex);
		if (idle)
			hash_search(tenant_hash, &tenant->tag, HASH_REMOVE, NULL);
	}
	hash_seq_init(&status, key_hash);
	while ((key = hash_seq_search(&status)) != NULL)
		if (pgq_forgotten(key->tag.queue, forget))
			hash_search(key_hash, &key->tag, HASH_REMOVE, NULL);
	LWLockRelease(flow_lock);
}
