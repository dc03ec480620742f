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
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "pgqueue.h"

PG_MODULE_MAGIC;

/* largest payload a push accepts, in bytes */
int			pgq_max_payload_size = 1024 * 1024;

/* how often a waiting pop polls when it cannot sleep on shared memory, ms */
int			pgq_poll_interval = 100;

/* the maintenance step at which to fail (or pause) on purpose (tests) */
static char *pgq_fault_injection = NULL;

/*
 * With pgqueue.fault_injection = 'pause:<step>', maintenance waits at the
 * step while another session holds pg_advisory_lock(PGQ_PAUSE_KEY); with
 * 'error:<step>' it fails there with an error.
 */
#define PGQ_PAUSE_PREFIX	"pause:"
#define PGQ_ERROR_PREFIX	"error:"
#define PGQ_PAUSE_KEY		1885827445

PG_FUNCTION_INFO_V1(pgq_fault);

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
	DefineCustomBoolVariable("pgqueue.worker",
							 "Runs the maintenance workers.",
							 "Off keeps the launcher idle; pgqueue.maintain() still works.",
							 &pgq_worker_enabled,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("pgqueue.naptime",
							"Time between two maintenance rounds of a database.",
							NULL,
							&pgq_naptime,
							1000,
							10,
							3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomStringVariable("pgqueue.fault_injection",
							   "Maintenance step at which to crash or pause on purpose, for tests.",
							   "The server PANICs when maintenance reaches the named step; "
							   "with \"pause:step\", maintenance waits there while another "
							   "session holds pg_advisory_lock(" CppAsString2(PGQ_PAUSE_KEY) "); "
							   "with \"error:step\", it fails there with an error.",
							   &pgq_fault_injection,
							   "",
							   PGC_SUSET,
							   GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);
	MarkGUCPrefixReserved("pgqueue");

	pgq_cache_init();
	pgq_shmem_init();
	if (process_shared_preload_libraries_in_progress)
		pgq_worker_register();
}

/*
 * pgq_require_arg
 *		Raise null_value_not_allowed for a NULL argument.
 */
void
pgq_require_arg(FunctionCallInfo fcinfo, int argno, const char *name)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", name)));
}

/*
 * pgq_interval_sign
 *		-1, 0 or 1 as the interval is negative, zero or positive.
 */
int
pgq_interval_sign(Interval *interval)
{
	Interval	zero;
	int			cmp;

	memset(&zero, 0, sizeof(zero));
	cmp = DatumGetInt32(DirectFunctionCall2(interval_cmp, IntervalPGetDatum(interval),
											IntervalPGetDatum(&zero)));
	return cmp < 0 ? -1 : (cmp > 0 ? 1 : 0);
}

/*
 * pgq_check_interval_max
 *		Reject an interval above max (text, such as "1 year"), which keeps
 *		the times computed with it in range.
 */
void
pgq_check_interval_max(Interval *value, const char *what, const char *max)
{
	Datum		bound = DirectFunctionCall3(interval_in, CStringGetDatum(max),
											ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));

	if (DatumGetInt32(DirectFunctionCall2(interval_cmp, IntervalPGetDatum(value), bound)) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be at most %s", what, max)));
}

/*
 * pgq_check_lease
 *		Reject a zero, negative or too long lease interval.
 */
void
pgq_check_lease(Interval *lease, const char *what)
{
	if (pgq_interval_sign(lease) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a positive interval", what)));
	pgq_check_interval_max(lease, what, PGQ_MAX_LEASE);
}

/*
 * pgq_clip_error
 *		An error text or reason kept to its first PGQ_MAX_ERROR characters.
 */
text *
pgq_clip_error(text *error)
{
	int			len = VARSIZE_ANY_EXHDR(error);
	int			clip = pg_mbcharcliplen(VARDATA_ANY(error), len, PGQ_MAX_ERROR);

	return clip < len ? cstring_to_text_with_len(VARDATA_ANY(error), clip) : error;
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

/*
 * pgq_fault
 *		SQL: pgqueue_internal._fault(step) crashes the server (PANIC) when
 *		pgqueue.fault_injection names the step; tests use it to stop
 *		maintenance at every step and check that nothing is lost.  With
 *		'pause:<step>' it waits at the step until the advisory lock
 *		PGQ_PAUSE_KEY is free, so that tests can order other sessions'
 *		work against a maintenance step; with 'error:<step>' it raises an
 *		error there, as a failing maintenance duty would.
 */
Datum
pgq_fault(PG_FUNCTION_ARGS)
{
	char	   *step = text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (pgq_fault_injection == NULL)
		PG_RETURN_VOID();
	if (strcmp(pgq_fault_injection, step) == 0)
		ereport(PANIC,
				(errmsg("pgqueue fault injection at step \"%s\"", step)));
	if (strncmp(pgq_fault_injection, PGQ_ERROR_PREFIX, strlen(PGQ_ERROR_PREFIX)) == 0 &&
		strcmp(pgq_fault_injection + strlen(PGQ_ERROR_PREFIX), step) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("pgqueue fault injection at step \"%s\"", step)));
	if (strncmp(pgq_fault_injection, PGQ_PAUSE_PREFIX, strlen(PGQ_PAUSE_PREFIX)) == 0 &&
		strcmp(pgq_fault_injection + strlen(PGQ_PAUSE_PREFIX), step) == 0)
	{
		LOCKTAG		tag;

		/* the tag of pg_advisory_lock(PGQ_PAUSE_KEY) */
		SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, 0, PGQ_PAUSE_KEY, 1);
		(void) LockAcquire(&tag, ShareLock, false, false);
		LockRelease(&tag, ShareLock, false);
	}
	PG_RETURN_VOID();
}

/*
 * pgq_check_tenant
 *		Validate a tenant name and copy it, NUL-padded, into a buffer of
 *		NAMEDATALEN bytes.
 */
void
pgq_check_tenant(text *tenant, char *buf)
{
	int			len = VARSIZE_ANY_EXHDR(tenant);

	if (len < 1 || len >= NAMEDATALEN || memchr(VARDATA_ANY(tenant), '\0', len) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid tenant \"%s\"", text_to_cstring(tenant)),
				 errdetail("A tenant has 1 to %d bytes.", NAMEDATALEN - 1)));
	memset(buf, 0, NAMEDATALEN);
	memcpy(buf, VARDATA_ANY(tenant), len);
}
