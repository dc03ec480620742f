/*-------------------------------------------------------------------------
 *
 * expire.h
 *	  Lease expiry (expire.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGQUEUE_EXPIRE_H
#define PGQUEUE_EXPIRE_H

extern void pgq_expiry_prune(void);

#endif							/* PGQUEUE_EXPIRE_H */
