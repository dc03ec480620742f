/*-------------------------------------------------------------------------
 *
 * args.h
 *	  Checks of the arguments of the SQL-callable functions (args.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGQUEUE_ARGS_H
#define PGQUEUE_ARGS_H

#include "fmgr.h"
#include "utils/timestamp.h"

/* longest lease, retry delay and wait a call may ask for (the option bounds) */
#define PGQ_MAX_LEASE	"1 year"
#define PGQ_MAX_RETRY	"1 year"
#define PGQ_MAX_WAIT	"1 day"

/* characters of an error text or abort reason that are kept */
#define PGQ_MAX_ERROR	2000

/* largest payload a push accepts, in bytes (GUC) */
extern int	pgq_max_payload_size;

extern void pgq_require_arg(FunctionCallInfo fcinfo, int argno, const char *name);
extern int	pgq_interval_sign(Interval *interval);
extern void pgq_check_interval_max(Interval *value, const char *what, const char *max);
extern void pgq_check_lease(Interval *lease, const char *what);
extern text *pgq_clip_error(text *error);
extern void pgq_check_payload(Datum payload);
extern void pgq_check_tenant(text *tenant, char *buf);

#endif							/* PGQUEUE_ARGS_H */
