/*-------------------------------------------------------------------------
 *
 * pop.c
 *	  queue_pop: claim up to n available jobs under a lease.
 *
 * Jobs that were never claimed are claimed in ranges: a pop takes a range
 * of ids of a lane (the jobs of one priority and one tenant in one block)
 * from the lane's cursor (watermark.c), reads the lane's jobs in it and
 * writes one claim record for all those it takes (claim.c), with no row
 * lock and no row per job.  The cursor hands out disjoint ranges, so two
 * pops never claim the same job; a range whose claim rolls back goes back
 * to the lane.  In a range, a job that has status rows is not a fresh
 * job (it was scheduled, or repaired) and is passed over; one whose key is
 * busy cannot be taken now and gets a status row "available" of its own (a
 * hole: it is claimed one row at a time later); a tenant out of room, or a
 * job whose status row is being written (a pop does not wait for another's
 * transaction), ends the range there.
 *
 * Every other job is claimed one status row at a time: due retried,
 * released and scheduled jobs and holes always, never-claimed jobs above
 * a lane's cursor (those that pushes still running hold back from ranges:
 * a push that stays open does not hold back the jobs pushed after it),
 * and never-claimed jobs where there are no claim records (without
 * shared_preload_libraries, under REPEATABLE READ or SERIALIZABLE).  A
 * claim of one row is a compare-and-append: the job row is locked with FOR
 * UPDATE SKIP LOCKED, then status row seq + 1 is inserted with ON CONFLICT
 * DO NOTHING; a consumer whose snapshot predates another consumer's
 * committed claim finds the row unlocked but loses on the unique (job_id,
 * seq) index, so no job is ever leased twice.  If the claiming transaction
 * rolls back, its rows and locks (or its claim record) vanish and the jobs
 * are available at once.
 *
 * Order: higher priority first; within a priority, older blocks first; in a
 * block, due retried, released and scheduled jobs before never-claimed ones,
 * each by job id.
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
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "args.h"
#include "cache.h"
#include "claim.h"
#include "fault.h"
#include "flow.h"
#include "note.h"
#include "privilege.h"
#include "queueshm.h"
#include "rows.h"
#include "wakeup.h"
#include "watermark.h"

PG_FUNCTION_INFO_V1(pgq_pop);
PG_FUNCTION_INFO_V1(pgq_unclaimed);

/* parameters shared by the claim statements of one status row a job */
#define CLAIM_NARGS 9
static Oid	claim_argtypes[CLAIM_NARGS] = {
	TIMESTAMPTZOID,				/* $1 now */
	INT4OID,					/* $2 priority */
	INT4OID,					/* $3 how many */
	INT4OID,					/* $4 queue id */
	INTERVALOID,				/* $5 lease */
	BOOLOID,					/* $6 tenants have limits: pgqueue_internal._take */
	TEXTARRAYOID,				/* $7 tenants ('': none) */
	INT4ARRAYOID,				/* $8 claims per tenant */
	INT8ARRAYOID				/* $9 lowest id per tenant (the fresh claim: [1]) */
};

/*
 * the priorities of a block, highest first, and whether tenants use them,
 * from its lane index (%4$s: the jobs it holds, which show every lane;
 * j.tenant IS NOT NULL tells the planner that it holds those with a
 * tenant, the coalesce is the index condition)
 */
static const char *lanes_sql =
"WITH RECURSIVE l(p) AS ("
"  SELECT max(priority) FROM %1$s WHERE %4$s"
"  UNION ALL"
"  SELECT (SELECT max(priority) FROM %1$s WHERE priority < l.p AND %4$s)"
"  FROM l WHERE l.p IS NOT NULL)"
" SELECT p, EXISTS (SELECT 1 FROM %1$s j"
"                   WHERE j.priority = l.p AND j.tenant IS NOT NULL AND coalesce(j.tenant, '') > '')"
" FROM l WHERE p IS NOT NULL";

/*
 * The never-claimed test of the statements that claim fresh jobs one row
 * each is pgqueue_internal._unclaimed() (below): a probe of the status
 * table's primary key and of the claim records that also sees rows its
 * statement's snapshot does not, those of claims still running and of
 * claims committed since the snapshot was taken.  With a test under the
 * statement's snapshot instead, a consumer locked jobs that another had
 * claimed meanwhile, lost them on the unique index and ran the statement
 * again.  The unique index still decides; the probe only keeps a claim
 * from trying.
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
"    AND (NOT $6 OR (" x ".job_id IS NOT NULL AND pgqueue_internal._take(j.tenant)))"

/*
 * The waiting jobs are looked up by id, one at a time: the join condition
 * is a range of one id, not an equality, which no hash or merge join can
 * use.  With an equality the planner, which costs the flow filters on
 * every job it reads, hashed the whole jobs table of the block (100 000
 * rows, 76 ms a pop) as soon as it expected a few status rows.
 */
static const char *claim_waiting_sql =
"WITH c AS ("
"  SELECT j.job_id, j.key, j.payload, j.priority, j.enqueued_at, j.tenant,"
"         s.seq, s.attempt, s.fails, s.error"
"  FROM %2$s s JOIN %1$s j ON j.job_id >= s.job_id AND j.job_id <= s.job_id"
"  WHERE s.state IN ('a', 's', 'f') AND s.due_at <= $1 AND j.priority = $2"
"    AND NOT EXISTS (SELECT 1 FROM %2$s n WHERE n.job_id = s.job_id AND n.seq > s.seq)"
CLAIM_FLOW_FILTERS("s")
"  ORDER BY s.job_id LIMIT $3"
"  FOR UPDATE OF j SKIP LOCKED),"
" i AS ("
"  INSERT INTO %2$s (queue_id, job_id, seq, state, attempt, fails, at, due_at, error)"
"  SELECT $4, c.job_id, c.seq + 1, 'e', c.attempt + 1, c.fails, $1, $1 + $5, c.error FROM c"
"  ON CONFLICT DO NOTHING"
"  RETURNING job_id, attempt, due_at)"
" SELECT c.job_id, c.key, c.payload, c.priority, i.attempt, c.enqueued_at, i.due_at, c.tenant"
" FROM c LEFT JOIN i ON i.job_id = c.job_id ORDER BY c.job_id";

/*
 * claim never-claimed jobs without a tenant of a lane one status row each,
 * from id $9[1] on: those of priority 0 (the default lane) through the
 * primary key, for the lane index of a pushed block holds few of them; the
 * others through the lane index (j.priority <> 0 tells the planner that
 * it holds them)
 */
#define CLAIM_FRESH_SQL(lane) \
"WITH c AS (" \
"  SELECT j.job_id, j.key, j.payload, j.priority, j.enqueued_at, j.tenant" \
"  FROM %1$s j" \
"  WHERE j.priority = $2" lane " AND coalesce(j.tenant, '') = '' AND j.job_id >= $9[1]" \
"    AND pgqueue_internal._unclaimed(j.job_id, j.priority, j.tenant)" \
CLAIM_FLOW_FILTERS("j") \
"  ORDER BY j.job_id LIMIT $3" \
"  FOR UPDATE SKIP LOCKED)," \
" i AS (" \
"  INSERT INTO %2$s (queue_id, job_id, seq, state, attempt, fails, at, due_at)" \
"  SELECT $4, c.job_id, 1, 'e', 1, 0, $1, $1 + $5 FROM c" \
"  ON CONFLICT DO NOTHING" \
"  RETURNING job_id, attempt, due_at)" \
" SELECT c.job_id, c.key, c.payload, c.priority, i.attempt, c.enqueued_at, i.due_at, c.tenant" \
" FROM c LEFT JOIN i ON i.job_id = c.job_id ORDER BY c.job_id"

static const char *claim_fresh_sql = CLAIM_FRESH_SQL(" AND j.priority <> 0");
static const char *claim_default_sql = CLAIM_FRESH_SQL("");

/* the tenants of a lane, '' for the jobs without one, from its lane index */
static const char *tenants_sql =
"WITH RECURSIVE t(v) AS ("
"  SELECT min(coalesce(tenant, '')) FROM %1$s WHERE priority = $2 AND %4$s"
"  UNION ALL"
"  SELECT (SELECT min(coalesce(tenant, '')) FROM %1$s"
"          WHERE priority = $2 AND coalesce(tenant, '') > t.v AND %4$s)"
"  FROM t WHERE t.v IS NOT NULL)"
" SELECT v FROM t WHERE v IS NOT NULL";

/*
 * claim never-claimed jobs of a lane one status row each, each tenant ($7:
 * not '', see claim_fresh) its quota ($8) from its lowest id on ($9),
 * through the lane index (as in lanes_sql)
 */
static const char *claim_fair_sql =
"WITH c AS ("
"  SELECT y.* FROM unnest($7::text[], $8::int[], $9::int8[]) AS t(tenant, quota, floor)"
"  CROSS JOIN LATERAL ("
"   SELECT j.job_id, j.key, j.payload, j.priority, j.enqueued_at, j.tenant"
"   FROM %1$s j"
"   WHERE j.priority = $2 AND j.tenant IS NOT NULL AND coalesce(j.tenant, '') = t.tenant"
"     AND j.job_id >= t.floor"
"     AND pgqueue_internal._unclaimed(j.job_id, j.priority, j.tenant)"
CLAIM_FLOW_FILTERS("j")
"   ORDER BY j.job_id LIMIT t.quota"
"   FOR UPDATE SKIP LOCKED) y),"
" i AS ("
"  INSERT INTO %2$s (queue_id, job_id, seq, state, attempt, fails, at, due_at)"
"  SELECT $4, c.job_id, 1, 'e', 1, 0, $1, $1 + $5 FROM c"
"  ON CONFLICT DO NOTHING"
"  RETURNING job_id, attempt, due_at)"
" SELECT c.job_id, c.key, c.payload, c.priority, i.attempt, c.enqueued_at, i.due_at, c.tenant"
" FROM c LEFT JOIN i ON i.job_id = c.job_id ORDER BY c.job_id";

/* the status rows "available" of the holes of a claim's range ($3) */
static const char *holes_sql =
"INSERT INTO %2$s (queue_id, job_id, seq, state, attempt, fails, at, due_at)"
" SELECT $1, u.id, 1, 'a', 0, 0, $2, $2 FROM unnest($3::int8[]) AS u(id)"
" ON CONFLICT DO NOTHING";
static Oid	holes_argtypes[3] = {INT4OID, TIMESTAMPTZOID, INT8ARRAYOID};

/* a job of a lane read for a claim of a range */
typedef struct RangeJob
{
	int64		job_id;
	Datum		key;
	bool		key_null;
	Datum		payload;
	TimestampTz enqueued_at;
	Datum		tenant;
	bool		tenant_null;
} RangeJob;

/* rounds of one claim statement that lost jobs to concurrent claims */
#define PGQ_CLAIM_TRIES 8

/*
 * holes one pop makes at most: a range ends before a job whose key is busy
 * once they are made, so that a pop of a lane whose keys are busy does not
 * turn the lane's backlog into status rows (which later pops read through
 * for the jobs their keys let go), and the cursor still passes a run of
 * jobs of one key, this many a pop
 */
#define PGQ_POP_HOLES 100

/* reads of a lane back from its claims in one pop, at most */
#define PGQ_REBUILDS_PER_POP	4

/* gaps between claims kept when a lane is read back (more: read on later) */
#define PGQ_REBUILD_GAPS 8

/* one lane: the jobs of one priority in one block; fair if tenants use it */
typedef struct Lane
{
	int32		priority;
	int			block;			/* index into queue->blocks */
	bool		fair;			/* has jobs with a tenant: claims are shared */
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

/* one pop: what its claims need */
typedef struct Pop
{
	PgqQueue   *queue;
	ReturnSetInfo *rsinfo;
	text	   *qname;
	TimestampTz now;
	Interval   *lease;
	int64		bound;			/* claim records only below this id; 0: none now */
	bool		ranges;			/* claim never-claimed jobs in ranges */
	Datum		args[CLAIM_NARGS];
	char		nulls[CLAIM_NARGS];
	bool	   *opened;			/* per block: opened for this pop */
	int			statements;		/* reads and writes whose locks stay held */
	bool		given_back;		/* gave part of a range it claimed from back */
	int			holes_left;		/* holes it may still make */
} Pop;

/*
 * The open scans of pgqueue_internal._unclaimed during one pop: one per
 * block, each on the status table's primary key with a dirty snapshot.
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
	pgq_block_indexes(block);
	old = MemoryContextSwitchTo(probe->cxt);
	ps = palloc(sizeof(ProbeScan));
	ps->block = block;
	ps->status = table_open(block->status_relid, NoLock);
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
 *		SQL: pgqueue_internal._unclaimed(job_id, priority, tenant), for the
 *		claim statements of queue_pop only: true if the job has no status
 *		row and no claim record holds it, committed or being written (see
 *		the claim statements above).
 */
Datum
pgq_unclaimed(PG_FUNCTION_ARGS)
{
	ProbeScan  *ps;
	ScanKeyData skey;
	bool		found;
	MemoryContext old;
	int64		job_id = PG_GETARG_INT64(0);

	if (current_probe == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pgqueue_internal._unclaimed can only be used by queue_pop")));
	ps = probe_scan(current_probe, job_id);
	ScanKeyInit(&skey, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(job_id));

	/* what the scan keeps between calls (such as killed items) must last */
	old = MemoryContextSwitchTo(current_probe->cxt);
	index_rescan(ps->scan, &skey, 1, NULL, 0);
	found = index_getnext_slot(ps->scan, ForwardScanDirection, ps->slot);
	ExecClearTuple(ps->slot);
	MemoryContextSwitchTo(old);
	if (!found && OidIsValid(ps->block->claims_relid))
	{
		PgqClaim	claim;
		char		tenant[NAMEDATALEN] = "";

		if (!PG_ARGISNULL(2))
			text_to_cstring_buffer(PG_GETARG_TEXT_PP(2), tenant, NAMEDATALEN);
		found = pgq_claim_find(ps->block, job_id, PG_GETARG_INT32(1), tenant,
							   &current_probe->dirty, &claim);
	}
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
 *		if compaction holds or dropped it.  A pop keeps open only the blocks
 *		it claims from or runs a claim statement on, so that one pop over a
 *		long backlog does not hold the locks of every block (lanes_released,
 *		visit_end).
 */
static bool
pop_open(PgqBlock *block, bool *opened)
{
	if (!*opened)
		*opened = pgq_block_open(block, false);
	return *opened;
}

/* a pop's visit of a lane's block: what lets visit_end give its locks back */
typedef struct Visit
{
	bool		was_open;		/* opened by this pop before the visit */
	int			statements;		/* the pop's statements before the visit */
} Visit;

/*
 * visit_begin
 *		Open block b for a pop's claims in one lane (pop_open); false if it
 *		cannot be read now.
 */
static bool
visit_begin(Pop *pop, int b, Visit *v)
{
	v->was_open = pop->opened[b];
	v->statements = pop->statements;
	return pop_open(&pop->queue->blocks[b], &pop->opened[b]);
}

/*
 * visit_end
 *		After a visit that opened block b and ran no statement on it (the
 *		lane's cursors are at their ends, nothing of it is due): its locks
 *		are given back, as for the lanes read of a block.  A pop keeps
 *		locked only the blocks it claimed from or ran a claim statement on.
 */
static void
visit_end(Pop *pop, int b, Visit *v)
{
	if (!v->was_open && pop->opened[b] && pop->statements == v->statements)
	{
		pgq_block_close(&pop->queue->blocks[b]);
		pop->opened[b] = false;
	}
}

/*
 * lanes_read
 *		Read the priorities of an opened block's jobs, highest first, into
 *		*lanes, and whether jobs with a tenant have them into *fair; returns
 *		how many.
 */
static int
lanes_read(PgqQueue *queue, PgqBlock *block, int32 **lanes, bool **fair)
{
	SPIPlanPtr	plan;
	int32	   *read;
	bool	   *read_fair;
	int			rc;
	int			n;

	plan = pgq_block_plan(queue, block, PGQ_PLAN_LANES, lanes_sql, 0, NULL);
	/* not read-only: a waiting pop must see lanes pushed since it started */
	rc = SPI_execute_plan(plan, NULL, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read the priorities of queue \"%s\": %s",
			 queue->name, SPI_result_code_string(rc));
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
	*lanes = read;
	*fair = read_fair;
	n = (int) SPI_processed;
	SPI_freetuptable(SPI_tuptable);
	return n;
}

/* what lanes_released reads, and where */
typedef struct LanesRead
{
	PgqQueue   *queue;
	PgqBlock   *block;
	int32	   *lanes;
	bool	   *fair;
	int			n;				/* -1: the block cannot be read now */
} LanesRead;

/*
 * lanes_released
 *		lanes_read of a block this pop has not opened, under
 *		pgq_read_released: a pop keeps the locks of the blocks it claims
 *		from only, not those of every block of a backlog whose lanes it
 *		reads.
 */
static void
lanes_released(void *arg)
{
	LanesRead  *r = arg;

	r->n = pgq_block_open(r->block, false)
		? lanes_read(r->queue, r->block, &r->lanes, &r->fair) : -1;
}

/*
 * block_lanes
 *		The lanes of a block (lanes_read), or -1 if the block cannot be read
 *		now.  A closed block takes no new jobs but the late pushes that were
 *		running when it filled up, so its priorities are remembered for
 *		PGQ_LANES_TTL; a job of a new priority pushed that late waits that
 *		long at most.  The open block's are remembered for
 *		PGQ_OPEN_LANES_TTL, unless fresh (a pop that found nothing reads
 *		them again, for new ones): a job of a new priority may be passed by
 *		that long, by pops that find others.  *cached tells that they were
 *		remembered.
 */
#define PGQ_LANES_TTL		(1 * USECS_PER_SEC)
#define PGQ_OPEN_LANES_TTL	(100 * 1000)

static int
block_lanes(PgqQueue *queue, int b, TimestampTz now, bool fresh, bool *opened, int32 **lanes,
			bool **fair, bool *cached)
{
	PgqBlock   *block = &queue->blocks[b];
	int			n;

	if (block->nlanes >= 0 && !(fresh && block->state == 'o') &&
		now - block->lanes_at < (block->state == 'o' ? PGQ_OPEN_LANES_TTL : PGQ_LANES_TTL))
	{
		*lanes = block->lanes;
		*fair = block->tenants;
		*cached = true;
		return block->nlanes;
	}
	if (opened[b])
		n = lanes_read(queue, block, lanes, fair);
	else
	{
		LanesRead	r = {queue, block, NULL, NULL, -1};

		pgq_read_released(lanes_released, &r);
		if (r.n < 0)
			return -1;
		n = r.n;
		*lanes = r.lanes;
		*fair = r.fair;
	}
	block->nlanes = -1;
	if (n <= PGQ_CACHED_LANES)
	{
		memcpy(block->lanes, *lanes, sizeof(int32) * n);
		memcpy(block->tenants, *fair, sizeof(bool) * n);
		block->nlanes = n;
		block->lanes_at = now;
	}
	return n;
}

/*
 * collect_lanes
 *		Every lane of every block that may hold unfinished jobs, in claim
 *		order.  Returns the number of lanes.  opened[i] tells whether this
 *		pop opened block i already; *cached, whether some block's lanes
 *		were remembered (block_lanes).
 */
static int
collect_lanes(PgqQueue *queue, TimestampTz now, bool fresh, bool *opened, Lane **lanes_out,
			  bool *cached)
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
			(n = block_lanes(queue, i, now, fresh, opened, &priorities, &fair, cached)) < 0)
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
			nlanes++;
		}
	}
	qsort(lanes, nlanes, sizeof(Lane), lane_cmp);
	*lanes_out = lanes;
	return nlanes;
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
 * tenants_read
 *		Read the tenants of a lane from its opened block into list (made
 *		and added to the block's lists if NULL), in the cache's memory.
 */
static PgqTenants *
tenants_read(Pop *pop, PgqBlock *block, Lane *lane, PgqTenants *list)
{
	SPIPlanPtr	plan;
	MemoryContext old;
	int			rc;

	plan = pgq_block_plan(pop->queue, block, PGQ_PLAN_TENANTS, tenants_sql,
						  CLAIM_NARGS, claim_argtypes);
	pop->args[1] = Int32GetDatum(lane->priority);
	rc = SPI_execute_plan(plan, pop->args, pop->nulls, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read the tenants of queue \"%s\": %s",
			 pop->queue->name, SPI_result_code_string(rc));
	old = MemoryContextSwitchTo(pgq_cache_memory());
	if (list == NULL)
	{
		list = palloc0(sizeof(PgqTenants));
		list->priority = lane->priority;
		block->tenant_lists = lappend(block->tenant_lists, list);
	}
	else
	{
		/* read again: the names read before go */
		for (int r = 0; r < list->n; r++)
			pfree(list->names[r]);
		pfree(list->names);
		list->n = 0;
		list->names = NULL;
	}
	list->names = palloc(sizeof(char *) * Max(SPI_processed, 1));
	for (uint64 r = 0; r < SPI_processed; r++)
		list->names[r] = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1);
	list->n = (int) SPI_processed;
	list->at = pop->now;
	MemoryContextSwitchTo(old);
	SPI_freetuptable(SPI_tuptable);
	return list;
}

/* what tenants_released reads, and where */
typedef struct TenantsRead
{
	Pop		   *pop;
	Lane	   *lane;
	PgqTenants *list;
	bool		read;			/* false: the block cannot be read now */
} TenantsRead;

/*
 * tenants_released
 *		tenants_read of a block this pop has not opened, under
 *		pgq_read_released (as lanes_released).
 */
static void
tenants_released(void *arg)
{
	TenantsRead *r = arg;
	PgqBlock   *block = &r->pop->queue->blocks[r->lane->block];

	r->read = pgq_block_open(block, false);
	if (r->read)
		r->list = tenants_read(r->pop, block, r->lane, r->list);
}

/*
 * lane_tenants
 *		The tenants of a lane, remembered per block and priority for
 *		PGQ_TENANTS_TTL (a new tenant of the open block waits that long at
 *		most, unless a pop that found nothing reads them again: fresh);
 *		NULL if the block cannot be read now (see pop_open).
 */
#define PGQ_TENANTS_TTL	(100 * 1000)

static PgqTenants *
lane_tenants(Pop *pop, Lane *lane, bool fresh)
{
	PgqBlock   *block = &pop->queue->blocks[lane->block];
	ListCell   *lc;
	PgqTenants *list = NULL;
	TenantsRead r;

	foreach(lc, block->tenant_lists)
	{
		list = lfirst(lc);
		if (list->priority == lane->priority)
			break;
		list = NULL;
	}
	if (list != NULL && !fresh &&
		pop->now - list->at < (block->state == 'o' ? PGQ_TENANTS_TTL : PGQ_LANES_TTL))
		return list;
	if (pop->opened[lane->block])
		return tenants_read(pop, block, lane, list);
	r.pop = pop;
	r.lane = lane;
	r.list = list;
	r.read = false;
	pgq_read_released(tenants_released, &r);
	return r.read ? r.list : NULL;
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
 * emit
 *		Add one claimed job to the result (job_id, queue, key, payload,
 *		priority, attempt, enqueued_at, lease_until, tenant), note it for
 *		flow control, and count it for its tenant in tenants, if given.
 */
static void
emit(Pop *pop, Datum *values, bool *nulls, Tenants *tenants)
{
	values[1] = PointerGetDatum(pop->qname);
	nulls[1] = false;
	tuplestore_putvalues(pop->rsinfo->setResult, pop->rsinfo->setDesc, values, nulls);
	pgq_flow_claimed(pop->queue, nulls[2] ? NULL : DatumGetTextPP(values[2]),
					 nulls[8] ? NULL : DatumGetTextPP(values[8]), DatumGetInt64(values[0]));
	if (tenants != NULL)
	{
		const char *t = nulls[8] ? "" : TextDatumGetCString(values[8]);

		for (int k = 0; k < tenants->n; k++)
			if (strcmp(tenants->cnames[k], t) == 0)
				tenants->got[k]++;
	}
}

/*
 * claim
 *		Run one statement that claims jobs one status row each and add the
 *		jobs it claimed to the result; with tenants, count each tenant's
 *		claims in tenants->got.  A job locked but lost to a claim that
 *		committed after this statement's snapshot is not returned; such
 *		losses make the statement run again with a new snapshot, a bounded
 *		number of times (not for the fair claim, whose caller shares out the
 *		rest again).  Returns how many jobs it claimed.
 */
static int
claim(Pop *pop, PgqBlock *block, PgqPlanKind kind, const char *sql, int wanted,
	  Tenants *tenants)
{
	SPIPlanPtr	plan = pgq_block_plan(pop->queue, block, kind, sql, CLAIM_NARGS,
									  claim_argtypes);
	int			claimed = 0;
	int			tries = 0;
	int			request;
	int			locked;
	int			got;
	int			rc;

	pop->statements++;
	do
	{
		text	  **claimed_tenants;

		request = wanted - claimed;
		pop->args[2] = Int32GetDatum(request);
		rc = SPI_execute_plan(plan, pop->args, pop->nulls, false, 0);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "could not claim jobs of queue \"%s\": %s",
				 pop->queue->name, SPI_result_code_string(rc));
		locked = (int) SPI_processed;
		got = 0;
		claimed_tenants = palloc(sizeof(text *) * Max(locked, 1));
		for (int r = 0; r < locked; r++)
		{
			HeapTuple	tup = SPI_tuptable->vals[r];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			Datum		values[9];
			bool		nulls[9];

			/* job_id, key, payload, priority, attempt, enqueued_at, lease, tenant */
			values[5] = SPI_getbinval(tup, desc, 5, &nulls[5]);
			if (nulls[5])
				continue;		/* lost to a concurrent claim */
			values[0] = SPI_getbinval(tup, desc, 1, &nulls[0]);
			values[2] = SPI_getbinval(tup, desc, 2, &nulls[2]);
			values[3] = SPI_getbinval(tup, desc, 3, &nulls[3]);
			values[4] = SPI_getbinval(tup, desc, 4, &nulls[4]);
			values[6] = SPI_getbinval(tup, desc, 6, &nulls[6]);
			values[7] = SPI_getbinval(tup, desc, 7, &nulls[7]);
			values[8] = SPI_getbinval(tup, desc, 8, &nulls[8]);
			claimed_tenants[got++] = nulls[8] ? NULL : DatumGetTextPP(values[8]);
			emit(pop, values, nulls, tenants);
		}
		pgq_flow_claims_done(claimed_tenants, got);
		SPI_freetuptable(SPI_tuptable);
		claimed += got;
	} while (tenants == NULL && locked == request && got < locked && ++tries < PGQ_CLAIM_TRIES);
	return claimed;
}

/*
 * rebuild_lane
 *		Read a lane's cursor and the gaps between its claims back from its
 *		claim records (those from id from on), for a lane that does not
 *		know them (watermark.c).
 */
static void
rebuild_lane(Pop *pop, PgqBlock *block, int32 priority, const char *tenant, int64 from)
{
	PgqRange	gaps[PGQ_REBUILD_GAPS];
	int			ngaps;
	int64		resume;
	int64		cursor;

	PG_TRY();
	{
		cursor = pgq_claims_lane(block, priority, tenant, from, gaps, PGQ_REBUILD_GAPS, &ngaps,
								 &resume);
	}
	PG_CATCH();
	{
		pgq_lane_release(pop->queue, block, priority, tenant, PGQ_HOLD_REBUILD);
		PG_RE_THROW();
	}
	PG_END_TRY();
	pgq_lane_rebuilt(pop->queue, block, priority, tenant, from, cursor, gaps, ngaps, resume);
}

/*
 * read_range
 *		Read up to limit jobs of a lane (block, priority, tenant) with ids
 *		in [lo, hi], in id order, into jobs, as a snapshot taken now sees
 *		them (after the bound of open pushes was read).  Returns how many.
 */
static int
read_range(PgqBlock *block, int32 priority, const char *tenant, int64 lo, int64 hi,
		   int limit, RangeJob *jobs)
{
	Snapshot	snap = RegisterSnapshot(GetLatestSnapshot());
	Relation	rel = table_open(block->jobs_relid, AccessShareLock);
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	PgqJobsScan scan;
	int			n = 0;

	pgq_jobs_scan_begin(&scan, block, rel, snap, priority, tenant, lo, hi);
	while (n < limit && pgq_jobs_scan_next(&scan, slot))
	{
		RangeJob   *j = &jobs[n++];
		bool		isnull;
		Datum		d;

		j->job_id = DatumGetInt64(slot_getattr(slot, PGQ_JATT_JOB_ID, &isnull));
		d = slot_getattr(slot, PGQ_JATT_KEY, &j->key_null);
		j->key = j->key_null ? (Datum) 0 : datumCopy(d, false, -1);
		j->payload = datumCopy(slot_getattr(slot, PGQ_JATT_PAYLOAD, &isnull), false, -1);
		j->enqueued_at = DatumGetTimestampTz(slot_getattr(slot, PGQ_JATT_ENQUEUED_AT, &isnull));
		d = slot_getattr(slot, PGQ_JATT_TENANT, &j->tenant_null);
		j->tenant = j->tenant_null ? (Datum) 0 : datumCopy(d, false, -1);
	}
	pgq_jobs_scan_end(&scan);
	ExecDropSingleTupleTableSlot(slot);
	table_close(rel, AccessShareLock);
	UnregisterSnapshot(snap);
	return n;
}

/*
 * write_claim
 *		Insert the claim record of ntake jobs of a lane, taken in [lo, hi]
 *		from job claim_id on, leased for the pop's lease from now.  Returns
 *		the lease's end.
 */
static TimestampTz
write_claim(Pop *pop, PgqBlock *block, int32 priority, const char *tenant, int64 claim_id,
			int64 lo, int64 hi, int ntake)
{
	Relation	rel = table_open(block->claims_relid, RowExclusiveLock);
	TupleTableSlot **slot;
	TimestampTz at = GetCurrentTimestamp();
	TimestampTz lease_until;

	if (RelationGetDescr(rel)->natts != PGQ_CATT_LEASE)
		elog(ERROR, "the claims table of block %d of queue \"%s\" has %d columns, not %d",
			 block->block_no, pop->queue->name, RelationGetDescr(rel)->natts, PGQ_CATT_LEASE);
	lease_until = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
														  TimestampTzGetDatum(at),
														  IntervalPGetDatum(pop->lease)));
	slot = pgq_rows_slots(rel, 1);
	memset(slot[0]->tts_isnull, false, sizeof(bool) * PGQ_CATT_LEASE);
	slot[0]->tts_values[0] = Int32GetDatum(pop->queue->queue_id);
	slot[0]->tts_values[PGQ_CATT_CLAIM_ID - 1] = Int64GetDatum(claim_id);
	slot[0]->tts_values[PGQ_CATT_SEQ - 1] = Int32GetDatum(0);
	slot[0]->tts_values[PGQ_CATT_KIND - 1] = CharGetDatum(PGQ_CLAIM);
	slot[0]->tts_values[PGQ_CATT_PRIORITY - 1] = Int32GetDatum(priority);
	slot[0]->tts_values[PGQ_CATT_TENANT - 1] = CStringGetTextDatum(tenant);
	slot[0]->tts_isnull[PGQ_CATT_TENANT - 1] = tenant[0] == '\0';
	slot[0]->tts_values[PGQ_CATT_LO - 1] = Int64GetDatum(lo);
	slot[0]->tts_values[PGQ_CATT_HI - 1] = Int64GetDatum(hi);
	slot[0]->tts_values[PGQ_CATT_N - 1] = Int32GetDatum(ntake);
	slot[0]->tts_isnull[PGQ_CATT_IDS - 1] = true;
	slot[0]->tts_values[PGQ_CATT_AT - 1] = TimestampTzGetDatum(at);
	slot[0]->tts_values[PGQ_CATT_LEASE - 1] = TimestampTzGetDatum(lease_until);
	ExecStoreVirtualTuple(slot[0]);
	pgq_rows_insert(rel, slot, 1);
	pgq_rows_free(slot, 1);
	table_close(rel, NoLock);
	return lease_until;
}

/*
 * claim_reserved
 *		Claim the jobs of a lane in a reserved range r, up to wanted: read
 *		them, pass over those with status rows, make holes of those whose
 *		key is busy, stop at a tenant out of room or at a job whose status
 *		row is being written, and write one claim record for the others
 *		(then the holes' rows, so that a pop that claims rows of their own
 *		finds the record first).  The part of the range not used goes back
 *		to the lane, and noted (the range as this transaction's note gives
 *		it back if it aborts) shrinks to the part used.  Returns how many it
 *		claimed; *stop tells that something ended the range, *limited that
 *		it was a limit that a claim of the lane's jobs one row each would
 *		meet too (the tenant's room, the pop's holes).
 */
static int
claim_reserved(Pop *pop, PgqBlock *block, int32 priority, const char *tenant, PgqRange *r,
			   PgqReservation *noted, int wanted, Tenants *tenants, bool *stop,
			   bool *limited)
{
	RangeJob   *rows;
	int			nrows;
	int64		used = r->hi;
	int		   *take;
	int			ntake = 0;
	Datum	   *holes;
	int			nholes = 0;
	text	  **claimed_tenants;
	TimestampTz lease_until = 0;
	bool		lost = false;
	int			seen;

	*stop = false;
	pop->statements++;
	PG_TRY();
	{
		PgqStatusIds status;

		rows = palloc(sizeof(RangeJob) * wanted);
		nrows = read_range(block, priority, tenant, r->lo, r->hi, wanted, rows);
		seen = nrows;
		if (nrows == wanted)
			used = rows[nrows - 1].job_id;

		/*
		 * a range of a lane that a claim already holds part of: a range
		 * given back twice (its claim aborted after the lane was read back,
		 * which found the range a gap, before the abort gave it back).
		 * Nothing is taken, and the lane is read back again.
		 */
		if (nrows > 0 && pgq_claims_overlap(block, priority, tenant, r->lo, used))
		{
			lost = true;
			used = r->lo - 1;
			*stop = true;
			nrows = 0;
		}

		/* jobs with status rows, committed (not fresh) or being written */
		pgq_status_ids(block, r->lo, used, &status);
		take = palloc(sizeof(int) * Max(nrows, 1));
		holes = palloc(sizeof(Datum) * Max(nrows, 1));
		claimed_tenants = palloc(sizeof(text *) * Max(nrows, 1));
		for (int i = 0; i < nrows; i++)
		{
			RangeJob   *j = &rows[i];

			if (pgq_in_sorted(status.done, status.ndone, j->job_id))
				continue;

			/*
			 * a status row being written (a claim of one row, a repair):
			 * the range ends before the job, rather than wait for its
			 * writer; a later pop finds out what became of it
			 */
			if (pgq_in_sorted(status.pending, status.npending, j->job_id))
			{
				used = j->job_id - 1;
				*stop = true;
				break;
			}
			if (!j->key_null && !pgq_flow_key_ready(DatumGetTextPP(j->key), j->job_id))
			{
				/* past the pop's holes, the range ends before the job */
				if (pop->holes_left == 0)
				{
					used = j->job_id - 1;
					*stop = *limited = true;
					break;
				}
				pop->holes_left--;
				holes[nholes++] = Int64GetDatum(j->job_id);
				continue;
			}
			if (!j->tenant_null && !pgq_flow_take(DatumGetTextPP(j->tenant)))
			{
				used = j->job_id - 1;
				*stop = *limited = true;
				break;
			}
			claimed_tenants[ntake] = j->tenant_null ? NULL : DatumGetTextPP(j->tenant);
			take[ntake++] = i;
		}
		pgq_fault_at("pop_range");

		if (ntake > 0)
			lease_until = write_claim(pop, block, priority, tenant, rows[take[0]].job_id,
									  r->lo, used, ntake);
		if (nholes > 0)
		{
			Datum		args[3];
			SPIPlanPtr	plan = pgq_block_plan(pop->queue, block, PGQ_PLAN_HOLES, holes_sql,
											  3, holes_argtypes);
			int			rc;

			args[0] = Int32GetDatum(pop->queue->queue_id);
			args[1] = TimestampTzGetDatum(pop->now);
			args[2] = PointerGetDatum(construct_array(holes, nholes, INT8OID, 8,
													  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
			rc = SPI_execute_plan(plan, args, NULL, false, 0);
			if (rc != SPI_OK_INSERT)
				elog(ERROR, "could not write the holes of a claim of queue \"%s\": %s",
					 pop->queue->name, SPI_result_code_string(rc));
		}
	}
	PG_CATCH();
	{
		/* the (sub)transaction aborts and gives the whole range back */
		pgq_lane_release(pop->queue, block, priority, tenant, PGQ_HOLD_RESERVE);
		PG_RE_THROW();
	}
	PG_END_TRY();

	/* the rest of the range goes back now, this part if the claim aborts */
	while (seen > 0 && rows[seen - 1].job_id > used)
		seen--;
	pgq_lane_claimed(pop->queue, block, priority, tenant, r, used, seen, lost);
	noted->hi = used;
	pop->given_back |= ntake > 0 && used < r->hi;
	for (int k = 0; k < ntake; k++)
	{
		RangeJob   *j = &rows[take[k]];
		Datum		values[9];
		bool		nulls[9];

		memset(nulls, false, sizeof(nulls));
		values[0] = Int64GetDatum(j->job_id);
		values[2] = j->key;
		nulls[2] = j->key_null;
		values[3] = j->payload;
		values[4] = Int32GetDatum(priority);
		values[5] = Int32GetDatum(1);
		values[6] = TimestampTzGetDatum(j->enqueued_at);
		values[7] = TimestampTzGetDatum(lease_until);
		values[8] = j->tenant;
		nulls[8] = j->tenant_null;
		emit(pop, values, nulls, tenants);
	}
	pgq_flow_claims_done(claimed_tenants, ntake);

	/* a pop may read many ranges: what each read is freed as it is done */
	for (int i = 0; i < nrows; i++)
	{
		pfree(DatumGetPointer(rows[i].payload));
		if (!rows[i].key_null)
			pfree(DatumGetPointer(rows[i].key));
		if (!rows[i].tenant_null)
			pfree(DatumGetPointer(rows[i].tenant));
	}
	pfree(rows);
	pfree(take);
	pfree(holes);
	pfree(claimed_tenants);
	return ntake;
}

/*
 * claim_range
 *		Claim up to wanted never-claimed jobs of a lane (block, priority,
 *		tenant) in ranges from its cursor, one claim record each.  Returns
 *		how many; *limited tells that a limit ended the ranges, which would
 *		end a claim of the lane one row a job too (claim_reserved): the
 *		caller then leaves the lane's rows to later pops rather than read
 *		through all of them for nothing.
 */
static int
claim_range(Pop *pop, PgqBlock *block, int32 priority, const char *tenant, int wanted,
			Tenants *tenants, bool *limited)
{
	int			claimed = 0;
	int			rebuilds = 0;
	bool		stop = false;

	*limited = false;

	while (claimed < wanted && !stop)
	{
		PgqRange	r;

		CHECK_FOR_INTERRUPTS();
		switch (pgq_lane_reserve(pop->queue, block, priority, tenant, wanted - claimed,
								 pop->bound, &r))
		{
			case PGQ_LANE_GOT:
				/* noted at once: an abort, even by FATAL, gives it back */
				claimed += claim_reserved(pop, block, priority, tenant, &r,
										  pgq_note_reservation(pop->queue, block, priority,
															   tenant, r.lo, r.hi),
										  wanted - claimed, tenants, &stop, limited);
				break;
			case PGQ_LANE_REBUILD:
				/* a lane read back in parts: the next pops read on */
				rebuild_lane(pop, block, priority, tenant, r.lo);
				stop = ++rebuilds == PGQ_REBUILDS_PER_POP;
				break;
			case PGQ_LANE_EMPTY:
			case PGQ_LANE_BUSY:
				stop = true;
				break;
		}
	}
	return claimed;
}

/*
 * by_ranges
 *		Whether this pop claims the never-claimed jobs of a block in ranges
 *		(claim records), not one status row each.
 */
static bool
by_ranges(Pop *pop, PgqBlock *block)
{
	return pop->ranges && OidIsValid(block->claims_relid);
}

/*
 * fresh_floor
 *		The lowest id from which a pop claims never-claimed jobs of a lane
 *		one status row each, registered in the lane until
 *		pgq_lane_fresh_end (watermark.c): the lane's cursor where claims are
 *		written in ranges (the jobs above it that pushes still running hold
 *		back from ranges), else the block's first id; -1 to pass the lane
 *		by now.
 */
static int64
fresh_floor(Pop *pop, PgqBlock *block, int32 priority, const char *tenant)
{
	return pgq_lane_fresh_begin(pop->queue, block, priority, tenant, !by_ranges(pop, block));
}

/*
 * claim_fresh
 *		Claim up to wanted never-claimed jobs without a tenant of a lane
 *		(block, priority) one status row each, from id floor on; count them
 *		in tenants, if given.
 */
static int
claim_fresh(Pop *pop, PgqBlock *block, int32 priority, int64 floor, int wanted,
			Tenants *tenants)
{
	Datum		f = Int64GetDatum(floor);

	pop->args[1] = Int32GetDatum(priority);
	pop->args[8] = PointerGetDatum(construct_array(&f, 1, INT8OID, 8, FLOAT8PASSBYVAL,
												   TYPALIGN_DOUBLE));
	if (pgq_lane_is_default(priority, ""))
		return claim(pop, block, PGQ_PLAN_CLAIM_DEFAULT, claim_default_sql, wanted, tenants);
	return claim(pop, block, PGQ_PLAN_CLAIM_FRESH, claim_fresh_sql, wanted, tenants);
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
claim_fair(Pop *pop, Lane *lanes, int nlanes, Tenants *t, int wanted, uint32 start)
{
	int			claimed = 0;
	Datum	   *names = palloc(sizeof(Datum) * Max(t->n, 1));
	Datum	   *floors = palloc(sizeof(Datum) * Max(t->n, 1));
	bool	   *limited = palloc0(sizeof(bool) * Max(t->n, 1));

	while (claimed < wanted && share_out(t, wanted - claimed, start) > 0)
	{
		for (int l = 0; l < nlanes && claimed < wanted; l++)
		{
			PgqBlock   *block = &pop->queue->blocks[lanes[l].block];
			int			n = 0;
			Visit		visit;

			if (!visit_begin(pop, lanes[l].block, &visit))
				continue;
			memset(limited, false, sizeof(bool) * t->n);
			if (by_ranges(pop, block))
				for (int i = 0; i < t->n && claimed < wanted; i++)
					if (t->share[i] > t->got[i])
						claimed += claim_range(pop, block, lanes[l].priority, t->cnames[i],
											   Min(t->share[i] - t->got[i], wanted - claimed),
											   t, &limited[i]);

			/*
			 * the tenants with something left to claim in this lane, one row
			 * each: above the lane's cursor if it has one and no limit ended
			 * their ranges; the jobs without a tenant by a statement of their
			 * own
			 */
			for (int i = 0; i < t->n && claimed < wanted; i++)
				if (t->share[i] > t->got[i] && !limited[i])
				{
					int64		floor = fresh_floor(pop, block, lanes[l].priority, t->cnames[i]);

					if (floor < 0)
						continue;
					if (t->cnames[i][0] == '\0')
					{
						claimed += claim_fresh(pop, block, lanes[l].priority, floor,
											   Min(t->share[i] - t->got[i], wanted - claimed),
											   t);
						continue;
					}
					names[n] = t->names[i];
					t->quotas[n] = Int32GetDatum(t->share[i] - t->got[i]);
					floors[n] = Int64GetDatum(floor);
					n++;
				}
			if (n > 0)
			{
				pop->args[1] = Int32GetDatum(lanes[l].priority);
				pop->args[6] = PointerGetDatum(construct_array(names, n, TEXTOID, -1, false,
															   TYPALIGN_INT));
				pop->args[7] = PointerGetDatum(construct_array(t->quotas, n, INT4OID, 4, true,
															   TYPALIGN_INT));
				pop->args[8] = PointerGetDatum(construct_array(floors, n, INT8OID, 8,
															   FLOAT8PASSBYVAL,
															   TYPALIGN_DOUBLE));
				pop->nulls[6] = pop->nulls[7] = ' ';
				claimed += claim(pop, block, PGQ_PLAN_CLAIM_FAIR, claim_fair_sql,
								 wanted - claimed, t);
				pop->nulls[6] = pop->nulls[7] = 'n';
			}
			pgq_lane_fresh_end();
			visit_end(pop, lanes[l].block, &visit);
		}
		for (int i = 0; i < t->n; i++)
			if (t->got[i] < t->share[i])
				t->active[i] = false;
	}
	return claimed;
}

/*
 * claim_tenants
 *		The fair claim of one priority's lanes: their tenants, where the
 *		deal starts (a rotation shared by the queue's pops), then claim_fair.
 */
static int
claim_tenants(Pop *pop, Lane *lanes, int nlanes, Tenants *t, int wanted, bool fresh)
{
	t->fresh = fresh;
	for (int l = 0; l < nlanes; l++)
	{
		PgqTenants *list = lane_tenants(pop, &lanes[l], fresh);

		if (list == NULL)
			continue;
		t->fresh |= list->at == pop->now;
		add_tenants(pop->queue, list, t);
	}
	return claim_fair(pop, lanes, nlanes, t, wanted,
					  pgq_flow_rotation(Min(Min(t->n, PGQ_TENANTS_PER_POP), wanted)));
}

/*
 * job_ready
 *		For pgq_status_due: whether a job is of the lane's priority (*arg)
 *		and may be claimed now as far as its key says (a job without one
 *		may), read through the jobs table's primary key with pgq_status_due's
 *		snapshot, without keeping a lock.  Tenants' room is not looked at: the claim statement finds
 *		out.
 */
static bool
job_ready(PgqBlock *block, int64 job_id, Snapshot snapshot, void *arg)
{
	int32		priority = *(int32 *) arg;
	Relation	jobs = table_open(block->jobs_relid, AccessShareLock);
	Relation	pkey = index_open(block->jobs_pkey, AccessShareLock);
	TupleTableSlot *slot = table_slot_create(jobs, NULL);
	ScanKeyData skey;
	IndexScanDesc scan;
	bool		ready = false;

	ScanKeyInit(&skey, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(job_id));
	scan = index_beginscan(jobs, pkey, snapshot, 1, 0);
	index_rescan(scan, &skey, 1, NULL, 0);
	if (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		Datum		key;

		ready = DatumGetInt32(slot_getattr(slot, PGQ_JATT_PRIORITY, &isnull)) == priority;
		key = slot_getattr(slot, PGQ_JATT_KEY, &isnull);
		if (ready && !isnull)
			ready = pgq_flow_key_ready(DatumGetTextPP(key), job_id);
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(pkey, AccessShareLock);
	table_close(jobs, AccessShareLock);
	return ready;
}

/*
 * claim_lanes
 *		Claim up to wanted jobs of the lanes (in claim order) for a pop:
 *		each lane's due waiting jobs, then its never-claimed ones, in ranges
 *		and one status row each, or shared out among tenants.  Returns how
 *		many.
 */
static int
claim_lanes(Pop *pop, Lane *lanes, int nlanes, int wanted)
{
	PgqQueue   *queue = pop->queue;
	int			remaining = wanted;

	for (int i = 0, next; i < nlanes && remaining > 0; i = next)
	{
		Tenants    *tenants = NULL;
		int			got;

		/* the lanes of one priority: [i, next); shared out if tenants use it */
		for (next = i; next < nlanes && lanes[next].priority == lanes[i].priority; next++)
			if (lanes[next].fair && tenants == NULL)
				tenants = palloc0(sizeof(Tenants));

		for (int l = i; l < next && remaining > 0; l++)
		{
			PgqBlock   *block = &queue->blocks[lanes[l].block];
			Visit		visit;
			int64		floor;
			bool		limited;

			if (!visit_begin(pop, lanes[l].block, &visit))
				continue;
			pop->args[1] = Int32GetDatum(lanes[l].priority);

			/*
			 * jobs to claim again, if the block has status rows at all and
			 * (in a block not opened yet) one of them is due, of this lane
			 * and let go by its key
			 */
			if (!pgq_relation_empty(block->status_relid) &&
				(visit.was_open ||
				 pgq_status_due(block, "asf", pop->now, job_ready, &lanes[l].priority)))
				remaining -= claim(pop, block, PGQ_PLAN_CLAIM_WAITING, claim_waiting_sql,
								   remaining, NULL);
			if (tenants != NULL || remaining <= 0)
			{
				visit_end(pop, lanes[l].block, &visit);
				continue;
			}
			limited = false;
			if (by_ranges(pop, block))
				remaining -= claim_range(pop, block, lanes[l].priority, "", remaining, NULL,
										 &limited);
			if (remaining > 0 && !limited &&
				(floor = fresh_floor(pop, block, lanes[l].priority, "")) >= 0)
			{
				remaining -= claim_fresh(pop, block, lanes[l].priority, floor, remaining, NULL);
				pgq_lane_fresh_end();
			}
			visit_end(pop, lanes[l].block, &visit);
		}
		if (tenants == NULL || remaining <= 0)
			continue;

		got = claim_tenants(pop, lanes + i, next - i, tenants, remaining, false);
		/* a pop that found nothing reads the tenants again, for new ones */
		if (got == 0 && !tenants->fresh)
		{
			memset(tenants, 0, sizeof(Tenants));
			got = claim_tenants(pop, lanes + i, next - i, tenants, remaining, true);
		}
		remaining -= got;
	}
	return wanted - remaining;
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
	Pop			pop;
	ClaimProbe	probe;
	bool		cached = false;

	pgq_require_right(queue, PGQ_RIGHT_CONSUME);
	if (queue->paused)
		return 0;

	/*
	 * Claim records need a new snapshot per statement, taken after the
	 * bound of open pushes was read: only then does a range below the
	 * bound hold every job its claim must see.  Keyed jobs need the same.
	 */
	memset(&pop, 0, sizeof(pop));
	pop.queue = queue;
	pop.rsinfo = rsinfo;
	pop.qname = cstring_to_text(queue->name);
	pop.ranges = pgq_shmem_ready() && !IsolationUsesXactSnapshot();
	if (pop.ranges)
		pop.bound = pgq_lane_bound(queue);
	allowed = pgq_flow_pop_begin(queue, n, pop.bound);
	remaining = allowed;
	pop.holes_left = PGQ_POP_HOLES;
	if (limited != NULL)
		*limited = allowed < n;

	probe.queue = queue;
	probe.cxt = CurrentMemoryContext;
	InitDirtySnapshot(probe.dirty);
	probe.scans = NIL;
	current_probe = &probe;

	PG_TRY();
	{
		pop.now = GetCurrentTimestamp();
		pop.lease = lease_arg ? lease_arg : &queue->default_lease;
		memset(pop.nulls, ' ', sizeof(pop.nulls));
		pop.args[0] = TimestampTzGetDatum(pop.now);
		pop.args[3] = Int32GetDatum(queue->queue_id);
		pop.args[4] = IntervalPGetDatum(pop.lease);
		pop.args[5] = BoolGetDatum(queue->tenant_max_in_flight > 0 || queue->tenant_pop_rate > 0);
		pop.nulls[6] = pop.nulls[7] = 'n';

		pop.opened = palloc0(sizeof(bool) * Max(queue->nblocks, 1));
		nlanes = remaining > 0
			? collect_lanes(queue, pop.now, false, pop.opened, &lanes, &cached) : 0;
		remaining -= claim_lanes(&pop, lanes, nlanes, remaining);
		if (remaining == allowed && cached)
		{
			nlanes = collect_lanes(queue, pop.now, true, pop.opened, &lanes, &cached);
			remaining -= claim_lanes(&pop, lanes, nlanes, remaining);
		}
		probe_end(&probe);
	}
	PG_FINALLY();
	{
		current_probe = NULL;
		pgq_lane_fresh_end();
		pgq_flow_pop_end(allowed, allowed - remaining);
	}
	PG_END_TRY();
	pgq_note(queue, PGQ_COUNT_POPPED, allowed - remaining);
	if (pop.given_back)
		pgq_wakeup_given_back(queue);
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
	/* on a standby too, before anything is reserved or waited for */
	PreventCommandIfReadOnly("queue_pop()");

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
			/* what each attempt leaves behind is freed before the next */
			MemoryContext attempt = AllocSetContextCreate(CurrentMemoryContext,
														  "pgqueue pop attempt",
														  ALLOCSET_DEFAULT_SIZES);

			for (;;)
			{
				MemoryContext old = MemoryContextSwitchTo(attempt);
				int			got;

				pgq_wait_mark(&w);
				got = pop_once(name, n, lease, rsinfo, &w.limited);
				MemoryContextSwitchTo(old);
				MemoryContextReset(attempt);
				if (got > 0 || !pgq_wait_sleep(&w))
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
