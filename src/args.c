/*-------------------------------------------------------------------------
 *
 * args.c
 *	  Checks of the arguments of the SQL-callable functions, shared by
 *	  them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"

#include "args.h"

/* largest payload a push accepts, in bytes (GUC) */
int			pgq_max_payload_size = 1024 * 1024;

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
