/*-------------------------------------------------------------------------
 *
 * pgqueue.c
 *	  Module entry point: _PG_init, the GUCs, and the one owner of
 *	  pgqueue's shared memory; fault injection for tests.
 *
 * Shared memory is reserved at server start, in fixed sizes set by GUCs,
 * and never grows: each module that keeps a table there says how much it
 * needs and sets it up when asked (as PostgreSQL's ipci.c does).  When a
 * table is full, only the caller that needs a new entry is worse off: it
 * evicts an entry that is only a hint (lanes, keys), goes without (queues:
 * polling), or gets an error (tenants whose counts running transactions
 * hold).
 *
 * Locking protocol of the shared tables:
 *   - each table has one LWLock (tranches "pgqueue queues", "pgqueue
 *     lanes", "pgqueue flow" for tenants and keys, "pgqueue workers"), which
 *     guards its membership: shared to look an entry up, exclusive to add
 *     or remove one.  pgqueue never holds two of them at once.
 *   - the fields of an entry are guarded by the entry's spinlock (queues,
 *     tenants, keys, push slots), taken while holding the table's lock or
 *     a pin that keeps the entry (a waiter of a queue, a tenant's pins or
 *     reservations); lane watermarks and worker slots by the table's lock.
 *   - a spinlock is held for a few instructions: no call that can fail,
 *     sleep or take time (no palloc, ereport or clock), never two at once.
 *   - removing an entry needs the table's lock exclusively and that no
 *     backend depends on it (no waiter, pin or reservation).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "args.h"
#include "fault.h"
#include "flow.h"
#include "note.h"
#include "cache.h"
#include "queueshm.h"
#include "wakeup.h"
#include "watermark.h"
#include "worker.h"

PG_MODULE_MAGIC;

/* the step at which to fail (or pause) on purpose (tests) */
static char *pgq_fault_injection = NULL;

/*
 * With pgqueue.fault_injection = 'pause:<step>', maintenance (or a pop)
 * waits at the step while another session holds
 * pg_advisory_lock(PGQ_PAUSE_KEY); with 'error:<step>' it fails there with
 * an error.
 */
#define PGQ_PAUSE_PREFIX	"pause:"
#define PGQ_ERROR_PREFIX	"error:"
#define PGQ_PAUSE_KEY		1885827445

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

PG_FUNCTION_INFO_V1(pgq_fault);

void		_PG_init(void);

/*
 * shmem_request
 *		shmem_request_hook: reserve what every module needs.
 */
static void
shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(add_size(add_size(pgq_queues_shmem_size(),
											 pgq_watermarks_shmem_size()),
									add_size(pgq_flow_shmem_size(),
											 pgq_workers_shmem_size())));
	pgq_queues_shmem_request();
	pgq_watermarks_shmem_request();
	pgq_flow_shmem_request();
	pgq_workers_shmem_request();
}

/*
 * shmem_startup
 *		shmem_startup_hook: create or attach to every module's tables.
 */
static void
shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	pgq_queues_shmem_init();
	pgq_watermarks_shmem_init();
	pgq_flow_shmem_init();
	pgq_workers_shmem_init();
	LWLockRelease(AddinShmemInitLock);
}

/*
 * _PG_init
 *		Define the GUCs, set up the backend-local parts and, when preloaded,
 *		shared memory and the launcher.
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
							   "Step of maintenance or of a pop at which to crash or pause on purpose, for tests.",
							   "The server PANICs when maintenance (or a pop) reaches the named step; "
							   "with \"pause:step\", it waits there while another "
							   "session holds pg_advisory_lock(" CppAsString2(PGQ_PAUSE_KEY) "); "
							   "with \"error:step\", it fails there with an error.",
							   &pgq_fault_injection,
							   "",
							   PGC_SUSET,
							   GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);
	/* the sizes of the shared tables, set only where they are made */
	if (process_shared_preload_libraries_in_progress)
	{
		DefineCustomIntVariable("pgqueue.max_queues",
								"Queues with an entry in shared memory (wake-ups, counters, flow control).",
								"Queues beyond it poll, count nothing and cannot use flow control.",
								&pgq_max_queues,
								1024,
								32,
								1000000,
								PGC_POSTMASTER,
								0,
								NULL, NULL, NULL);
		DefineCustomIntVariable("pgqueue.max_lanes",
								"Lanes (block, priority, tenant) with a shared low watermark.",
								"Beyond it a lane evicts another, whose pops scan from its block's start.",
								&pgq_max_lanes,
								8192,
								64,
								10000000,
								PGC_POSTMASTER,
								0,
								NULL, NULL, NULL);
		DefineCustomIntVariable("pgqueue.max_tenants",
								"Tenants of queues with tenant limits tracked in shared memory.",
								"When all are in use by running transactions, a new tenant's push or pop fails.",
								&pgq_max_tenants,
								4096,
								64,
								10000000,
								PGC_POSTMASTER,
								0,
								NULL, NULL, NULL);
		DefineCustomIntVariable("pgqueue.max_keys",
								"Ordering keys whose position is kept in shared memory.",
								"Beyond it a key evicts another, which then costs an index probe.",
								&pgq_max_keys,
								16384,
								64,
								10000000,
								PGC_POSTMASTER,
								0,
								NULL, NULL, NULL);
	}
	MarkGUCPrefixReserved("pgqueue");

	pgq_cache_init();
	pgq_watermarks_init();
	/*
	 * Give rolled-back claims back to their lanes and settle flow-control
	 * counts before waking the pops that look for them
	 */
	pgq_note_applier(pgq_watermarks_apply);
	pgq_note_applier(pgq_flow_apply);
	pgq_note_applier(pgq_wakeup_apply);
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = shmem_startup;
	pgq_worker_register();
}

/*
 * pgq_fault_at
 *		Crash the server (PANIC) when pgqueue.fault_injection names the
 *		step; tests use it to stop maintenance at every step and check that
 *		nothing is lost.  With 'pause:<step>' wait at the step until the
 *		advisory lock PGQ_PAUSE_KEY is free, so that tests can order other
 *		sessions' work against a maintenance step or a pop's claim of a
 *		range ("pop_range"); with 'error:<step>' raise an error there, as a
 *		failing maintenance duty would.
 */
void
pgq_fault_at(const char *step)
{
	if (pgq_fault_injection == NULL || pgq_fault_injection[0] == '\0')
		return;
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
}

/*
 * pgq_fault
 *		SQL: pgqueue_internal._fault(step), pgq_fault_at for maintenance.
 */
Datum
pgq_fault(PG_FUNCTION_ARGS)
{
	pgq_fault_at(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_VOID();
}

