/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  The maintenance launcher and workers (worker.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGQUEUE_WORKER_H
#define PGQUEUE_WORKER_H

/* GUCs */
extern bool pgq_worker_enabled;
extern int	pgq_naptime;

extern Size pgq_workers_shmem_size(void);
extern void pgq_workers_shmem_request(void);
extern void pgq_workers_shmem_init(void);
extern void pgq_worker_register(void);

#endif							/* PGQUEUE_WORKER_H */
