/*-------------------------------------------------------------------------
 *
 * cache.h
 *	  The backend-local cache of queues and blocks (cache.c), and the
 *	  definitions every file of pgqueue shares: error codes, job states,
 *	  counters, rights.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGQUEUE_CACHE_H
#define PGQUEUE_CACHE_H

#include "postgres.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "compat.h"

/* pgqueue's own SQLSTATEs (class PQ), documented in the README */
#define ERRCODE_PGQ_LEASE_LOST		MAKE_SQLSTATE('P','Q','0','0','1')
#define ERRCODE_PGQ_JOB_NOT_FOUND	MAKE_SQLSTATE('P','Q','0','0','2')
#define ERRCODE_PGQ_INVALID_STATE	MAKE_SQLSTATE('P','Q','0','0','3')
#define ERRCODE_PGQ_RATE_LIMITED	MAKE_SQLSTATE('P','Q','0','0','4')
#define ERRCODE_PGQ_QUEUE_FULL		MAKE_SQLSTATE('P','Q','0','0','5')

/* status row states, as stored in status tables ("char") */
#define PGQ_AVAILABLE	'a'
#define PGQ_SCHEDULED	's'
#define PGQ_EXECUTING	'e'
#define PGQ_SUCCEEDED	'd'
#define PGQ_FAILED		'f'
#define PGQ_ABORTED		'x'

/* attribute numbers of the jobs tables (job_store) */
#define PGQ_JATT_JOB_ID		2
#define PGQ_JATT_KEY		3
#define PGQ_JATT_PRIORITY	4
#define PGQ_JATT_RUN_AT		5
#define PGQ_JATT_ENQUEUED_AT	6
#define PGQ_JATT_PAYLOAD	7
#define PGQ_JATT_TENANT		8
#define PGQ_JATT_LANE_MARK	9	/* the last */

/*
 * The predicate of the lane index of a pushed block (_block_tables): every
 * job but those of the default lane (priority 0, no tenant) not marked.
 */
#define PGQ_LANE_INDEX_PRED "(priority <> 0 OR tenant IS NOT NULL OR lane_mark)"

/*
 * pgq_lane_is_default
 *		Whether a lane (tenant '' for none) is the default lane, which pop
 *		reads through the jobs' primary key.
 */
static inline bool
pgq_lane_is_default(int32 priority, const char *tenant)
{
	return priority == 0 && tenant[0] == '\0';
}

/* attribute numbers of the status tables (status_store) */
#define PGQ_SATT_JOB_ID		2
#define PGQ_SATT_SEQ		3
#define PGQ_SATT_STATE		4
#define PGQ_SATT_ATTEMPT	5
#define PGQ_SATT_FAILS		6
#define PGQ_SATT_AT			7
#define PGQ_SATT_DUE		8
#define PGQ_SATT_ERROR		9

/* attribute numbers of the claims tables (claim_store) */
#define PGQ_CATT_CLAIM_ID	2
#define PGQ_CATT_SEQ		3
#define PGQ_CATT_KIND		4
#define PGQ_CATT_PRIORITY	5
#define PGQ_CATT_TENANT		6
#define PGQ_CATT_LO			7
#define PGQ_CATT_HI			8
#define PGQ_CATT_N			9
#define PGQ_CATT_IDS		10
#define PGQ_CATT_AT			11
#define PGQ_CATT_LEASE		12

/* largest n a single pop may ask for */
#define PGQ_MAX_POP		10000

/* the statements cached per block, prepared on first use */
typedef enum PgqPlanKind
{
	PGQ_PLAN_SCHEDULE,			/* insert scheduled status rows */
	PGQ_PLAN_LANES,				/* distinct priorities, highest first */
	PGQ_PLAN_CLAIM_WAITING,		/* claim due retried/released/scheduled jobs */
	PGQ_PLAN_CLAIM_FRESH,		/* claim never-claimed jobs one row each */
	PGQ_PLAN_CLAIM_DEFAULT,		/* ... of the default lane */
	PGQ_PLAN_TENANTS,			/* tenants of a lane */
	PGQ_PLAN_CLAIM_FAIR,		/* the same, shares per tenant */
	PGQ_PLAN_HOLES,				/* the status rows of a claim's holes */
	PGQ_PLAN_ACK,				/* the transitions from executing by status row */
	PGQ_PLAN_FAIL,
	PGQ_PLAN_EXTEND,
	PGQ_PLAN_RELEASE,
	PGQ_PLAN_CLAIM_ACK,			/* ... and by claim record */
	PGQ_PLAN_CLAIMS_ACK,		/* ... of all that claims hold, one statement */
	PGQ_PLAN_EXIT_FAIL,
	PGQ_PLAN_EXIT_EXTEND,
	PGQ_PLAN_EXIT_RELEASE,
	PGQ_PLAN_EXIT_EXPIRE,
	PGQ_PLAN_EXIT_ABORT,
	PGQ_PLAN_EXPIRE,			/* end expired leases held by status rows */
	PGQ_NUM_PLANS
} PgqPlanKind;

/* priorities of a closed block remembered between pops (pop.c) */
#define PGQ_CACHED_LANES	8

/* one block: a contiguous job id range with its jobs and status tables */
typedef struct PgqBlock
{
	int32		block_no;
	int64		first_id;
	int64		last_id;
	char		state;			/* 'o'pen, 'c'losed or 'd'one */
	char	   *jobs_name;		/* qualified, quoted names of the tables */
	char	   *status_name;
	char	   *claims_name;
	Oid			jobs_relid;
	Oid			status_relid;
	Oid			claims_relid;	/* InvalidOid: the table is missing */
	bool		indexes_known;	/* the indexes below, found on first use */
	Oid			jobs_pkey;		/* jobs (job_id) */
	Oid			key_index;		/* jobs (key, job_id) */
	Oid			jobs_lane;		/* jobs (priority, tenant, job_id) */
	bool		lane_partial;	/* jobs_lane has PGQ_LANE_INDEX_PRED */
	bool		lane_shown;		/* jobs_lane shows the default lane (push.c) */
	Oid			status_pkey;	/* status (job_id, seq) */
	Oid			claims_pkey;	/* claims (claim_id, seq) */
	Oid			claims_lane;	/* claims (priority, tenant, lo) of claims (seq 0) */
	Oid			claims_lease;	/* claims (lease_until) of claims (seq 0) */
	SPIPlanPtr	plans[PGQ_NUM_PLANS];
	int			nlanes;			/* priorities in lanes; -1: not known */
	int32		lanes[PGQ_CACHED_LANES];
	bool		tenants[PGQ_CACHED_LANES];	/* lane has jobs with a tenant */
	TimestampTz lanes_at;		/* when they were read */
	List	   *tenant_lists;	/* PgqTenants of the lanes with tenants (pop.c) */
} PgqBlock;

/* the tenants of one priority of a block, remembered between pops (pop.c) */
typedef struct PgqTenants
{
	int32		priority;
	int			n;
	char	  **names;			/* '' for the jobs without a tenant */
	TimestampTz at;				/* when they were read */
} PgqTenants;

/* a range of job ids, both ends included */
typedef struct PgqRange
{
	int64		lo;
	int64		hi;
} PgqRange;

/* rights on a queue (privilege.c), as bits */
typedef enum PgqRight
{
	PGQ_RIGHT_PUSH = 1,
	PGQ_RIGHT_CONSUME = 2,
	PGQ_RIGHT_ADMIN = 4
} PgqRight;

#define PGQ_RIGHTS_ALL	(PGQ_RIGHT_PUSH | PGQ_RIGHT_CONSUME | PGQ_RIGHT_ADMIN)

/* the rights granted on a queue to one role */
typedef struct PgqGrant
{
	NameData	grantee;
	uint8		rights;
} PgqGrant;

/* one queue's definition and its blocks, ordered by first_id */
typedef struct PgqQueue
{
	char		name[NAMEDATALEN];	/* hash key */
	int32		queue_id;
	NameData	owner;
	int			nacl;
	PgqGrant   *acl;			/* queue_grant's grants, one per role */
	uint8		restricted;		/* rights granted to some role */
	Oid			rights_role;	/* rights of this role, as of rights_gen */
	uint64		rights_gen;
	uint8		rights;
	int64		block_size;
	Interval	default_lease;
	int32		max_attempts;
	Interval	backoff_base;
	Interval	backoff_cap;
	float8		backoff_jitter;
	bool		paused;
	bool		notify;			/* NOTIFY pgqueue, '<name>' on each push */
	/* flow control (flow.c); 0: no limit */
	int32		max_in_flight;
	int32		tenant_max_in_flight;
	int64		max_depth;
	int64		tenant_max_depth;
	float8		push_rate;
	float8		tenant_push_rate;
	float8		pop_rate;
	float8		tenant_pop_rate;
	Jsonb	   *tenant_weights;	/* {"tenant": weight, ...} */
	Oid			seq_relid;
	int			nblocks;
	PgqBlock   *blocks;
} PgqQueue;

/* counters of committed work per queue, since the server started */
typedef enum PgqCounter
{
	PGQ_COUNT_PUSHED,
	PGQ_COUNT_POPPED,
	PGQ_COUNT_ACKED,
	PGQ_COUNT_FAILED,
	PGQ_COUNT_ABORTED,
	PGQ_NUM_COUNTERS
} PgqCounter;

/* cache.c */
/* field4 of pgqueue's advisory lock tags; SQL-level advisory locks use 1 and 2 */
#define PGQ_LOCKTAG_BLOCK	3		/* a block: pushes, fences (cache.c) */
#define PGQ_LOCKTAG_MAINT	4		/* a queue's maintenance (cache.c) */
#define PGQ_LOCKTAG_FLOW	5		/* a queue's committing counts (flow.c) */
#define PGQ_LOCKTAG_RECOUNT	6		/* a queue's recount (flow.c) */

extern void pgq_cache_init(void);
extern char *pgq_installed_version(void);
extern void pgq_cache_pin(void);
extern void pgq_cache_unpin(void);
extern MemoryContext pgq_cache_memory(void);
extern PgqQueue *pgq_queue_get(text *name);
extern PgqQueue *pgq_queue_find(text *name);
extern PgqQueue *pgq_queue_by_id(int32 queue_id);
extern void pgq_block_indexes(PgqBlock *block);
extern PgqBlock *pgq_block_for_id(PgqQueue *queue, int64 job_id);
extern PgqBlock *pgq_block_by_no(PgqQueue *queue, int32 block_no);
extern bool pgq_relation_empty(Oid relid);
extern PgqBlock *pgq_block_for_push(PgqQueue **queue, int64 job_id);
extern bool pgq_block_open(PgqBlock *block, bool wait);
extern void pgq_block_close(PgqBlock *block);
extern void pgq_read_released(void (*read) (void *arg), void *arg);
extern char *pgq_sql_fill(const char *fmt, const char *const *args, int nargs);
extern SPIPlanPtr pgq_block_plan(PgqQueue *queue, PgqBlock *block, PgqPlanKind kind,
								 const char *sql_fmt, int nargs, Oid *argtypes);

#endif							/* PGQUEUE_CACHE_H */
