/*-------------------------------------------------------------------------
 *
 * privilege.c
 *	  Who may do what: the entry of every function of schema pgqueue, which
 *	  runs it as the extension's owner, and the rights of roles on single
 *	  queues.
 *
 * No function of schema pgqueue is SECURITY DEFINER.  Each starts with
 * pgq_api_enter, which remembers the calling role (the current user: a
 * SECURITY DEFINER function of the caller's own that calls pgqueue makes
 * its owner the caller, as it should) and switches to the owner of the
 * function, the extension's owner, for the statements it runs; the call
 * switches back when it returns, and an error does so with its
 * (sub)transaction.  Group roles decide which functions a role may call
 * (GRANT EXECUTE, sql/parts/privileges.sql).  Rights on single queues
 * narrow that: a right (push, consume or admin) that was granted on a
 * queue (queue_grant) belongs to its grantees and the roles that inherit
 * their privileges, the queue's owner and superusers only; a right never
 * granted on a queue is open.  A queue's grants are read with the queue
 * (cache.c); what they give a role is worked out once per role, queue and
 * change of roles or grants.
 *
 * Queue management and repair are written in PL/pgSQL, in functions of
 * schema pgqueue_internal; their entry points in schema pgqueue all point
 * to pgq_admin_call, which checks the admin right on the queue named by
 * the first argument and calls the function of the same name and
 * arguments in pgqueue_internal.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "cache.h"
#include "privilege.h"


/* the role that called the pgqueue function running now */
static Oid	current_caller = InvalidOid;

/* bumped when roles or their memberships change: rights are worked out again */
static uint64 roles_gen = 1;
static bool callback_registered = false;

PG_FUNCTION_INFO_V1(pgq_admin_call);
PG_FUNCTION_INFO_V1(pgq_caller);

/*
 * roles_changed
 *		Syscache callback: a role or a role membership changed.
 */
static void
roles_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	roles_gen++;
}

/*
 * pgq_api_enter
 *		Start a call of a function of schema pgqueue: remember its caller
 *		and become the function's owner until pgq_api_leave.
 */
void
pgq_api_enter(FunctionCallInfo fcinfo, PgqApiCall *call)
{
	HeapTuple	tup;
	Oid			owner;

	if (!callback_registered)
	{
		CacheRegisterSyscacheCallback(AUTHOID, roles_changed, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, roles_changed, (Datum) 0);
		callback_registered = true;
	}
	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fcinfo->flinfo->fn_oid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", fcinfo->flinfo->fn_oid);
	owner = ((Form_pg_proc) GETSTRUCT(tup))->proowner;
	ReleaseSysCache(tup);

	GetUserIdAndSecContext(&call->save_user, &call->save_sec);
	call->prev_caller = current_caller;
	current_caller = call->save_user;
	SetUserIdAndSecContext(owner, call->save_sec | SECURITY_LOCAL_USERID_CHANGE);
	/* the call keeps pointers into the cache while its statements run */
	pgq_cache_pin();
}

/*
 * pgq_api_leave
 *		End a call begun by pgq_api_enter.
 */
void
pgq_api_leave(PgqApiCall *call)
{
	SetUserIdAndSecContext(call->save_user, call->save_sec);
	current_caller = call->prev_caller;
	pgq_cache_unpin();
}

/*
 * right_name
 *		The name of a right, as queue_grant takes it.
 */
static const char *
right_name(PgqRight right)
{
	switch (right)
	{
		case PGQ_RIGHT_PUSH:
			return "push";
		case PGQ_RIGHT_CONSUME:
			return "consume";
		case PGQ_RIGHT_ADMIN:
			return "admin";
	}
	return "?";
}

/*
 * inherits_from
 *		Whether role has the privileges of the role named name (false if
 *		no such role exists).
 */
static bool
inherits_from(Oid role, const char *name)
{
	Oid			other = get_role_oid(name, true);

	return OidIsValid(other) && has_privs_of_role(role, other);
}

/*
 * rights_of
 *		The rights a role has on a queue.
 */
static uint8
rights_of(PgqQueue *queue, Oid role)
{
	uint8		rights;

	if (superuser_arg(role) || inherits_from(role, NameStr(queue->owner)))
		return PGQ_RIGHTS_ALL;
	rights = PGQ_RIGHTS_ALL & ~queue->restricted;
	for (int i = 0; i < queue->nacl; i++)
		if ((queue->acl[i].rights & ~rights) != 0 &&
			inherits_from(role, NameStr(queue->acl[i].grantee)))
			rights |= queue->acl[i].rights;
	return rights;
}

/*
 * pgq_require_right
 *		Raise insufficient_privilege unless the caller of the running
 *		function has the right on the queue.
 */
void
pgq_require_right(PgqQueue *queue, PgqRight right)
{
	Assert(OidIsValid(current_caller));
	if (queue->rights_role != current_caller || queue->rights_gen != roles_gen)
	{
		queue->rights = rights_of(queue, current_caller);
		queue->rights_role = current_caller;
		queue->rights_gen = roles_gen;
	}
	if ((queue->rights & right) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for queue \"%s\"", queue->name),
				 errdetail("Role \"%s\" does not have the %s right on the queue.",
						   GetUserNameFromId(current_caller, false), right_name(right)),
				 errhint("The queue's owner or a role with its admin right can grant it with queue_grant.")));
}

/*
 * pgq_caller
 *		SQL: pgqueue_internal._caller() names the role that called the
 *		pgqueue function running now (queue_create makes it the owner).
 */
Datum
pgq_caller(PG_FUNCTION_ARGS)
{
	if (!OidIsValid(current_caller))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pgqueue_internal._caller() can only be used by the functions of pgqueue")));
	PG_RETURN_DATUM(DirectFunctionCall1(namein,
										CStringGetDatum(GetUserNameFromId(current_caller, false))));
}

/* an entry point of pgq_admin_call and the function it calls */
typedef struct AdminCall
{
	FmgrInfo	target;
	bool		queue_arg;		/* the first argument names a queue */
} AdminCall;

/*
 * admin_call_target
 *		The function of pgqueue_internal with the name and arguments of the
 *		entry point called, looked up once per call site.
 */
static AdminCall *
admin_call_target(FunctionCallInfo fcinfo)
{
	AdminCall  *ac = fcinfo->flinfo->fn_extra;
	HeapTuple	tup;
	Form_pg_proc proc;
	Oid			target;

	if (ac != NULL)
		return ac;
	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fcinfo->flinfo->fn_oid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", fcinfo->flinfo->fn_oid);
	proc = (Form_pg_proc) GETSTRUCT(tup);
	target = LookupFuncName(list_make2(makeString("pgqueue_internal"),
									   makeString(pstrdup(NameStr(proc->proname)))),
							proc->pronargs, proc->proargtypes.values, false);
	ac = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(AdminCall));
	ac->queue_arg = proc->pronargs > 0 && proc->proargtypes.values[0] == TEXTOID;
	ReleaseSysCache(tup);
	fmgr_info_cxt(target, &ac->target, fcinfo->flinfo->fn_mcxt);
	fcinfo->flinfo->fn_extra = ac;
	return ac;
}

/*
 * pgq_admin_call
 *		SQL: the entry point of the functions of schema pgqueue written in
 *		PL/pgSQL (queue management, repair, maintain): check the admin right
 *		on the queue named first, if it exists (else the function raises
 *		the error), and run the function of the same name and arguments in
 *		pgqueue_internal as the extension's owner.
 */
Datum
pgq_admin_call(PG_FUNCTION_ARGS)
{
	AdminCall  *ac;
	LOCAL_FCINFO(inner, FUNC_MAX_ARGS);
	PgqApiCall	call;
	Datum		result;

	/* every admin call writes: say so first on a standby */
	if (XactReadOnly)
		PreventCommandIfReadOnly(psprintf("%s()", get_func_name(fcinfo->flinfo->fn_oid)));

	/* as the owner: the caller may not look into pgqueue_internal */
	pgq_api_enter(fcinfo, &call);
	ac = admin_call_target(fcinfo);
	if (ac->queue_arg && !PG_ARGISNULL(0))
	{
		PgqQueue   *queue;

		SPI_connect();
		queue = pgq_queue_find(PG_GETARG_TEXT_PP(0));
		if (queue != NULL)
			pgq_require_right(queue, PGQ_RIGHT_ADMIN);
		SPI_finish();
	}

	InitFunctionCallInfoData(*inner, &ac->target, fcinfo->nargs, fcinfo->fncollation,
							 NULL, NULL);
	for (int i = 0; i < fcinfo->nargs; i++)
		inner->args[i] = fcinfo->args[i];
	result = FunctionCallInvoke(inner);
	pgq_api_leave(&call);
	fcinfo->isnull = inner->isnull;
	return result;
}
