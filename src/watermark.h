/*-------------------------------------------------------------------------
 *
 * watermark.h
 *	  Open pushes and lane cursors (watermark.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGQUEUE_WATERMARK_H
#define PGQUEUE_WATERMARK_H

#include "cache.h"
#include "note.h"
#include "queueshm.h"

/* what a backend holds in a lane's entry (watermark.c) */
#define PGQ_HOLD_RESERVE	'r'		/* a range whose claim is being written */
#define PGQ_HOLD_REBUILD	'b'		/* the lane, read back */
#define PGQ_HOLD_FRESH		'f'		/* a floor of claims one row each */

/* lanes with a shared cursor; more lanes evict others (GUC) */
extern int	pgq_max_lanes;

/* what pgq_lane_reserve found */
typedef enum PgqLaneStatus
{
	PGQ_LANE_GOT,				/* a range */
	PGQ_LANE_EMPTY,				/* nothing to claim now */
	PGQ_LANE_BUSY,				/* another pop reads the lane back */
	PGQ_LANE_REBUILD			/* read it back from the claim records */
} PgqLaneStatus;

extern Size pgq_watermarks_shmem_size(void);
extern void pgq_watermarks_shmem_request(void);
extern void pgq_watermarks_shmem_init(void);
extern void pgq_watermarks_init(void);

extern void pgq_push_begin(PgqQueue *queue);
extern void pgq_push_allocated(int64 job_id);
extern int64 pgq_lane_bound(PgqQueue *queue);
extern PgqLaneStatus pgq_lane_reserve(PgqQueue *queue, PgqBlock *block, int32 priority,
									  const char *tenant, int want, int64 bound, PgqRange *r);
extern int64 pgq_lane_fresh_begin(PgqQueue *queue, PgqBlock *block, int32 priority,
								  const char *tenant, bool from_start);
extern void pgq_lane_fresh_end(void);
extern void pgq_lane_claimed(PgqQueue *queue, PgqBlock *block, int32 priority,
							 const char *tenant, PgqRange *r, int64 used, int seen,
							 bool lost);
extern void pgq_lane_rebuilt(PgqQueue *queue, PgqBlock *block, int32 priority,
							 const char *tenant, int64 from, int64 cursor, PgqRange *gaps,
							 int ngaps, int64 resume);
extern void pgq_lane_release(PgqQueue *queue, PgqBlock *block, int32 priority,
							 const char *tenant, char kind);
extern void pgq_lane_return(QueueTag queue, int32 block_no, int32 priority,
							const char *tenant, int64 lo, int64 hi);
extern void pgq_lanes_forget(const PgqForget *forget, const int32 *block_no);
extern void pgq_watermarks_apply(PgqNote *note, QueueShared *qs, bool commit);


#endif							/* PGQUEUE_WATERMARK_H */
