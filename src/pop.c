/*-------------------------------------------------------------------------
 *
 * pop.c
 *	  queue_pop: claim up to n available jobs under a lease.
 *
 * A claim is a compare-and-append: the job row is locked with FOR UPDATE
 * SKIP LOCKED (so consumers pass over each other's claims instead of
 * waiting), then status row seq + 1 is inserted with ON CONFLICT DO
 * NOTHING.  A consumer whose snapshot predates another consumer's committed
 * claim finds the row unlocked but loses on the unique (job_id, seq) index,
 * so no job is ever leased twice.  If the claiming transaction rolls back,
 * its status row and row lock vanish together and the job is available at
 * once.
 *
 * Order: higher priority first; within a priority, older blocks first; in a
 * block, due retried, released and scheduled jobs before never-claimed ones,
 * each by job id.  Each block is read per priority ("lane"), so a scan never
 * walks other priorities' jobs; both the jobs and the status side of a
 * never-claimed scan start at the lane's watermark ($4), so a scan does not
 * walk the status rows of the jobs claimed before it either.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/nbtree.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "args.h"
#include "flow.h"
#include "note.h"
#include "cache.h"
#include "privilege.h"
#include "wakeup.h"
#include "watermark.h"


PG_FUNCTION_INFO_V1(pgq_pop);
PG_FUNCTION_INFO_V1(pgq_unclaimed);

/* parameters shared by the claim statements; each uses some of them */
#define CLAIM_NARGS 10
static Oid	claim_argtypes[CLAIM_NARGS] = {
	TIMESTAMPTZOID,				/* $1 now */
	INT4OID,					/* $2 priority */
	INT4OID,					/* $3 how many */
	INT8OID,					/* $4 lowest id that may be unclaimed */
	INT4OID,					/* $5 queue id */
	INTERVALOID,				/* $6 lease */
	BOOLOID,					/* $7 tenants have limits: pgqueue_internal._take */
	TEXTARRAYOID,				/* $8 tenants ('': none) */
	INT4ARRAYOID,				/* $9 claims per tenant */
	INT8ARRAYOID				/* $10 watermark per tenant */
};

/* the priorities of a block, highest first, and whether tenants use them */
static const char *lanes_sql =
"WITH RECURSIVE l(p) AS ("
"  SELECT max(priority) FROM %1$s"
"  UNION ALL"
"  SELECT (SELECT max(priority) FROM %1$s WHERE priority < l.p) FROM l WHERE l.p IS NOT NULL)"
" SELECT p, EXISTS (SELECT 1 FROM %1$s j WHERE j.priority = l.p AND coalesce(j.tenant, '') > '')"
" FROM l WHERE p IS NOT NULL";

/*
 * The never-claimed test of the statements that claim fresh jobs is
 * pgqueue_internal._unclaimed() (below): a probe of the status table's primary key
 * that also sees status rows its statement's snapshot does not, those of
 * claims still running and of claims committed since the snapshot was
 * taken.  With a test under the statement's snapshot instead, a consumer
 * locked jobs that another had claimed meanwhile, lost them on the unique
 * index and ran the statement again (one pop in ten with 4 consumers).
 * The unique index still decides; the probe only keeps a claim from trying.
 * The lowest never-claimed job (first_unclaimed_sql) is looked for under
 * the snapshot: a running claim may still roll back.  Its test is a
 * subplan per candidate (OFFSET 0 keeps it from becoming an anti-join,
 * which the planner may run as a merge over every status row from the
 * watermark on).
 *
 * The filters every claim applies to a candidate: a job with a key waits
 * for the earlier jobs of its key, and with tenant limits the tenant must
 * have room (flow.c).  They must run after the candidate's other
 * conditions, on jobs that can be claimed: they are costed high, which
 * orders them last among the conditions of one scan, and in the waiting
 * claim they refer to the status row too (x), which makes them conditions
 * of the join, above the scans.
 */
#define CLAIM_FLOW_FILTERS(x) \
"    AND (j.key IS NULL OR pgqueue_internal._key_ready(j.key, " x ".job_id))" \
"    AND (NOT $7 OR (" x ".job_id IS NOT NULL AND pgqueue_internal._take(j.tenant)))"

static const char *claim_waiting_sql =
"WITH c AS ("
"  SELECT j.job_id, j.key, j.payload, j.priority, j.enqueued_at, j.tenant,"
"         s.seq, s.attempt, s.fails, s.error"
"  FROM %2$s s JOIN %1$s j ON j.job_id = s.job_id"
"  WHERE s.state IN ('a', 's', 'f') AND s.due_at <= $1 AND j.priority = $2"
"    AND NOT EXISTS (SELECT 1 FROM %2$s n WHERE n.job_id = s.job_id AND n.seq > s.seq)"
CLAIM_FLOW_FILTERS("s")
"  ORDER BY s.job_id LIMIT $3"
"  FOR UPDATE OF j SKIP LOCKED),"
" i AS ("
"  INSERT INTO %2$s (queue_id, job_id, seq, state, attempt, fails, at, due_at, error)"
"  SELECT $5, c.job_id, c.seq + 1, 'e', c.attempt + 1, c.fails, $1, $1 + $6, c.error FROM c"
"  ON CONFLICT DO NOTHING"
"  RETURNING job_id, attempt, due_at)"
" SELECT c.job_id, c.key, c.payload, c.priority, i.attempt, c.enqueued_at, i.due_at, c.tenant"
" FROM c LEFT JOIN i ON i.job_id = c.job_id ORDER BY c.job_id";

/* the lowest never-claimed job of each tenant's lane (null: none), in order */
static const char *first_unclaimed_sql =
"SELECT (SELECT j.job_id FROM %1$s j"
"        WHERE j.priority = $2 AND coalesce(j.tenant, '') = t.tenant AND j.job_id >= t.wm"
"          AND NOT EXISTS (SELECT 1 FROM %2$s s WHERE s.job_id = j.job_id AND s.job_id >= t.wm"
"                          OFFSET 0)"
"        ORDER BY j.job_id LIMIT 1)"
" FROM unnest($8::text[], $10::int8[]) WITH ORDINALITY AS t(tenant, wm, i) ORDER BY t.i";

static const char *claim_fresh_sql =
"WITH c AS ("
"  SELECT j.job_id, j.key, j.payload, j.priority, j.enqueued_at, j.tenant"
"  FROM %1$s j"
"  WHERE j.priority = $2 AND coalesce(j.tenant, '') = '' AND j.job_id >= $4"
"    AND pgqueue_internal._unclaimed(j.job_id)"
CLAIM_FLOW_FILTERS("j")
"  ORDER BY j.job_id LIMIT $3"
"  FOR UPDATE SKIP LOCKED),"
" i AS ("
"  INSERT INTO %2$s (queue_id, job_id, seq, state, attempt, fails, at, due_at)"
"  SELECT $5, c.job_id, 1, 'e', 1, 0, $1, $1 + $6 FROM c"
"  ON CONFLICT DO NOTHING"
"  RETURNING job_id, attempt, due_at)"
" SELECT c.job_id, c.key, c.payload, c.priority, i.attempt, c.enqueued_at, i.due_at, c.tenant"
" FROM c LEFT JOIN i ON i.job_id = c.job_id ORDER BY c.job_id";

/* the tenants of a lane, '' for the jobs without one */
static const char *tenants_sql =
"WITH RECURSIVE t(v) AS ("
"  SELECT min(coalesce(tenant, '')) FROM %1$s WHERE priority = $2"
"  UNION ALL"
"  SELECT (SELECT min(coalesce(tenant, '')) FROM %1$s"
"          WHERE priority = $2 AND coalesce(tenant, '') > t.v)"
"  FROM t WHERE t.v IS NOT NULL)"
" SELECT v FROM t WHERE v IS NOT NULL";

/*
 * claim never-claimed jobs of a lane, each tenant its quota ($8, $9); each
 * tenant's scan skips the jobs other pops hold, so it fills its quota
 */
static const char *claim_fair_sql =
"WITH c AS ("
"  SELECT y.* FROM unnest($8::text[], $9::int[], $10::int8[]) AS t(tenant, quota, wm)"
"  CROSS JOIN LATERAL ("
"   SELECT j.job_id, j.key, j.payload, j.priority, j.enqueued_at, j.tenant"
"   FROM %1$s j"
"   WHERE j.priority = $2 AND coalesce(j.tenant, '') = t.tenant AND j.job_id >= t.wm"
"     AND pgqueue_internal._unclaimed(j.job_id)"
CLAIM_FLOW_FILTERS("j")
"   ORDER BY j.job_id LIMIT t.quota"
"   FOR UPDATE SKIP LOCKED) y),"
" i AS ("
"  INSERT INTO %2$s (queue_id, job_id, seq, state, attempt, fails, at, due_at)"
"  SELECT $5, c.job_id, 1, 'e', 1, 0, $1, $1 + $6 FROM c"
"  ON CONFLICT DO NOTHING"
"  RETURNING job_id, attempt, due_at)"
" SELECT c.job_id, c.key, c.payload, c.priority, i.attempt, c.enqueued_at, i.due_at, c.tenant"
" FROM c LEFT JOIN i ON i.job_id = c.job_id ORDER BY c.job_id";

/* rounds of one claim statement that lost jobs to concurrent claims */
#define PGQ_CLAIM_TRIES 8

/*
 * one lane: the jobs of one priority in one block, and its tenants' lanes
 * when jobs with a tenant use it (fair)
 */
typedef struct Lane
{
	int32		priority;
	int			block;			/* index into queue->blocks */
	bool		fair;			/* has jobs with a tenant: claims are shared */
	int64		watermark;		/* no unclaimed job without a tenant below this */
	int64	   *watermarks;		/* fair: the same per tenant of Tenants */
} Lane;

/*
 * The tenants of one priority's lanes and their shares of a pop: each
 * round deals the claims still wanted (share), and each lane's claim takes
 * what its tenants' shares leave (quotas = share - got).
 */
typedef struct Tenants
{
	int			n;
	int			max;
	Datum	   *names;			/* text; '' for the jobs without a tenant */
	char	  **cnames;			/* the same as C strings */
	int		   *weights;
	bool	   *active;			/* may still have jobs to claim */
	int		   *share;
	int		   *got;
	Datum	   *quotas;			/* int4, for the claim statement */
	bool		fresh;			/* read now, not remembered */
} Tenants;

/*
 * The open scans of pgqueue_internal._unclaimed during one pop: one per block, each
 * on the status table's primary key with a dirty snapshot.
 */
typedef struct ProbeScan
{
	PgqBlock   *block;
	Relation	status;
	Relation	pkey;
	IndexScanDesc scan;
	TupleTableSlot *slot;
} ProbeScan;

typedef struct ClaimProbe
{
	PgqQueue   *queue;
	MemoryContext cxt;			/* lives as long as the pop */
	SnapshotData dirty;
	List	   *scans;			/* ProbeScan */
} ClaimProbe;

/* the pop whose claim statements are running, for pgqueue_internal._unclaimed */
static ClaimProbe *current_probe = NULL;

/*
 * probe_scan
 *		The scan of the block holding job_id, opened on first use.
 */
static ProbeScan *
probe_scan(ClaimProbe *probe, int64 job_id)
{
	ListCell   *lc;
	ProbeScan  *ps;
	PgqBlock   *block;
	MemoryContext old;

	foreach(lc, probe->scans)
	{
		ps = lfirst(lc);
		if (ps->block->first_id <= job_id && job_id <= ps->block->last_id)
			return ps;
	}
	block = pgq_block_for_id(probe->queue, job_id);
	if (block == NULL)
		elog(ERROR, "job %lld is in no block of queue \"%s\"",
			 (long long) job_id, probe->queue->name);

	/* the claim statement reading the block holds its locks */
	old = MemoryContextSwitchTo(probe->cxt);
	ps = palloc(sizeof(ProbeScan));
	ps->block = block;
	ps->status = table_open(block->status_relid, NoLock);
	if (!OidIsValid(block->status_pkey))
		block->status_pkey = RelationGetPrimaryKeyIndex(ps->status);
	ps->pkey = index_open(block->status_pkey, AccessShareLock);
	ps->slot = table_slot_create(ps->status, NULL);
	ps->scan = index_beginscan(ps->status, ps->pkey, &probe->dirty, 1, 0);
	probe->scans = lappend(probe->scans, ps);
	MemoryContextSwitchTo(old);
	return ps;
}

/*
 * probe_end
 *		Close the scans of a pop.
 */
static void
probe_end(ClaimProbe *probe)
{
	ListCell   *lc;

	foreach(lc, probe->scans)
	{
		ProbeScan  *ps = lfirst(lc);

		index_endscan(ps->scan);
		ExecDropSingleTupleTableSlot(ps->slot);
		index_close(ps->pkey, AccessShareLock);
		table_close(ps->status, NoLock);
	}
	probe->scans = NIL;
}

/*
 * pgq_unclaimed
 *		SQL: pgqueue_internal._unclaimed(job_id), for the claim statements of
 *		queue_pop only: true if the job has no status row, committed or
 *		being written (see the claim statements above).
 */
Datum
pgq_unclaimed(PG_FUNCTION_ARGS)
{
	ProbeScan  *ps;
	ScanKeyData skey;
	bool		found;
	MemoryContext old;

	if (current_probe == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pgqueue_internal._unclaimed can only be used by queue_pop")));
	ps = probe_scan(current_probe, PG_GETARG_INT64(0));
	ScanKeyInit(&skey, 1, BTEqualStrategyNumber, F_INT8EQ, PG_GETARG_DATUM(0));

	/* what the scan keeps between calls (such as killed items) must last */
	old = MemoryContextSwitchTo(current_probe->cxt);
	index_rescan(ps->scan, &skey, 1, NULL, 0);
	found = index_getnext_slot(ps->scan, ForwardScanDirection, ps->slot);
	ExecClearTuple(ps->slot);
	MemoryContextSwitchTo(old);
	PG_RETURN_BOOL(!found);
}

/*
 * lane_cmp
 *		qsort order of lanes: priority descending, then block ascending.
 */
static int
lane_cmp(const void *a, const void *b)
{
	const Lane *la = a;
	const Lane *lb = b;

	if (la->priority != lb->priority)
		return la->priority > lb->priority ? -1 : 1;
	return la->block - lb->block;
}

/*
 * pop_open
 *		Open a block for a pop's statements, once per pop (*opened): false
 *		if compaction holds or dropped it.  A pop opens only the blocks it
 *		reads, so that one pop over a long backlog does not take the locks
 *		of every block.
 */
static bool
pop_open(PgqBlock *block, bool *opened)
{
	if (!*opened)
		*opened = pgq_block_open(block, false);
	return *opened;
}

/*
 * block_lanes
 *		The priorities of a block's jobs, highest first, into *lanes, and
 *		whether jobs with a tenant have them into *fair; returns how many,
 *		or -1 if the block cannot be read now (see pop_open).  A closed
 *		block takes no new jobs but the late pushes that were running when
 *		it filled up, so its priorities are remembered for PGQ_LANES_TTL; a
 *		job of a new priority pushed that late waits that long at most.  The
 *		open block is read every time.
 */
#define PGQ_LANES_TTL	(1 * USECS_PER_SEC)

static int
block_lanes(PgqQueue *queue, int b, TimestampTz now, bool *opened, int32 **lanes, bool **fair)
{
	PgqBlock   *block = &queue->blocks[b];
	SPIPlanPtr	plan;
	int32	   *read;
	bool	   *read_fair;

	if (block->state != 'o' && block->nlanes >= 0 && now - block->lanes_at < PGQ_LANES_TTL)
	{
		*lanes = block->lanes;
		*fair = block->tenants;
		return block->nlanes;
	}
	if (!pop_open(block, &opened[b]))
		return -1;
	plan = pgq_block_plan(queue, block, PGQ_PLAN_LANES, lanes_sql, 0, NULL);
	/* not read-only: a waiting pop must see lanes pushed since it started */
	if (SPI_execute_plan(plan, NULL, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the priorities of queue \"%s\"", queue->name);
	read = palloc(sizeof(int32) * Max(SPI_processed, 1));
	read_fair = palloc(sizeof(bool) * Max(SPI_processed, 1));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;

		read[r] = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc,
											  1, &isnull));
		read_fair[r] = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc,
												  2, &isnull));
	}
	block->nlanes = -1;
	if (SPI_processed <= PGQ_CACHED_LANES)
	{
		memcpy(block->lanes, read, sizeof(int32) * SPI_processed);
		memcpy(block->tenants, read_fair, sizeof(bool) * SPI_processed);
		block->nlanes = (int) SPI_processed;
		block->lanes_at = now;
	}
	*lanes = read;
	*fair = read_fair;
	return (int) SPI_processed;
}

/*
 * collect_lanes
 *		Every lane of every block that may hold unfinished jobs, in claim
 *		order.  Returns the number of lanes.  opened[i] tells whether block
 *		i was opened on the way.
 */
static int
collect_lanes(PgqQueue *queue, TimestampTz now, bool *opened, Lane **lanes_out)
{
	int			nlanes = 0;
	int			maxlanes = 16;
	Lane	   *lanes = palloc(sizeof(Lane) * maxlanes);

	for (int i = 0; i < queue->nblocks; i++)
	{
		PgqBlock   *block = &queue->blocks[i];
		int32	   *priorities;
		bool	   *fair;
		int			n;

		/* skip done blocks, and blocks that compaction holds or dropped */
		if (block->state == 'd' ||
			(n = block_lanes(queue, i, now, opened, &priorities, &fair)) < 0)
			continue;
		for (int r = 0; r < n; r++)
		{
			if (nlanes == maxlanes)
			{
				maxlanes *= 2;
				lanes = repalloc(lanes, sizeof(Lane) * maxlanes);
			}
			lanes[nlanes].priority = priorities[r];
			lanes[nlanes].block = i;
			lanes[nlanes].fair = fair[r];
			lanes[nlanes].watermark = pgq_lane_watermark(queue, block, priorities[r], "");
			lanes[nlanes].watermarks = NULL;
			nlanes++;
		}
	}
	qsort(lanes, nlanes, sizeof(Lane), lane_cmp);
	*lanes_out = lanes;
	return nlanes;
}

/*
 * claim
 *		Run one claim statement and add the jobs it claimed to the result;
 *		with tenants, count each tenant's claims in tenants->got.  A job
 *		locked but lost to a claim that committed after this statement's
 *		snapshot is not returned; such losses make the statement run again
 *		with a new snapshot, a bounded number of times (not for the fair
 *		claim, whose caller shares out the rest again).  Returns how many
 *		jobs it claimed.
 */
static int
claim(PgqQueue *queue, PgqBlock *block, PgqPlanKind kind, const char *sql,
	  Datum *args, char *nulls, int wanted, Tenants *tenants, ReturnSetInfo *rsinfo)
{
	SPIPlanPtr	plan = pgq_block_plan(queue, block, kind, sql, CLAIM_NARGS, claim_argtypes);
	text	   *qname = cstring_to_text(queue->name);
	int			claimed = 0;
	int			tries = 0;
	int			request;
	int			locked;
	int			got;

	do
	{
		text	  **claimed_tenants;

		request = wanted - claimed;
		args[2] = Int32GetDatum(request);
		if (SPI_execute_plan(plan, args, nulls, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not claim jobs of queue \"%s\"", queue->name);
		locked = (int) SPI_processed;
		got = 0;
		claimed_tenants = palloc(sizeof(text *) * Max(locked, 1));
		for (int r = 0; r < locked; r++)
		{
			HeapTuple	tup = SPI_tuptable->vals[r];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			Datum		values[9];
			bool		nulls_out[9];

			/*
			 * job_id, queue, key, payload, priority, attempt, enqueued_at,
			 * lease_until, tenant
			 */
			values[5] = SPI_getbinval(tup, desc, 5, &nulls_out[5]);
			if (nulls_out[5])
				continue;		/* lost to a concurrent claim */
			values[0] = SPI_getbinval(tup, desc, 1, &nulls_out[0]);
			values[1] = PointerGetDatum(qname);
			nulls_out[1] = false;
			values[2] = SPI_getbinval(tup, desc, 2, &nulls_out[2]);
			values[3] = SPI_getbinval(tup, desc, 3, &nulls_out[3]);
			values[4] = SPI_getbinval(tup, desc, 4, &nulls_out[4]);
			values[6] = SPI_getbinval(tup, desc, 6, &nulls_out[6]);
			values[7] = SPI_getbinval(tup, desc, 7, &nulls_out[7]);
			values[8] = SPI_getbinval(tup, desc, 8, &nulls_out[8]);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls_out);
			claimed_tenants[got] = nulls_out[8] ? NULL : DatumGetTextPP(values[8]);
			pgq_flow_claimed(queue, nulls_out[2] ? NULL : DatumGetTextPP(values[2]),
							 claimed_tenants[got], DatumGetInt64(values[0]));
			if (tenants != NULL)
			{
				const char *t = nulls_out[8] ? "" : TextDatumGetCString(values[8]);

				for (int k = 0; k < tenants->n; k++)
					if (strcmp(tenants->cnames[k], t) == 0)
						tenants->got[k]++;
			}
			got++;
		}
		pgq_flow_claims_done(claimed_tenants, got);
		claimed += got;
	} while (tenants == NULL && locked == request && got < locked && ++tries < PGQ_CLAIM_TRIES);
	return claimed;
}

/*
 * grow
 *		An array enlarged (or first allocated) to max elements.
 */
static void *
grow(void *array, Size elem, int max)
{
	return array == NULL ? palloc(elem * max) : repalloc(array, elem * max);
}

/*
 * lane_tenants
 *		The tenants of a lane, remembered per block and priority for
 *		PGQ_TENANTS_TTL (a new tenant of the open block waits that long at
 *		most, unless a pop that found nothing reads them again: fresh).
 */
#define PGQ_TENANTS_TTL	(100 * 1000)

static PgqTenants *
lane_tenants(PgqQueue *queue, PgqBlock *block, Lane *lane, TimestampTz now, bool fresh,
			 Datum *args, char *nulls)
{
	ListCell   *lc;
	PgqTenants *list = NULL;
	SPIPlanPtr	plan;
	MemoryContext old;

	foreach(lc, block->tenant_lists)
	{
		list = lfirst(lc);
		if (list->priority == lane->priority)
			break;
		list = NULL;
	}
	if (list != NULL && !fresh &&
		now - list->at < (block->state == 'o' ? PGQ_TENANTS_TTL : PGQ_LANES_TTL))
		return list;

	plan = pgq_block_plan(queue, block, PGQ_PLAN_TENANTS, tenants_sql,
						  CLAIM_NARGS, claim_argtypes);
	args[1] = Int32GetDatum(lane->priority);
	if (SPI_execute_plan(plan, args, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the tenants of queue \"%s\"", queue->name);
	old = MemoryContextSwitchTo(pgq_cache_memory());
	if (list == NULL)
	{
		list = palloc0(sizeof(PgqTenants));
		list->priority = lane->priority;
		block->tenant_lists = lappend(block->tenant_lists, list);
	}
	list->n = (int) SPI_processed;
	list->names = palloc(sizeof(char *) * Max(list->n, 1));
	for (int r = 0; r < list->n; r++)
		list->names[r] = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1);
	list->at = now;
	MemoryContextSwitchTo(old);
	return list;
}

/*
 * add_tenants
 *		Add the tenants of a lane to its priority's list, with their
 *		weights (the queue's tenant_weights, default 1), all active.
 */
static void
add_tenants(PgqQueue *queue, PgqTenants *list, Tenants *t)
{
	for (int r = 0; r < list->n; r++)
	{
		const char *name = list->names[r];
		int			i;
		JsonbValue	v;

		for (i = 0; i < t->n; i++)
			if (strcmp(t->cnames[i], name) == 0)
				break;
		if (i < t->n)
			continue;
		if (t->n == t->max)
		{
			t->max = Max(16, t->max * 2);
			t->names = grow(t->names, sizeof(Datum), t->max);
			t->cnames = grow(t->cnames, sizeof(char *), t->max);
			t->weights = grow(t->weights, sizeof(int), t->max);
			t->active = grow(t->active, sizeof(bool), t->max);
			t->share = grow(t->share, sizeof(int), t->max);
			t->got = grow(t->got, sizeof(int), t->max);
			t->quotas = grow(t->quotas, sizeof(Datum), t->max);
		}
		t->cnames[i] = pstrdup(name);
		t->names[i] = CStringGetTextDatum(name);
		t->active[i] = true;
		t->weights[i] = 1;
		if (getKeyJsonValueFromContainer(&queue->tenant_weights->root, name, strlen(name), &v) != NULL &&
			v.type == jbvNumeric)
			t->weights[i] = DatumGetInt32(DirectFunctionCall1(numeric_int4,
															  NumericGetDatum(v.val.numeric)));
		t->n++;
	}
}

/*
 * share_out
 *		Deal wanted claims to at most PGQ_TENANTS_PER_POP active tenants,
 *		weighted round-robin from the start-th active tenant on.  Returns
 *		how many tenants got a share (0: none is active).  A pop serves a
 *		window of the tenants, not all of them, so that its cost does not
 *		grow with their number; the rotation moves the next pop's window on
 *		(claim_tenants), and a tenant short of jobs hands its share to the
 *		next ones (claim_fair).
 */
#define PGQ_TENANTS_PER_POP	10

static int
share_out(Tenants *t, int wanted, uint32 start)
{
	int		   *active = palloc(sizeof(int) * Max(t->n, 1));
	int			nactive = 0;
	int			nwindow;
	int			served = 0;

	for (int i = 0; i < t->n; i++)
	{
		t->share[i] = 0;
		t->got[i] = 0;
		if (t->active[i])
			active[nactive++] = i;
	}
	nwindow = Min(nactive, PGQ_TENANTS_PER_POP);
	while (nwindow > 0 && wanted > 0)
		for (int k = 0; k < nwindow && wanted > 0; k++)
		{
			int			i = active[(start + k) % nactive];
			int			give = Min(t->weights[i], wanted);

			served += t->share[i] == 0 ? 1 : 0;
			t->share[i] += give;
			wanted -= give;
		}
	pfree(active);
	return served;
}

/*
 * claim_fair
 *		Claim up to wanted never-claimed jobs of one priority's lanes (older
 *		blocks first), shared out among their tenants.  A tenant that got
 *		less than its share in all lanes has no more to give now (claimed by
 *		others, blocked by keys or limits), and the rest is shared out again
 *		among the others: every round either claims all it wants or retires
 *		a tenant.
 */
static int
claim_fair(PgqQueue *queue, Lane *lanes, int nlanes, Tenants *t, Datum *args, char *nulls,
		   int wanted, uint32 start, ReturnSetInfo *rsinfo)
{
	int			claimed = 0;
	Datum	   *names = palloc(sizeof(Datum) * Max(t->n, 1));
	Datum	   *watermarks = palloc(sizeof(Datum) * Max(t->n, 1));

	while (claimed < wanted && share_out(t, wanted - claimed, start) > 0)
	{
		for (int l = 0; l < nlanes && claimed < wanted; l++)
		{
			PgqBlock   *block = &queue->blocks[lanes[l].block];
			int			n = 0;

			/* the tenants with something left to claim in this lane */
			for (int i = 0; i < t->n; i++)
				if (t->share[i] > t->got[i] && lanes[l].watermarks[i] <= block->last_id)
				{
					names[n] = t->names[i];
					t->quotas[n] = Int32GetDatum(t->share[i] - t->got[i]);
					watermarks[n] = Int64GetDatum(lanes[l].watermarks[i]);
					n++;
				}
			if (n == 0)
				continue;
			args[1] = Int32GetDatum(lanes[l].priority);
			args[7] = PointerGetDatum(construct_array(names, n, TEXTOID, -1, false,
													  TYPALIGN_INT));
			args[8] = PointerGetDatum(construct_array(t->quotas, n, INT4OID, 4, true,
													  TYPALIGN_INT));
			args[9] = PointerGetDatum(construct_array(watermarks, n, INT8OID, 8,
													  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
			nulls[7] = nulls[8] = nulls[9] = ' ';
			claimed += claim(queue, block, PGQ_PLAN_CLAIM_FAIR, claim_fair_sql, args, nulls,
							 wanted - claimed, t, rsinfo);
			nulls[7] = nulls[8] = nulls[9] = 'n';
		}
		for (int i = 0; i < t->n; i++)
			if (t->got[i] < t->share[i])
				t->active[i] = false;
	}
	return claimed;
}

/*
 * advance_lane
 *		Move a lane's watermarks (those of the tenants of t marked in only,
 *		or the one of its jobs without a tenant) up to their first unclaimed
 *		job, within the bound that open pushes allow (see shmem.c).  With
 *		t, waiting[i] tells whether tenant i has an unclaimed job in the
 *		lane.
 */
static void
advance_lane(PgqQueue *queue, Lane *lane, Tenants *t, bool *only, int64 bound, bool *waiting)
{
	PgqBlock   *block = &queue->blocks[lane->block];
	int			max = t != NULL ? Max(t->n, 1) : 1;
	int			n = 0;
	int		   *idx = palloc(sizeof(int) * max);
	Datum	   *names = palloc(sizeof(Datum) * max);
	Datum	   *w = palloc(sizeof(Datum) * max);
	Datum		args[CLAIM_NARGS];
	char		nulls[CLAIM_NARGS];
	SPIPlanPtr	plan;

	if (t == NULL)
	{
		names[0] = CStringGetTextDatum("");
		w[0] = Int64GetDatum(lane->watermark);
		idx[n++] = 0;
	}
	else
		for (int i = 0; i < t->n; i++)
			if (only[i])
			{
				names[n] = t->names[i];
				w[n] = Int64GetDatum(lane->watermarks[i]);
				idx[n++] = i;
			}
	if (n == 0)
		return;

	memset(args, 0, sizeof(args));
	memset(nulls, 'n', sizeof(nulls));
	args[1] = Int32GetDatum(lane->priority);
	args[7] = PointerGetDatum(construct_array(names, n, TEXTOID, -1, false, TYPALIGN_INT));
	args[9] = PointerGetDatum(construct_array(w, n, INT8OID, 8, FLOAT8PASSBYVAL,
											  TYPALIGN_DOUBLE));
	nulls[1] = nulls[7] = nulls[9] = ' ';
	plan = pgq_block_plan(queue, block, PGQ_PLAN_FIRST_UNCLAIMED, first_unclaimed_sql,
						  CLAIM_NARGS, claim_argtypes);
	if (SPI_execute_plan(plan, args, nulls, false, 0) != SPI_OK_SELECT || SPI_processed != n)
		elog(ERROR, "could not read the unclaimed jobs of queue \"%s\"", queue->name);
	for (int r = 0; r < n; r++)
	{
		bool		isnull;
		Datum		first = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1,
										  &isnull);
		int64		target = Min(bound, block->last_id + 1);
		int64	   *watermark = t != NULL ? &lane->watermarks[idx[r]] : &lane->watermark;

		if (!isnull)
			target = Min(target, DatumGetInt64(first));
		if (waiting != NULL && !isnull)
			waiting[idx[r]] = true;
		if (target > *watermark)
		{
			pgq_lane_advance(queue, block, lane->priority, t != NULL ? t->cnames[idx[r]] : "",
							 target);
			*watermark = target;
		}
	}
}

/*
 * claim_tenants
 *		The fair claim of one priority's lanes: their tenants, each lane's
 *		watermarks per tenant, then claim_fair.  With advance, the
 *		watermarks of the tenants the pop's first deal serves are advanced
 *		first, and those without unclaimed jobs drop out of the deal.
 */
static int
claim_tenants(PgqQueue *queue, Lane *lanes, int nlanes, Tenants *t, Datum *args, char *nulls,
			  int wanted, int64 bound, bool advance, TimestampTz now, bool fresh,
			  ReturnSetInfo *rsinfo)
{
	bool	   *window;
	bool	   *waiting;
	uint32		start;

	t->fresh = fresh;
	for (int l = 0; l < nlanes; l++)
	{
		PgqTenants *list = lane_tenants(queue, &queue->blocks[lanes[l].block], &lanes[l],
										now, fresh, args, nulls);

		t->fresh |= list->at == now;
		add_tenants(queue, list, t);
	}
	start = pgq_flow_rotation(Min(Min(t->n, PGQ_TENANTS_PER_POP), wanted));

	/* the tenants of the first deal */
	share_out(t, wanted, start);
	window = palloc(sizeof(bool) * Max(t->n, 1));
	for (int i = 0; i < t->n; i++)
		window[i] = t->share[i] > 0;
	waiting = palloc0(sizeof(bool) * Max(t->n, 1));
	for (int l = 0; l < nlanes; l++)
	{
		PgqBlock   *block = &queue->blocks[lanes[l].block];

		lanes[l].watermarks = palloc(sizeof(int64) * Max(t->n, 1));
		for (int i = 0; i < t->n; i++)
			lanes[l].watermarks[i] = pgq_lane_watermark(queue, block, lanes[l].priority,
														t->cnames[i]);
		if (advance)
			advance_lane(queue, &lanes[l], t, window, bound, waiting);
	}
	if (advance)
		for (int i = 0; i < t->n; i++)
			if (window[i])
				t->active[i] = waiting[i];
	return claim_fair(queue, lanes, nlanes, t, args, nulls, wanted, start, rsinfo);
}

/*
 * pop_once
 *		One attempt to claim up to n jobs of the queue, added to the result.
 *		Returns how many it claimed; *limited, if given, tells whether a cap
 *		or rate limit allowed fewer than n.
 */
static int
pop_once(text *name, int n, Interval *lease_arg, ReturnSetInfo *rsinfo, bool *limited)
{
	PgqQueue   *queue = pgq_queue_get(name);
	Lane	   *lanes;
	int			nlanes;
	int			allowed;
	volatile int remaining;
	int64		bound = -1;
	TimestampTz now;
	Datum		args[CLAIM_NARGS];
	char		nulls[CLAIM_NARGS];
	ClaimProbe	probe;
	bool	   *opened;

	pgq_require_right(queue, PGQ_RIGHT_CONSUME);
	if (queue->paused)
		return 0;

	/*
	 * Only a transaction that has written nothing yet sees no claims of its
	 * own that could still roll back, and only a new snapshot per statement
	 * sees what the bound of open pushes allows: then lane watermarks may
	 * advance and keyed jobs may be claimed.  The bound is read before any
	 * claim statement takes its snapshot.
	 */
	if (!IsolationUsesXactSnapshot())
		bound = pgq_lane_bound(queue);
	allowed = pgq_flow_pop_begin(queue, n, Max(bound, 0),
								 GetTopTransactionIdIfAny() == InvalidTransactionId);
	remaining = allowed;
	if (limited != NULL)
		*limited = allowed < n;

	probe.queue = queue;
	probe.cxt = CurrentMemoryContext;
	InitDirtySnapshot(probe.dirty);
	probe.scans = NIL;
	current_probe = &probe;

	PG_TRY();
	{
		now = GetCurrentTimestamp();
		memset(nulls, ' ', sizeof(nulls));
		args[0] = TimestampTzGetDatum(now);
		args[4] = Int32GetDatum(queue->queue_id);
		args[5] = IntervalPGetDatum(lease_arg ? lease_arg : &queue->default_lease);
		args[6] = BoolGetDatum(queue->tenant_max_in_flight > 0 || queue->tenant_pop_rate > 0);
		nulls[7] = nulls[8] = 'n';

		opened = palloc0(sizeof(bool) * Max(queue->nblocks, 1));
		nlanes = remaining > 0 ? collect_lanes(queue, now, opened, &lanes) : 0;
		for (int i = 0, next; i < nlanes && remaining > 0; i = next)
		{
			Tenants    *tenants = NULL;
			bool		advance = bound > 0 &&
				GetTopTransactionIdIfAny() == InvalidTransactionId;
			int			got;
			int			nfair;

			/* the lanes of one priority: [i, next); shared out if tenants use it */
			for (next = i; next < nlanes && lanes[next].priority == lanes[i].priority; next++)
				if (lanes[next].fair && tenants == NULL)
					tenants = palloc0(sizeof(Tenants));

			for (int l = i; l < next && remaining > 0; l++)
			{
				PgqBlock   *block = &queue->blocks[lanes[l].block];

				if (!pop_open(block, &opened[lanes[l].block]))
					continue;
				if (tenants == NULL && advance)
					advance_lane(queue, &lanes[l], NULL, NULL, bound, NULL);
				args[1] = Int32GetDatum(lanes[l].priority);
				args[3] = Int64GetDatum(lanes[l].watermark);
				remaining -= claim(queue, block, PGQ_PLAN_CLAIM_WAITING, claim_waiting_sql,
								   args, nulls, remaining, NULL, rsinfo);
				/* past the block's end: every job of the lane was claimed once */
				if (tenants == NULL && remaining > 0 && lanes[l].watermark <= block->last_id)
					remaining -= claim(queue, block, PGQ_PLAN_CLAIM_FRESH, claim_fresh_sql,
									   args, nulls, remaining, NULL, rsinfo);
			}
			if (tenants == NULL || remaining <= 0)
				continue;

			/* the lanes of the priority whose blocks the loop above opened */
			nfair = 0;
			for (int l = i; l < next; l++)
				if (opened[lanes[l].block])
					lanes[i + nfair++] = lanes[l];
			got = claim_tenants(queue, lanes + i, nfair, tenants, args, nulls, remaining,
								bound, advance, now, false, rsinfo);
			/* a pop that found nothing reads the tenants again, for new ones */
			if (got == 0 && !tenants->fresh)
			{
				memset(tenants, 0, sizeof(Tenants));
				got = claim_tenants(queue, lanes + i, nfair, tenants, args, nulls, remaining,
									bound, advance, now, true, rsinfo);
			}
			remaining -= got;
		}
		probe_end(&probe);
	}
	PG_FINALLY();
	{
		current_probe = NULL;
		pgq_flow_pop_end(allowed, allowed - remaining);
	}
	PG_END_TRY();
	pgq_note(queue, PGQ_COUNT_POPPED, allowed - remaining);
	return allowed - remaining;
}

/*
 * pgq_pop
 *		SQL: queue_pop(queue, n, lease, wait) claims up to n jobs and
 *		returns them as pgqueue.job rows.  With a wait, a pop that finds
 *		nothing sleeps until jobs may be there (wakeup.c) and tries again,
 *		until it claims something or the wait ends.
 */
Datum
pgq_pop(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	text	   *name;
	int32		n;
	Interval   *lease = NULL;
	Interval   *wait = NULL;
	PgqApiCall	call;

	pgq_require_arg(fcinfo, 0, "queue name");
	pgq_require_arg(fcinfo, 1, "n");
	name = PG_GETARG_TEXT_PP(0);
	n = PG_GETARG_INT32(1);
	if (n < 1 || n > PGQ_MAX_POP)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("n must be between 1 and %d", PGQ_MAX_POP),
				 errdetail("n is %d.", n)));
	if (!PG_ARGISNULL(2))
	{
		lease = PG_GETARG_INTERVAL_P(2);
		pgq_check_lease(lease, "lease");
	}
	if (!PG_ARGISNULL(3))
	{
		wait = PG_GETARG_INTERVAL_P(3);
		if (pgq_interval_sign(wait) < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("wait must not be negative")));
		pgq_check_interval_max(wait, "wait", PGQ_MAX_WAIT);
		if (pgq_interval_sign(wait) == 0)
			wait = NULL;
		else if (IsolationUsesXactSnapshot())
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("queue_pop with a wait requires the READ COMMITTED isolation level"),
					 errdetail("A transaction snapshot would never see the jobs it waits for.")));
	}

	InitMaterializedSRF(fcinfo, 0);
	pgq_api_enter(fcinfo, &call);
	SPI_connect();
	if (pop_once(name, n, lease, rsinfo, NULL) == 0 && wait != NULL)
	{
		PgqWait		w;
		TimestampTz deadline;

		deadline = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
														   TimestampTzGetDatum(GetCurrentTimestamp()),
														   IntervalPGetDatum(wait)));
		pgq_wait_begin(&w, pgq_queue_get(name), deadline);
		PG_TRY();
		{
			for (;;)
			{
				pgq_wait_mark(&w);
				if (pop_once(name, n, lease, rsinfo, &w.limited) > 0 || !pgq_wait_sleep(&w))
					break;
			}
		}
		PG_FINALLY();
		{
			pgq_wait_end(&w);
		}
		PG_END_TRY();
	}
	SPI_finish();
	pgq_api_leave(&call);
	return (Datum) 0;
}
