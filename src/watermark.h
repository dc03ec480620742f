/*-------------------------------------------------------------------------
 *
 * watermark.h
 *	  Open pushes and lane watermarks (watermark.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGQUEUE_WATERMARK_H
#define PGQUEUE_WATERMARK_H

#include "cache.h"
#include "queueshm.h"

/* lanes with a shared watermark; more lanes evict others (GUC) */
extern int	pgq_max_lanes;

extern Size pgq_watermarks_shmem_size(void);
extern void pgq_watermarks_shmem_request(void);
extern void pgq_watermarks_shmem_init(void);
extern void pgq_watermarks_init(void);

extern void pgq_push_begin(PgqQueue *queue);
extern void pgq_push_allocated(int64 job_id);
extern int64 pgq_lane_bound(PgqQueue *queue);
extern int64 pgq_lane_watermark(PgqQueue *queue, PgqBlock *block, int32 priority,
								const char *tenant);
extern void pgq_lane_advance(PgqQueue *queue, PgqBlock *block, int32 priority,
							 const char *tenant, int64 watermark);
extern void pgq_lanes_forget(const PgqForget *forget, const int32 *block_no);

#endif							/* PGQUEUE_WATERMARK_H */
