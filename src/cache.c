/*-------------------------------------------------------------------------
 *
 * cache.c
 *	  Backend-local cache of queue definitions, their blocks and the SPI
 *	  plans prepared for each block.
 *
 * The hot paths never read the catalog in steady state: a queue is loaded
 * once and kept until a relcache invalidation of pgqueue.queue or
 * pgqueue.block arrives.  Every function that changes those catalogs sends
 * one (pgqueue_internal._cache_invalidate), so all backends reload at their next
 * call.  Plans are prepared per block on first use and freed on reload.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "storage/bufmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/syscache.h"

#include "cache.h"


/* how many changes of its block a push looks past before it gives up */
#define PGQ_PUSH_TRIES	5


static HTAB *queue_cache = NULL;
static MemoryContext cache_cxt = NULL;
static bool cache_stale = false;

/*
 * Calls of pgqueue's C functions that hold pointers into the cache while
 * statements run that may look it up again (pgq_cache_pin).  A reset while
 * any is running builds a new cache and retires the old one, with its
 * plans, until the last of them ends (or the transaction does).
 */
typedef struct RetiredCache
{
	HTAB	   *queues;
	MemoryContext cxt;
	SPIPlanPtr	plans[3];		/* the catalog queries of its time */
} RetiredCache;

static int	cache_pins = 0;
static List *retired = NIL;

static void cache_xact_callback(XactEvent event, void *arg);

/* catalog relations, looked up on first use after each reset */
static Oid	queue_relid = InvalidOid;
static Oid	block_relid = InvalidOid;

/* catalog queries, prepared on first use after each reset */
static SPIPlanPtr queue_plan = NULL;
static SPIPlanPtr blocks_plan = NULL;
static SPIPlanPtr acl_plan = NULL;

PG_FUNCTION_INFO_V1(pgq_cache_invalidate);
PG_FUNCTION_INFO_V1(pgq_block_lock);
PG_FUNCTION_INFO_V1(pgq_block_make_lock);
PG_FUNCTION_INFO_V1(pgq_maint_lock);

/*
 * relcache_callback
 *		Mark the cache stale when a pgqueue catalog changes.  Only a flag is
 *		set here: plans may be in use, so they are freed at the next lookup.
 */
static void
relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == queue_relid || relid == block_relid)
		cache_stale = true;
}

/*
 * pgq_cache_init
 *		Register the invalidation callback; called once from _PG_init.
 */
void
pgq_cache_init(void)
{
	CacheRegisterRelcacheCallback(relcache_callback, (Datum) 0);
	RegisterXactCallback(cache_xact_callback, NULL);
	cache_stale = true;
}

/*
 * pgq_cache_memory
 *		The memory context of the cached queues and blocks, for what pop
 *		remembers per block; reset with them.
 */
MemoryContext
pgq_cache_memory(void)
{
	return cache_cxt;
}

/*
 * free_cache
 *		Free the plans of a cache of queues, and its memory.
 */
static void
free_cache(HTAB *queues, MemoryContext cxt, SPIPlanPtr *plans)
{
	if (queues != NULL)
	{
		HASH_SEQ_STATUS status;
		PgqQueue   *q;

		hash_seq_init(&status, queues);
		while ((q = hash_seq_search(&status)) != NULL)
		{
			for (int i = 0; i < q->nblocks; i++)
				for (int k = 0; k < PGQ_NUM_PLANS; k++)
					if (q->blocks[i].plans[k] != NULL)
						SPI_freeplan(q->blocks[i].plans[k]);
		}
	}
	for (int k = 0; k < 3; k++)
		if (plans[k] != NULL)
			SPI_freeplan(plans[k]);
	if (cxt != NULL)
		MemoryContextDelete(cxt);
}

/*
 * free_retired
 *		Free the caches retired while calls held them.
 */
static void
free_retired(void)
{
	ListCell   *lc;

	foreach(lc, retired)
	{
		RetiredCache *r = lfirst(lc);

		free_cache(r->queues, r->cxt, r->plans);
	}
	list_free_deep(retired);
	retired = NIL;
}

/*
 * cache_xact_callback
 *		At the end of a transaction no call holds the cache any more (an
 *		error may have skipped pgq_cache_unpin); retired caches are freed
 *		at the next reset, when no plan of theirs can be in use.
 */
static void
cache_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PREPARE)
		cache_pins = 0;
}

/*
 * pgq_cache_pin, pgq_cache_unpin
 *		A call begins (ends) that holds pointers into the cache while it
 *		runs statements: until the last one ends, a reset leaves the
 *		current cache alive.
 */
void
pgq_cache_pin(void)
{
	cache_pins++;
}

void
pgq_cache_unpin(void)
{
	if (cache_pins > 0 && --cache_pins == 0)
		free_retired();
}

/*
 * cache_reset
 *		Start an empty cache of queues and blocks; the old one is freed, or
 *		retired if a call holds it (see above).
 */
static void
cache_reset(void)
{
	SPIPlanPtr	plans[3] = {queue_plan, blocks_plan, acl_plan};

	if (cache_pins > 0 && cache_cxt != NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
		RetiredCache *r = palloc(sizeof(RetiredCache));

		r->queues = queue_cache;
		r->cxt = cache_cxt;
		memcpy(r->plans, plans, sizeof(plans));
		retired = lappend(retired, r);
		MemoryContextSwitchTo(old);
		cache_cxt = NULL;
	}
	else if (cache_cxt != NULL)
	{
		free_retired();
		free_cache(queue_cache, NULL, plans);
		MemoryContextReset(cache_cxt);
	}
	queue_plan = NULL;
	blocks_plan = NULL;
	acl_plan = NULL;

	if (cache_cxt == NULL)
		cache_cxt = AllocSetContextCreate(CacheMemoryContext, "pgqueue cache",
										  ALLOCSET_DEFAULT_SIZES);
	{
		HASHCTL		ctl;

		ctl.keysize = NAMEDATALEN;
		ctl.entrysize = sizeof(PgqQueue);
		ctl.hcxt = cache_cxt;
		queue_cache = hash_create("pgqueue queues", 16, &ctl,
								  HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}

	queue_relid = InvalidOid;
	block_relid = InvalidOid;
	cache_stale = false;
}

/*
 * lookup_catalog
 *		Find the catalog relations; they change when the extension is
 *		dropped and created again.
 */
static void
lookup_catalog(void)
{
	Oid			nsp;

	if (OidIsValid(queue_relid))
		return;
	nsp = get_namespace_oid("pgqueue", false);
	queue_relid = get_relname_relid("queue", nsp);
	block_relid = get_relname_relid("block", nsp);
	if (!OidIsValid(queue_relid) || !OidIsValid(block_relid))
		elog(ERROR, "pgqueue catalog tables are missing");
}

/*
 * keep_plan
 *		Prepare a statement and keep its plan past the SPI connection.  The
 *		plan is generic: planned once, not for every call.  (Left to choose,
 *		the plan cache kept planning the claim statements anew on every call,
 *		since their generic cost estimate is above that of a custom plan,
 *		though both read the same indexes.)
 */
static SPIPlanPtr
keep_plan(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, argtypes, CURSOR_OPT_GENERIC_PLAN);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s",
			 sql, SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	return plan;
}

/*
 * pgq_installed_version
 *		The version of pgqueue's SQL objects in this database, or NULL if the
 *		extension is not installed.  Needs SPI.
 */
char *
pgq_installed_version(void)
{
	int			rc;

	rc = SPI_execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pgqueue'",
					 true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read the version of extension pgqueue: %s",
			 SPI_result_code_string(rc));
	if (SPI_processed != 1)
		return NULL;
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
}

/*
 * check_version
 *		Refuse to work with the SQL objects of another version of pgqueue
 *		than this library's (after an upgrade of one but not the other).
 */
static void
check_version(void)
{
	char	   *installed = pgq_installed_version();

	if (installed == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"pgqueue\" is not installed in this database")));
	if (strcmp(installed, PGQ_VERSION) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pgqueue library version %s cannot use the objects of pgqueue version %s",
						PGQ_VERSION, installed),
				 errhint("Run ALTER EXTENSION pgqueue UPDATE, or install the library of version %s.",
						 installed)));
}

/*
 * column
 *		The value of a named column of an SPI result row.
 */
static Datum
column(HeapTuple tup, TupleDesc desc, const char *name, bool *isnull)
{
	int			fnumber = SPI_fnumber(desc, name);

	if (fnumber <= 0)
		elog(ERROR, "column \"%s\" is missing from a pgqueue catalog", name);
	return SPI_getbinval(tup, desc, fnumber, isnull);
}

/*
 * queue_load
 *		Read one queue, its grants and its blocks from the catalog into a
 *		cache entry.  Returns NULL if there is no such queue.
 */
static PgqQueue *
queue_load(const char *name)
{
	Datum		arg;
	Oid			argtype;
	TupleDesc	desc;
	HeapTuple	tup;
	bool		isnull;
	PgqQueue	q;
	PgqQueue   *entry;
	Jsonb	   *weights;
	bool		found;
	int			rc;

	lookup_catalog();
	if (queue_plan == NULL)
	{
		check_version();
		argtype = TEXTOID;
		queue_plan = keep_plan("SELECT q.*, ('pgqueue_data.seq_' || q.queue_id)::regclass::oid AS seq"
							   " FROM pgqueue.queue q WHERE q.name = $1",
							   1, &argtype);
		argtype = INT4OID;
		blocks_plan = keep_plan("SELECT b.block_no, b.first_id, b.last_id, b.state,"
								" n.jobs, n.status, n.claims, to_regclass(n.jobs)::oid AS jobs_relid,"
								" to_regclass(n.status)::oid AS status_relid,"
								" to_regclass(n.claims)::oid AS claims_relid"
								" FROM pgqueue.block b, LATERAL (SELECT"
								"  pgqueue_internal._rel('j', b.queue_id, b.block_no) AS jobs,"
								"  pgqueue_internal._rel('s', b.queue_id, b.block_no) AS status,"
								"  pgqueue_internal._rel('c', b.queue_id, b.block_no) AS claims) n"
								" WHERE b.queue_id = $1 ORDER BY b.first_id",
								1, &argtype);
		acl_plan = keep_plan("SELECT a.grantee, a.privilege FROM pgqueue.queue_acl a"
							 " WHERE a.queue_id = $1 ORDER BY a.grantee",
							 1, &argtype);
	}

	arg = CStringGetTextDatum(name);
	rc = SPI_execute_plan(queue_plan, &arg, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read queue \"%s\": %s", name, SPI_result_code_string(rc));
	if (SPI_processed == 0)
		return NULL;

	memset(&q, 0, sizeof(q));
	strlcpy(q.name, name, NAMEDATALEN);
	desc = SPI_tuptable->tupdesc;
	tup = SPI_tuptable->vals[0];
	q.queue_id = DatumGetInt32(column(tup, desc, "queue_id", &isnull));
	q.block_size = DatumGetInt64(column(tup, desc, "block_size", &isnull));
	q.default_lease = *DatumGetIntervalP(column(tup, desc, "default_lease", &isnull));
	q.max_attempts = DatumGetInt32(column(tup, desc, "max_attempts", &isnull));
	q.backoff_base = *DatumGetIntervalP(column(tup, desc, "backoff_base", &isnull));
	q.backoff_cap = *DatumGetIntervalP(column(tup, desc, "backoff_cap", &isnull));
	q.backoff_jitter = DatumGetFloat8(column(tup, desc, "backoff_jitter", &isnull));
	q.paused = DatumGetBool(column(tup, desc, "paused", &isnull));
	q.notify = DatumGetBool(column(tup, desc, "notify", &isnull));
	q.seq_relid = DatumGetObjectId(column(tup, desc, "seq", &isnull));
	q.max_in_flight = DatumGetInt32(column(tup, desc, "max_in_flight", &isnull));
	q.tenant_max_in_flight = DatumGetInt32(column(tup, desc, "tenant_max_in_flight", &isnull));
	q.max_depth = DatumGetInt64(column(tup, desc, "max_depth", &isnull));
	q.tenant_max_depth = DatumGetInt64(column(tup, desc, "tenant_max_depth", &isnull));
	q.push_rate = DatumGetFloat8(column(tup, desc, "push_rate", &isnull));
	q.tenant_push_rate = DatumGetFloat8(column(tup, desc, "tenant_push_rate", &isnull));
	q.pop_rate = DatumGetFloat8(column(tup, desc, "pop_rate", &isnull));
	q.tenant_pop_rate = DatumGetFloat8(column(tup, desc, "tenant_pop_rate", &isnull));
	namestrcpy(&q.owner, NameStr(*DatumGetName(column(tup, desc, "owner", &isnull))));
	weights = DatumGetJsonbP(column(tup, desc, "tenant_weights", &isnull));
	q.tenant_weights = MemoryContextAlloc(cache_cxt, VARSIZE(weights));
	memcpy(q.tenant_weights, weights, VARSIZE(weights));

	/* the grants, one entry per grantee */
	arg = Int32GetDatum(q.queue_id);
	rc = SPI_execute_plan(acl_plan, &arg, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read the grants of queue \"%s\": %s",
			 name, SPI_result_code_string(rc));
	q.acl = MemoryContextAllocZero(cache_cxt, sizeof(PgqGrant) * Max(SPI_processed, 1));
	desc = SPI_tuptable->tupdesc;
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		Name		grantee = DatumGetName(column(SPI_tuptable->vals[i], desc, "grantee", &isnull));
		char	   *privilege = SPI_getvalue(SPI_tuptable->vals[i], desc,
											 SPI_fnumber(desc, "privilege"));
		uint8		right = strcmp(privilege, "push") == 0 ? PGQ_RIGHT_PUSH :
			strcmp(privilege, "consume") == 0 ? PGQ_RIGHT_CONSUME : PGQ_RIGHT_ADMIN;

		if (q.nacl == 0 || strcmp(NameStr(q.acl[q.nacl - 1].grantee), NameStr(*grantee)) != 0)
			namestrcpy(&q.acl[q.nacl++].grantee, NameStr(*grantee));
		q.acl[q.nacl - 1].rights |= right;
		q.restricted |= right;
	}

	rc = SPI_execute_plan(blocks_plan, &arg, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read the blocks of queue \"%s\": %s",
			 name, SPI_result_code_string(rc));
	q.nblocks = (int) SPI_processed;
	q.blocks = MemoryContextAllocZero(cache_cxt, sizeof(PgqBlock) * Max(q.nblocks, 1));
	desc = SPI_tuptable->tupdesc;
	for (int i = 0; i < q.nblocks; i++)
	{
		PgqBlock   *b = &q.blocks[i];

		tup = SPI_tuptable->vals[i];
		b->block_no = DatumGetInt32(column(tup, desc, "block_no", &isnull));
		b->first_id = DatumGetInt64(column(tup, desc, "first_id", &isnull));
		b->last_id = DatumGetInt64(column(tup, desc, "last_id", &isnull));
		b->state = SPI_getvalue(tup, desc, SPI_fnumber(desc, "state"))[0];
		b->jobs_name = MemoryContextStrdup(cache_cxt,
										   SPI_getvalue(tup, desc, SPI_fnumber(desc, "jobs")));
		b->status_name = MemoryContextStrdup(cache_cxt,
											 SPI_getvalue(tup, desc, SPI_fnumber(desc, "status")));
		b->claims_name = MemoryContextStrdup(cache_cxt,
											 SPI_getvalue(tup, desc, SPI_fnumber(desc, "claims")));
		b->jobs_relid = DatumGetObjectId(column(tup, desc, "jobs_relid", &isnull));
		b->status_relid = DatumGetObjectId(column(tup, desc, "status_relid", &isnull));
		b->claims_relid = DatumGetObjectId(column(tup, desc, "claims_relid", &isnull));
		if (isnull)
			b->claims_relid = InvalidOid;
		b->nlanes = -1;
	}

	entry = hash_search(queue_cache, name, HASH_ENTER, &found);
	memcpy(entry, &q, sizeof(q));
	return entry;
}

/*
 * pgq_queue_find
 *		The cached definition of a queue, loading it if needed; NULL if
 *		there is no such queue.  The caller must be connected to SPI.
 */
PgqQueue *
pgq_queue_find(text *name)
{
	char		key[NAMEDATALEN];
	int			len = VARSIZE_ANY_EXHDR(name);
	PgqQueue   *q;

	AcceptInvalidationMessages();
	if (cache_stale || queue_cache == NULL)
		cache_reset();

	if (len == 0 || len >= NAMEDATALEN)
		return NULL;
	memcpy(key, VARDATA_ANY(name), len);
	key[len] = '\0';
	if (strlen(key) != len)
		return NULL;
	q = hash_search(queue_cache, key, HASH_FIND, NULL);
	if (q == NULL)
		q = queue_load(key);
	return q;
}

/*
 * pgq_queue_by_id
 *		The cached definition of the queue with an id, loading it if needed
 *		(connecting to SPI itself); NULL if there is none.
 */
PgqQueue *
pgq_queue_by_id(int32 queue_id)
{
	HASH_SEQ_STATUS status;
	PgqQueue   *q;
	Datum		arg = Int32GetDatum(queue_id);
	Oid			argtype = INT4OID;
	int			rc;

	AcceptInvalidationMessages();
	if (cache_stale || queue_cache == NULL)
		cache_reset();
	hash_seq_init(&status, queue_cache);
	while ((q = hash_seq_search(&status)) != NULL)
		if (q->queue_id == queue_id)
		{
			hash_seq_term(&status);
			return q;
		}
	SPI_connect();
	rc = SPI_execute_with_args("SELECT q.name FROM pgqueue.queue q WHERE q.queue_id = $1",
							   1, &argtype, &arg, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read queue %d: %s", queue_id, SPI_result_code_string(rc));
	q = SPI_processed == 1
		? pgq_queue_find(cstring_to_text(SPI_getvalue(SPI_tuptable->vals[0],
													  SPI_tuptable->tupdesc, 1)))
		: NULL;
	SPI_finish();
	return q;
}

/*
 * pgq_block_indexes
 *		Find the indexes of a block's tables that pgqueue scans directly,
 *		once.
 */
void
pgq_block_indexes(PgqBlock *block)
{
	Relation	rel;
	ListCell   *lc;

	if (block->indexes_known)
		return;
	rel = table_open(block->jobs_relid, AccessShareLock);
	foreach(lc, RelationGetIndexList(rel))
	{
		Relation	index = index_open(lfirst_oid(lc), AccessShareLock);
		int2vector *keys = &index->rd_index->indkey;

		if (keys->dim1 == 2 && keys->values[0] == PGQ_JATT_KEY &&
			keys->values[1] == PGQ_JATT_JOB_ID)
			block->key_index = RelationGetRelid(index);
		/* the lane index: (priority, coalesce(tenant, ''), job_id) */
		if (keys->dim1 == 3 && keys->values[0] == PGQ_JATT_PRIORITY)
		{
			block->jobs_lane = RelationGetRelid(index);
			block->lane_partial = RelationGetIndexPredicate(index) != NIL;
		}
		index_close(index, AccessShareLock);
	}
	block->jobs_pkey = RelationGetPrimaryKeyIndex(rel);
	table_close(rel, AccessShareLock);
	rel = table_open(block->status_relid, AccessShareLock);
	block->status_pkey = RelationGetPrimaryKeyIndex(rel);
	table_close(rel, AccessShareLock);
	if (OidIsValid(block->claims_relid))
	{
		rel = table_open(block->claims_relid, AccessShareLock);
		block->claims_pkey = RelationGetPrimaryKeyIndex(rel);
		foreach(lc, RelationGetIndexList(rel))
		{
			Relation	index = index_open(lfirst_oid(lc), AccessShareLock);

			/* the lane index: (priority, coalesce(tenant, ''), lo) */
			if (index->rd_index->indnatts == 3 &&
				index->rd_index->indkey.values[0] == PGQ_CATT_PRIORITY)
				block->claims_lane = RelationGetRelid(index);
			/* the lease index: (lease_until) */
			if (index->rd_index->indnatts == 1 &&
				index->rd_index->indkey.values[0] == PGQ_CATT_LEASE)
				block->claims_lease = RelationGetRelid(index);
			index_close(index, AccessShareLock);
		}
		table_close(rel, AccessShareLock);
		if (!OidIsValid(block->claims_pkey) || !OidIsValid(block->claims_lane) ||
			!OidIsValid(block->claims_lease))
			elog(ERROR, "the indexes of the claims of block %d are missing", block->block_no);
	}
	if (!OidIsValid(block->key_index) || !OidIsValid(block->jobs_lane) ||
		!OidIsValid(block->jobs_pkey) || !OidIsValid(block->status_pkey))
		elog(ERROR, "the indexes of block %d are missing", block->block_no);
	block->indexes_known = true;
}

/*
 * pgq_queue_get
 *		The cached definition of a queue; an unknown queue is an error.  The
 *		caller must be connected to SPI.
 */
PgqQueue *
pgq_queue_get(text *name)
{
	PgqQueue   *q = pgq_queue_find(name);

	if (q == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("queue \"%s\" does not exist", text_to_cstring(name))));
	return q;
}

/*
 * pgq_block_for_id
 *		The block whose id range holds job_id, or NULL.
 */
PgqBlock *
pgq_block_for_id(PgqQueue *queue, int64 job_id)
{
	int			lo = 0;
	int			hi = queue->nblocks - 1;

	while (lo <= hi)
	{
		int			mid = lo + (hi - lo) / 2;
		PgqBlock   *b = &queue->blocks[mid];

		if (job_id < b->first_id)
			hi = mid - 1;
		else if (job_id > b->last_id)
			lo = mid + 1;
		else
			return b;
	}
	return NULL;
}

/*
 * pgq_relation_empty
 *		Whether a table has no page at all, so no row: a cheap test that
 *		lets pops and maintenance skip statements that would find nothing
 *		in a block's status or claims table.
 */
bool
pgq_relation_empty(Oid relid)
{
	Relation	rel = table_open(relid, AccessShareLock);
	bool		empty = RelationGetNumberOfBlocks(rel) == 0;

	table_close(rel, AccessShareLock);
	return empty;
}

/*
 * pgq_block_by_no
 *		The block with a number, or NULL.
 */
PgqBlock *
pgq_block_by_no(PgqQueue *queue, int32 block_no)
{
	for (int i = 0; i < queue->nblocks; i++)
		if (queue->blocks[i].block_no == block_no)
			return &queue->blocks[i];
	return NULL;
}

/*
 * block_locktag
 *		The lock tag of one block of one queue.
 */
static void
block_locktag(LOCKTAG *tag, int32 queue_id, int32 block_no)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, (uint32) queue_id, (uint32) block_no,
						 PGQ_LOCKTAG_BLOCK);
}

/*
 * pgq_block_open
 *		Lock a block's tables for reading and appending until the end of the
 *		transaction, so that compaction cannot drop them under this call.
 *		Returns false if compaction holds them now (only without wait) or
 *		has dropped them (then the cache is stale: reload the queue).
 */
bool
pgq_block_open(PgqBlock *block, bool wait)
{
	if (!OidIsValid(block->jobs_relid) || !OidIsValid(block->status_relid))
	{
		cache_stale = true;
		return false;
	}
	if (wait)
	{
		LockRelationOid(block->jobs_relid, RowShareLock);
		LockRelationOid(block->status_relid, RowExclusiveLock);
		if (OidIsValid(block->claims_relid))
			LockRelationOid(block->claims_relid, RowExclusiveLock);
	}
	else if (!ConditionalLockRelationOid(block->jobs_relid, RowShareLock))
		return false;
	else if (!ConditionalLockRelationOid(block->status_relid, RowExclusiveLock))
	{
		UnlockRelationOid(block->jobs_relid, RowShareLock);
		return false;
	}
	else if (OidIsValid(block->claims_relid) &&
			 !ConditionalLockRelationOid(block->claims_relid, RowExclusiveLock))
	{
		UnlockRelationOid(block->jobs_relid, RowShareLock);
		UnlockRelationOid(block->status_relid, RowExclusiveLock);
		return false;
	}

	/* taking the locks read the invalidations sent by a finished compaction */
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(block->jobs_relid)) ||
		!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(block->status_relid)) ||
		(OidIsValid(block->claims_relid) &&
		 !SearchSysCacheExists1(RELOID, ObjectIdGetDatum(block->claims_relid))))
	{
		cache_stale = true;
		return false;
	}
	return true;
}

/*
 * pgq_block_close
 *		Give back the locks of one pgq_block_open that returned true, for a
 *		caller that only read the block: the tables stay locked if this
 *		transaction opened the block before.
 */
void
pgq_block_close(PgqBlock *block)
{
	UnlockRelationOid(block->jobs_relid, RowShareLock);
	UnlockRelationOid(block->status_relid, RowExclusiveLock);
	if (OidIsValid(block->claims_relid))
		UnlockRelationOid(block->claims_relid, RowExclusiveLock);
}

/*
 * pgq_read_released
 *		Run read(arg) in a subtransaction that is rolled back, which gives
 *		back every lock it took: for reads of blocks the caller does not
 *		keep, so that the locks a backend holds do not grow with the number
 *		of blocks (each takes a few entries of the shared lock table, sized
 *		by max_locks_per_transaction).  read must not write; what it returns
 *		through arg must be allocated in a context that outlives the
 *		subtransaction (the caller's, or that of its SPI connection).
 */
void
pgq_read_released(void (*read) (void *arg), void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		read(arg);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/* out of the subtransaction before the error goes on */
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		ReThrowError(edata);
	}
	PG_END_TRY();
	RollbackAndReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
}

/*
 * pgq_block_for_push
 *		The block a newly allocated id goes to, locked in push mode until the
 *		end of the transaction and opened.  The block is created if it does
 *		not exist yet, and revived if maintenance marked it done before this
 *		push took the lock (a push from a transaction that allocated its id
 *		before the block filled up).  Reloads the queue when the blocks
 *		changed, so *queue is updated.
 */
PgqBlock *
pgq_block_for_push(PgqQueue **queue, int64 job_id)
{
	char		name[NAMEDATALEN];
	Datum		args[2];
	Oid			argtypes[2] = {INT4OID, INT4OID};
	int			rc;

	strlcpy(name, (*queue)->name, NAMEDATALEN);
	for (int changes = 0;;)
	{
		PgqBlock   *b = pgq_block_for_id(*queue, job_id);
		LOCKTAG		tag;

		/*
		 * Blocks made by this call, or by others (each invalidates every
		 * cache), are progress; only a change of this id's block under this
		 * call (compacted away) counts against the tries.
		 */
		if (changes == PGQ_PUSH_TRIES)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("the blocks of queue \"%s\" keep changing", name),
					 errdetail("Maintenance changed the blocks of the queue while this call looked for the one of job %lld.",
							   (long long) job_id),
					 errhint("Retry the transaction.")));
		args[0] = Int32GetDatum((*queue)->queue_id);
		if (b == NULL)
		{
			args[1] = Int32GetDatum((int32) ((job_id - 1) / (*queue)->block_size));
			rc = SPI_execute_with_args("SELECT pgqueue_internal._block_create($1, $2)",
									   2, argtypes, args, NULL, false, 0);
			if (rc != SPI_OK_SELECT)
				elog(ERROR, "could not create a block for job %lld: %s",
					 (long long) job_id, SPI_result_code_string(rc));
			cache_stale = true;
			*queue = pgq_queue_get(cstring_to_text(name));
			continue;
		}

		/*
		 * Maintenance marks a block done, or compacts it, only while holding
		 * its lock in exclusive mode, and sends the cache invalidation before
		 * releasing it; so once this lock is granted, the invalidations read
		 * here tell whether the block changed meanwhile.
		 */
		block_locktag(&tag, (*queue)->queue_id, b->block_no);
		(void) LockAcquire(&tag, RowExclusiveLock, false, false);
		AcceptInvalidationMessages();
		if (cache_stale || !pgq_block_open(b, true))
		{
			Oid			relid = b->jobs_relid;

			*queue = pgq_queue_get(cstring_to_text(name));
			b = pgq_block_for_id(*queue, job_id);
			if (b == NULL || b->jobs_relid != relid)
				changes++;
			continue;
		}
		if (b->state == 'd')
		{
			args[1] = Int32GetDatum(b->block_no);
			rc = SPI_execute_with_args("SELECT pgqueue_internal._block_revive($1, $2)",
									   2, argtypes, args, NULL, false, 0);
			if (rc != SPI_OK_SELECT)
				elog(ERROR, "could not revive the block of job %lld: %s",
					 (long long) job_id, SPI_result_code_string(rc));
			cache_stale = true;
			*queue = pgq_queue_get(cstring_to_text(name));
			continue;
		}
		return b;
	}
}

/*
 * pgq_sql_fill
 *		A statement from a template: each %N$s (N from 1 to 9) becomes
 *		args[N - 1], or stays as it is if there is no such argument (NULL,
 *		or N > nargs), to be filled later; %% becomes %, so a template
 *		filled twice must not use it before its last filling.
 */
char *
pgq_sql_fill(const char *fmt, const char *const *args, int nargs)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (const char *p = fmt; *p != '\0'; p++)
	{
		if (p[0] == '%' && p[1] == '%')
		{
			appendStringInfoChar(&buf, '%');
			p++;
		}
		else if (p[0] == '%' && p[1] >= '1' && p[1] <= '9' && p[2] == '$' && p[3] == 's' &&
				 p[1] - '1' < nargs && args[p[1] - '1'] != NULL)
		{
			appendStringInfoString(&buf, args[p[1] - '1']);
			p += 3;
		}
		else
			appendStringInfoChar(&buf, *p);
	}
	return buf.data;
}

/*
 * pgq_block_plan
 *		The cached plan of one kind for a block, prepared on first use from
 *		sql_fmt (pgq_sql_fill), in which %1$s stands for the jobs table,
 *		%2$s for the status table, %3$s for the claims table and %4$s for
 *		the condition of the jobs that the lane index holds (unqualified
 *		columns of the jobs table).
 */
SPIPlanPtr
pgq_block_plan(PgqQueue *queue, PgqBlock *block, PgqPlanKind kind,
			   const char *sql_fmt, int nargs, Oid *argtypes)
{
	if (block->plans[kind] == NULL)
	{
		const char *args[4];
		char	   *sql;

		pgq_block_indexes(block);
		args[0] = block->jobs_name;
		args[1] = block->status_name;
		args[2] = block->claims_name;
		args[3] = block->lane_partial ? PGQ_LANE_INDEX_PRED : "true";
		sql = pgq_sql_fill(sql_fmt, args, 4);

		block->plans[kind] = keep_plan(sql, nargs, argtypes);
		pfree(sql);
	}
	return block->plans[kind];
}

/*
 * pgq_block_lock
 *		SQL: pgqueue_internal._block_lock(queue_id, block_no, nowait) takes the block's
 *		lock in exclusive mode until the end of the transaction.
 */
Datum
pgq_block_lock(PG_FUNCTION_ARGS)
{
	LOCKTAG		tag;
	bool		nowait = PG_GETARG_BOOL(2);

	block_locktag(&tag, PG_GETARG_INT32(0), PG_GETARG_INT32(1));
	PG_RETURN_BOOL(LockAcquire(&tag, ExclusiveLock, false, nowait) != LOCKACQUIRE_NOT_AVAIL);
}

/*
 * pgq_block_make_lock
 *		SQL: pgqueue_internal._block_make_lock(queue_id, block_no) takes the
 *		block's lock until the end of the transaction in the mode of its
 *		makers, which conflicts with itself and with the exclusive mode,
 *		not with the mode of pushes.
 */
Datum
pgq_block_make_lock(PG_FUNCTION_ARGS)
{
	LOCKTAG		tag;

	block_locktag(&tag, PG_GETARG_INT32(0), PG_GETARG_INT32(1));
	(void) LockAcquire(&tag, ShareUpdateExclusiveLock, false, false);
	PG_RETURN_VOID();
}

/*
 * pgq_maint_lock
 *		SQL: pgqueue_internal._maint_lock(queue_id, nowait) takes the lock of
 *		the queue's maintenance until the end of the transaction.
 */
Datum
pgq_maint_lock(PG_FUNCTION_ARGS)
{
	LOCKTAG		tag;
	bool		nowait = PG_GETARG_BOOL(1);

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) PG_GETARG_INT32(0), 0,
						 PGQ_LOCKTAG_MAINT);
	PG_RETURN_BOOL(LockAcquire(&tag, ExclusiveLock, false, nowait) != LOCKACQUIRE_NOT_AVAIL);
}

/*
 * pgq_cache_invalidate
 *		SQL: pgqueue_internal._cache_invalidate() makes every backend reload its queue
 *		cache once this transaction commits (and this one at once).
 */
Datum
pgq_cache_invalidate(PG_FUNCTION_ARGS)
{
	Oid			nsp = get_namespace_oid("pgqueue", false);

	CacheInvalidateRelcacheByRelid(get_relname_relid("queue", nsp));
	PG_RETURN_VOID();
}
