/*-------------------------------------------------------------------------
 *
 * pgqueue.c
 *	  Module entry point: _PG_init, GUCs and argument checks shared by the
 *	  SQL-callable functions.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "pgqueue.h"

PG_MODULE_MAGIC;

/* largest payload a push accepts, in bytes */
int			pgq_max_payload_size = 1024 * 1024;

/* how often a waiting pop polls when it cannot sleep on shared memory, ms */
int			pgq_poll_interval = 100;

void		_PG_init(void);

/*
 * _PG_init
 *		Define GUCs, set up the backend-local cache and, when preloaded,
 *		shared memory.
 */
void
_PG_init(void)
{
	DefineCustomIntVariable("pgqueue.max_payload_size",
							"Largest job payload a push accepts.",
							"Measured as stored (jsonb binary size).",
							&pgq_max_payload_size,
							1024 * 1024,
							64,
							MaxAllocSize / 2,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);
	DefineCustomIntVariable("pgqueue.poll_interval",
							"How often a waiting pop polls without shared memory.",
							"Used only when pgqueue is not in shared_preload_libraries.",
							&pgq_poll_interval,
							100,
							1,
							60 * 1000,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
	MarkGUCPrefixReserved("pgqueue");

	pgq_cache_init();
	pgq_shmem_init();
}

/*
 * pgq_check_lease
 *		Reject a NULL, zero or negative lease interval.
 */
void
pgq_check_lease(Interval *lease, const char *what)
{
	Interval	zero;

	memset(&zero, 0, sizeof(zero));
	if (DatumGetInt32(DirectFunctionCall2(interval_cmp,
										  IntervalPGetDatum(lease),
										  IntervalPGetDatum(&zero))) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a positive interval", what)));
}

/*
 * pgq_check_payload
 *		Reject a payload larger than pgqueue.max_payload_size (as stored).
 */
void
pgq_check_payload(Datum payload)
{
	Size		size = VARSIZE_ANY_EXHDR(DatumGetPointer(payload));

	if (size > (Size) pgq_max_payload_size)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("job payload is too large"),
				 errdetail("The payload takes %zu bytes; pgqueue.max_payload_size is %d bytes.",
						   size, pgq_max_payload_size)));
}
