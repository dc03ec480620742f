/*-------------------------------------------------------------------------
 *
 * finish.h
 *	  Jobs leaving a claim outside the API calls (finish.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGQUEUE_FINISH_H
#define PGQUEUE_FINISH_H

#include "cache.h"
#include "claim.h"

extern int	pgq_claim_leave(PgqQueue *queue, PgqBlock *block, PgqClaim *claim, int64 *ids,
							int nids, text *reason);

#endif							/* PGQUEUE_FINISH_H */
