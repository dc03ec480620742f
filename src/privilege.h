/*-------------------------------------------------------------------------
 *
 * privilege.h
 *	  The entry of the functions of schema pgqueue and the rights of roles
 *	  on single queues (privilege.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGQUEUE_PRIVILEGE_H
#define PGQUEUE_PRIVILEGE_H

#include "fmgr.h"

#include "cache.h"

/* a call in progress: what pgq_api_leave restores */
typedef struct PgqApiCall
{
	Oid			save_user;
	int			save_sec;
	Oid			prev_caller;
} PgqApiCall;

extern void pgq_api_enter(FunctionCallInfo fcinfo, PgqApiCall *call);
extern void pgq_api_leave(PgqApiCall *call);
extern void pgq_require_right(PgqQueue *queue, PgqRight right);

#endif							/* PGQUEUE_PRIVILEGE_H */
