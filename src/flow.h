/*-------------------------------------------------------------------------
 *
 * flow.h
 *	  Flow control: ordering keys, caps, rate limits, maximum depth
 *	  (flow.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGQUEUE_FLOW_H
#define PGQUEUE_FLOW_H

#include "note.h"
#include "queueshm.h"

/* jobs of a key that follow one another, kept in its entry for acks */
#define PGQ_KEY_CHAIN		8

/* sizes of the tables of tenants and keys (GUCs) */
extern int	pgq_max_tenants;
extern int	pgq_max_keys;

extern Size pgq_flow_shmem_size(void);
extern void pgq_flow_shmem_request(void);
extern void pgq_flow_shmem_init(void);
extern void pgq_flow_pre_commit(PgqNote *note);
extern void pgq_flow_apply(PgqNote *note, QueueShared *qs, bool commit);
extern void pgq_flow_forget(const PgqForget *forget);

extern int	pgq_flow_pop_begin(PgqQueue *queue, int n, int64 bound);
extern bool pgq_flow_key_ready(text *key, int64 job_id);
extern int64 pgq_flow_key_next(PgqQueue *queue, text *key, int64 job_id);
extern void pgq_flow_key_chain(PgqQueue *queue, text *key, const int64 *chain, int n);
extern bool pgq_flow_take(text *tenant);
extern void pgq_flow_claimed(PgqQueue *queue, text *key, text *tenant, int64 job_id);
extern void pgq_flow_claims_done(text **claimed_tenants, int nclaimed);
extern void pgq_flow_pop_end(int reserved, int claimed);
extern uint32 pgq_flow_rotation(uint32 served);
extern void pgq_flow_push(PgqQueue *queue, int n, bool *key_nulls, Datum *tenants,
						  bool *tenant_nulls, Datum *priorities);
extern void pgq_flow_finished(PgqQueue *queue, text *key, text *tenant, int64 job_id,
							  char state, int64 next);

#endif							/* PGQUEUE_FLOW_H */
