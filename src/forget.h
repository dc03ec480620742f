/*-------------------------------------------------------------------------
 *
 * forget.h
 *	  Forgetting what the shared tables keep of queues that are gone
 *	  (forget.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGQUEUE_FORGET_H
#define PGQUEUE_FORGET_H

#include "queueshm.h"

extern void pgq_shmem_forget(const PgqForget *forget);

#endif							/* PGQUEUE_FORGET_H */
