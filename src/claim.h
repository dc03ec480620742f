/*-------------------------------------------------------------------------
 *
 * claim.h
 *	  The state of a job: its status rows, or the claim record that holds
 *	  it (claim.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGQUEUE_CLAIM_H
#define PGQUEUE_CLAIM_H

#include "access/genam.h"
#include "utils/rel.h"
#include "utils/snapshot.h"

#include "cache.h"

/* kinds of claim records */
#define PGQ_CLAIM		'c'			/* the claim (seq 0) */
#define PGQ_CLAIM_ACKED	'd'			/* jobs acked */
#define PGQ_CLAIM_LEFT	'x'			/* jobs left for status rows of their own */

/* the state of one job */
typedef struct PgqJobState
{
	int32		seq;			/* transitions so far (0: none) */
	char		state;			/* as in status rows; '\0': never claimed */
	int32		attempt;
	int32		fails;
	TimestampTz at;				/* of the latest transition */
	bool		has_due;
	TimestampTz due_at;			/* lease end, retry or schedule time */
	text	   *error;			/* NULL: none */
	int64		claim_id;		/* the claim that holds it; 0: none */
} PgqJobState;

/*
 * The jobs of a range that have status rows: committed (done), or being
 * written by a transaction still running (pending, with that transaction
 * in writers); each sorted, one entry a job
 */
typedef struct PgqStatusIds
{
	int			ndone;
	int64	   *done;
	int			npending;
	int64	   *pending;
	TransactionId *writers;
} PgqStatusIds;

/* a claim record with what became of its jobs so far */
typedef struct PgqClaim
{
	int64		claim_id;
	int32		priority;
	char		tenant[NAMEDATALEN];	/* '' for the jobs without a tenant */
	int64		lo;
	int64		hi;
	int32		n;				/* jobs it took */
	TimestampTz at;
	TimestampTz lease_until;
	int32		last_seq;		/* of its latest record */
	int32		nacked;			/* jobs acked, left, so far */
	int32		nleft;
	bool		all_acked;		/* an ack of all that were left */
	int			nids;			/* ids of the acks and leaves, in record order
								 * (sorted by id if ids_sorted) */
	int64	   *ids;
	char	   *kinds;			/* PGQ_CLAIM_ACKED or PGQ_CLAIM_LEFT per id */
	TimestampTz *ats;			/* when */
	bool		ids_sorted;		/* ids sorted (pgq_block_states_read) */
} PgqClaim;

/*
 * The states of all the jobs of one block, read at once
 * (pgq_block_states_read); opaque
 */
typedef struct PgqBlockStates
{
	int			nstatus;
	struct PgqLatestStatus *status; /* latest status rows, by job id */
	int			nclaims;
	struct PgqLaneClaim *claims;	/* claims, by lane and range start */
} PgqBlockStates;

/* a scan of one lane's jobs of a block (pgq_jobs_scan_begin) */
typedef struct PgqJobsScan
{
	Relation	index;
	IndexScanDesc scan;
	bool		by_key;			/* through the primary key, passing others by */
} PgqJobsScan;

extern IndexScanDesc pgq_lane_scan(Relation rel, Relation index, Snapshot snapshot,
								   int32 priority, const char *tenant, int64 lo, int64 hi);
extern void pgq_jobs_scan_begin(PgqJobsScan *js, PgqBlock *block, Relation jobs,
								Snapshot snapshot, int32 priority, const char *tenant,
								int64 lo, int64 hi);
extern bool pgq_jobs_scan_next(PgqJobsScan *js, TupleTableSlot *slot);
extern void pgq_jobs_scan_end(PgqJobsScan *js);
extern bool pgq_status_due(PgqBlock *block, const char *states, TimestampTz upto,
						   bool (*ready) (PgqBlock *block, int64 job_id, Snapshot snapshot,
										  void *arg),
						   void *arg);
extern void pgq_job_state(PgqBlock *block, int64 job_id, int32 priority, const char *tenant,
						  Snapshot snapshot, PgqJobState *st);
extern void pgq_block_states_read(Relation status, Relation claims, Snapshot snapshot,
								  PgqBlockStates *states);
extern int64 pgq_slot_job_lane(TupleTableSlot *slot, int32 *priority, char *tenant);
extern void pgq_block_job_state(PgqBlockStates *states, int64 job_id, int32 priority,
								const char *tenant, PgqJobState *st);
extern bool pgq_claim_find(PgqBlock *block, int64 job_id, int32 priority, const char *tenant,
						   Snapshot snapshot, PgqClaim *claim);
extern bool pgq_claim_read(PgqBlock *block, int64 claim_id, Snapshot snapshot, PgqClaim *claim);
extern char pgq_claim_fate(PgqClaim *claim, int64 job_id, TimestampTz *at);
extern bool pgq_in_sorted(const int64 *a, int n, int64 v);
extern int	pgq_claim_held(PgqBlock *block, PgqClaim *claim, Snapshot snapshot, int64 **ids,
						   bool *writing);
extern void pgq_status_ids(PgqBlock *block, int64 lo, int64 hi, PgqStatusIds *ids);
extern bool pgq_claims_overlap(PgqBlock *block, int32 priority, const char *tenant, int64 lo,
							   int64 hi);
extern int64 pgq_claims_lane(PgqBlock *block, int32 priority, const char *tenant, int64 from,
							 PgqRange *gaps, int maxgaps, int *ngaps, int64 *resume);

#endif							/* PGQUEUE_CLAIM_H */
