/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  The counts behind the views pgqueue.stats and pgqueue.blocks, read in
 *	  bulk.
 *
 * The view pgqueue.jobs looks up the state of each job with a few index
 * probes (claim.c), and for a keyed job that is available, the states of
 * the other jobs of its key: fine for a look at some jobs, but counting a
 * queue of a million jobs through it took half a minute.  Here the states
 * of the jobs of a block come from one sequential scan of each of its
 * tables: its status rows and claim records (pgq_block_states_read, which
 * applies the rules of claim.c), then its jobs, each looked up in what
 * those gave.
 *
 * The counts are those of aggregates over pgqueue.jobs, with one
 * difference: the time that due times are compared with is read once per
 * call, not once per job.  A keyed job that is available is blocked there
 * when another job of its key in the queue with a lower id is unfinished,
 * or one is executing (_key_blocked).  An available job is unfinished, and
 * not executing, so it is blocked unless it is the unfinished job of its
 * key with the lowest id and none of the key executes: the counts keep
 * both per key while the blocks are read, and settle the keyed jobs at the
 * end.
 *
 * A block whose tables are gone (a compaction that committed after the
 * statement's snapshot dropped them, moving its jobs to a block that the
 * snapshot does not see) is left out, like a block that the snapshot does
 * not see yet.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "claim.h"

PG_FUNCTION_INFO_V1(pgq_block_stats);
PG_FUNCTION_INFO_V1(pgq_queue_stats);

/* the states of pgqueue.jobs, in the order of pgqueue.stats */
typedef enum StatsState
{
	STATS_AVAILABLE,
	STATS_BLOCKED,
	STATS_SCHEDULED,
	STATS_EXECUTING,
	STATS_FAILED,
	STATS_SUCCEEDED,
	STATS_ABORTED,
	STATS_NUM_STATES
} StatsState;

/* counts of jobs so far */
typedef struct StatsCounts
{
	int64		jobs;
	int64		unfinished;		/* not succeeded or aborted */
	int64		states[STATS_NUM_STATES];	/* keyed available jobs: below */
	int64		keyed_available;	/* available or blocked, settled at the end */
	bool		has_oldest;
	TimestampTz oldest;			/* the earliest run_at of an available job */
} StatsCounts;

/* one ordering key of a queue while its blocks are read */
typedef struct KeyEntry
{
	char	   *key;			/* hash key: a copy of the key */
	int64		first;			/* lowest id of an unfinished job */
	bool		first_available;	/* that job is available */
	bool		first_has_run_at;
	TimestampTz first_run_at;	/* and its run_at */
	bool		executing;		/* a job of the key is executing */
} KeyEntry;

/*
 * key_hash, key_match
 *		Hash and compare the keys of KeyEntry (pointers to strings; keys are
 *		equal when their bytes are, as for the deterministic collations
 *		that a column of a database can have).
 */
static uint32
key_hash(const void *key, Size keysize)
{
	const char *s = *(const char *const *) key;

	return hash_bytes((const unsigned char *) s, (int) strlen(s));
}

static int
key_match(const void *key1, const void *key2, Size keysize)
{
	return strcmp(*(const char *const *) key1, *(const char *const *) key2);
}

/*
 * keys_create
 *		A table of KeyEntry in the current memory context.
 */
static HTAB *
keys_create(void)
{
	HASHCTL		ctl;

	ctl.keysize = sizeof(char *);
	ctl.entrysize = sizeof(KeyEntry);
	ctl.hash = key_hash;
	ctl.match = key_match;
	ctl.hcxt = CurrentMemoryContext;
	return hash_create("pgqueue stats keys", 1024, &ctl,
					   HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
}

/*
 * job_state_of
 *		The state pgqueue.jobs shows for a job of state *st (as
 *		pgqueue_internal._state says, before its key is looked at), and into
 *		*run_at the run_at it shows (false: NULL).
 */
static StatsState
job_state_of(PgqJobState *st, TimestampTz now, bool job_has_run_at, TimestampTz job_run_at,
			 TimestampTz enqueued_at, bool *has_run_at, TimestampTz *run_at)
{
	*has_run_at = false;
	switch (st->state)
	{
		case '\0':
			*has_run_at = true;
			*run_at = job_has_run_at ? job_run_at : enqueued_at;
			return STATS_AVAILABLE;
		case PGQ_EXECUTING:
			return STATS_EXECUTING;
		case PGQ_SUCCEEDED:
			return STATS_SUCCEEDED;
		case PGQ_ABORTED:
			return STATS_ABORTED;
		default:
			break;
	}
	if (st->state == PGQ_AVAILABLE || st->state == PGQ_SCHEDULED || st->state == PGQ_FAILED)
	{
		*has_run_at = st->has_due;
		*run_at = st->due_at;
	}
	if (st->has_due && st->due_at > now)
		return st->state == PGQ_FAILED ? STATS_FAILED : STATS_SCHEDULED;
	return STATS_AVAILABLE;
}

/*
 * count_block
 *		Add the jobs of one block to *counts, as snapshot sees them.  With
 *		keys, keyed available jobs are counted in keyed_available and their
 *		keys in keys, to be settled by settle_keys; without, they count as
 *		available.  Returns false if the block's tables are gone; else, if
 *		bytes is given, their size on disk (as pg_total_relation_size adds
 *		it) into *bytes.
 */
static bool
count_block(PgqBlock *block, Snapshot snapshot, TimestampTz now, StatsCounts *counts,
			HTAB *keys, int64 *bytes)
{
	Relation	jobs;
	Relation	status;
	Relation	claims = NULL;
	PgqBlockStates states;
	TupleTableSlot *slot;
	TableScanDesc scan;
	MemoryContext cxt;
	MemoryContext old;

	/* a table that is gone was dropped since the cache was read */
	if (!OidIsValid(block->jobs_relid) || !OidIsValid(block->status_relid))
		return false;
	jobs = try_relation_open(block->jobs_relid, AccessShareLock);
	if (jobs == NULL)
		return false;
	status = try_relation_open(block->status_relid, AccessShareLock);
	if (status == NULL)
	{
		relation_close(jobs, AccessShareLock);
		return false;
	}
	if (OidIsValid(block->claims_relid))
		claims = try_relation_open(block->claims_relid, AccessShareLock);

	cxt = AllocSetContextCreate(CurrentMemoryContext, "pgqueue block stats",
								ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	pgq_block_states_read(status, claims, snapshot, &states);

	slot = table_slot_create(jobs, NULL);
	scan = table_beginscan(jobs, snapshot, 0, NULL);
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		char		tenant[NAMEDATALEN] = "";
		int64		job_id;
		PgqJobState st;
		StatsState state;
		bool		has_run_at;
		TimestampTz run_at = 0;
		bool		unfinished;

		slot_getsomeattrs(slot, PGQ_JATT_TENANT);
		job_id = DatumGetInt64(slot->tts_values[PGQ_JATT_JOB_ID - 1]);
		if (!slot->tts_isnull[PGQ_JATT_TENANT - 1])
			text_to_cstring_buffer(DatumGetTextPP(slot->tts_values[PGQ_JATT_TENANT - 1]),
								   tenant, NAMEDATALEN);
		pgq_block_job_state(&states, job_id,
							DatumGetInt32(slot->tts_values[PGQ_JATT_PRIORITY - 1]), tenant, &st);
		state = job_state_of(&st, now, !slot->tts_isnull[PGQ_JATT_RUN_AT - 1],
							 DatumGetTimestampTz(slot->tts_values[PGQ_JATT_RUN_AT - 1]),
							 DatumGetTimestampTz(slot->tts_values[PGQ_JATT_ENQUEUED_AT - 1]),
							 &has_run_at, &run_at);
		unfinished = st.state != PGQ_SUCCEEDED && st.state != PGQ_ABORTED;
		counts->jobs++;
		if (unfinished)
			counts->unfinished++;

		if (keys != NULL && !slot->tts_isnull[PGQ_JATT_KEY - 1])
		{
			/* a keyed job: keep what its key needs (see the file header) */
			if (unfinished)
			{
				char	   *key = TextDatumGetCString(slot->tts_values[PGQ_JATT_KEY - 1]);
				KeyEntry   *entry;
				bool		found;

				MemoryContextSwitchTo(old);
				entry = hash_search(keys, &key, HASH_ENTER, &found);
				if (!found)
				{
					entry->key = pstrdup(key);
					entry->first = PG_INT64_MAX;
					entry->executing = false;
				}
				MemoryContextSwitchTo(cxt);
				if (job_id < entry->first)
				{
					entry->first = job_id;
					entry->first_available = state == STATS_AVAILABLE;
					entry->first_has_run_at = has_run_at;
					entry->first_run_at = run_at;
				}
				if (st.state == PGQ_EXECUTING)
					entry->executing = true;
				pfree(key);
			}
			if (state == STATS_AVAILABLE)
			{
				counts->keyed_available++;
				continue;
			}
		}
		counts->states[state]++;
		if (state == STATS_AVAILABLE && has_run_at &&
			(!counts->has_oldest || run_at < counts->oldest))
		{
			counts->has_oldest = true;
			counts->oldest = run_at;
		}
	}
	table_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);

	if (bytes != NULL)
	{
		*bytes = DatumGetInt64(DirectFunctionCall1(pg_total_relation_size,
												   ObjectIdGetDatum(block->jobs_relid)))
			+ DatumGetInt64(DirectFunctionCall1(pg_total_relation_size,
												ObjectIdGetDatum(block->status_relid)));
		if (claims != NULL)
			*bytes += DatumGetInt64(DirectFunctionCall1(pg_total_relation_size,
														ObjectIdGetDatum(block->claims_relid)));
	}
	if (claims != NULL)
		relation_close(claims, AccessShareLock);
	relation_close(status, AccessShareLock);
	relation_close(jobs, AccessShareLock);
	return true;
}

/*
 * settle_keys
 *		Count the keyed available jobs of a queue as available or blocked:
 *		of each key, at most its unfinished job with the lowest id is
 *		available, if none of the key executes.
 */
static void
settle_keys(StatsCounts *counts, HTAB *keys)
{
	HASH_SEQ_STATUS seq;
	KeyEntry   *entry;
	int64		available = 0;

	hash_seq_init(&seq, keys);
	while ((entry = hash_seq_search(&seq)) != NULL)
	{
		if (!entry->first_available || entry->executing)
			continue;
		available++;
		if (entry->first_has_run_at &&
			(!counts->has_oldest || entry->first_run_at < counts->oldest))
		{
			counts->has_oldest = true;
			counts->oldest = entry->first_run_at;
		}
	}
	counts->states[STATS_AVAILABLE] += available;
	counts->states[STATS_BLOCKED] += counts->keyed_available - available;
	counts->keyed_available = 0;
}

/*
 * pgq_block_stats
 *		SQL: pgqueue_internal._block_stats(queue_id, block_no) returns the
 *		jobs of a block, those not finished (not succeeded or aborted) and
 *		the size of its tables, as the statement sees them; NULLs if the
 *		block or its tables are gone.
 */
Datum
pgq_block_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[3];
	bool		nulls[3] = {true, true, true};
	PgqQueue   *queue;
	PgqBlock   *block = NULL;
	StatsCounts counts;
	int64		bytes;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	queue = pgq_queue_by_id(PG_GETARG_INT32(0));
	if (queue != NULL)
		block = pgq_block_by_no(queue, PG_GETARG_INT32(1));
	memset(&counts, 0, sizeof(counts));
	if (block != NULL &&
		count_block(block, GetActiveSnapshot(), GetCurrentTimestamp(), &counts, NULL, &bytes))
	{
		values[0] = Int64GetDatum(counts.jobs);
		values[1] = Int64GetDatum(counts.unfinished);
		values[2] = Int64GetDatum(bytes);
		nulls[0] = nulls[1] = nulls[2] = false;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/*
 * pgq_queue_stats
 *		SQL: pgqueue_internal._queue_stats(queue_id, block_nos) returns the
 *		jobs of a queue's blocks block_nos per state of pgqueue.jobs
 *		(available, blocked, scheduled, executing, failed, succeeded,
 *		aborted) and the earliest run_at of an available job, as the
 *		statement sees them.  Blocks that are gone are left out.
 */
Datum
pgq_queue_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[STATS_NUM_STATES + 1];
	bool		nulls[STATS_NUM_STATES + 1];
	PgqQueue   *queue;
	StatsCounts counts;
	Snapshot	snapshot = GetActiveSnapshot();
	TimestampTz now = GetCurrentTimestamp();
	HTAB	   *keys;
	Datum	   *elems;
	bool	   *enulls;
	int			nelems;
	int32	   *block_nos;
	PgqBlock  **blocks;
	int			nblocks = 0;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(1), INT4OID, 4, true, TYPALIGN_INT,
					  &elems, &enulls, &nelems);
	block_nos = palloc(sizeof(int32) * Max(nelems, 1));
	for (int i = 0; i < nelems; i++)
		if (!enulls[i])
			block_nos[nblocks++] = DatumGetInt32(elems[i]);

	/*
	 * Copy the blocks out of the cache: reading their tables takes locks,
	 * which may bring invalidations of it.
	 */
	blocks = palloc(sizeof(PgqBlock *) * Max(nblocks, 1));
	queue = pgq_queue_by_id(PG_GETARG_INT32(0));
	for (int i = 0; i < nblocks; i++)
	{
		PgqBlock   *b = queue != NULL ? pgq_block_by_no(queue, block_nos[i]) : NULL;

		blocks[i] = NULL;
		if (b != NULL)
		{
			blocks[i] = palloc0(sizeof(PgqBlock));
			blocks[i]->block_no = b->block_no;
			blocks[i]->jobs_relid = b->jobs_relid;
			blocks[i]->status_relid = b->status_relid;
			blocks[i]->claims_relid = b->claims_relid;
		}
	}

	memset(&counts, 0, sizeof(counts));
	keys = keys_create();
	for (int i = 0; i < nblocks; i++)
		if (blocks[i] != NULL)
			(void) count_block(blocks[i], snapshot, now, &counts, keys, NULL);
	settle_keys(&counts, keys);
	hash_destroy(keys);

	memset(nulls, false, sizeof(nulls));
	for (int i = 0; i < STATS_NUM_STATES; i++)
		values[i] = Int64GetDatum(counts.states[i]);
	values[STATS_NUM_STATES] = TimestampTzGetDatum(counts.oldest);
	nulls[STATS_NUM_STATES] = !counts.has_oldest;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}
