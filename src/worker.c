/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The maintenance launcher and the per-database maintenance workers.
 *
 * The launcher (registered from shared_preload_libraries) lists the
 * databases every pgqueue.naptime and starts one maintenance worker for
 * each database that may have the extension and has none running.  A
 * worker runs rounds until its database loses the extension, is about to
 * be dropped, or an error ends it; each round runs the duties that
 * pgqueue_internal._maint_operations lists (those of pgqueue.maintain()),
 * one queue and one unit of work per transaction.  A duty that fails is
 * logged and recorded against its queue, which is left alone for a
 * backoff; the other queues go on.
 * What each database's worker did last lives in a table in shared memory:
 * a database without the extension is looked at again after a minute, and
 * a worker that failed is restarted after a backoff that doubles up to
 * five minutes, so an error cannot become a crash loop.  A crash of the
 * server resets shared memory, so the launcher also keeps a small state
 * file: when it starts after a crash (the file says it was running), it
 * waits before starting any worker, doubling the wait with each crash in a
 * row, so a worker that crashes the server cannot crash it again at once.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "fmgr.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "catalog/pg_extension.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/wait_event.h"

#include "cache.h"
#include "expire.h"
#include "forget.h"
#include "worker.h"

PGDLLEXPORT void pgq_launcher_main(Datum arg);
PG_FUNCTION_INFO_V1(pgq_worker_poke);
PGDLLEXPORT void pgq_worker_main(Datum arg);

/* GUCs */
bool		pgq_worker_enabled = true;
int			pgq_naptime = 1000;

/* seconds before this worker's database is looked at again; -1: failed */
static int	worker_exit_delay = -1;

/* the database's SQL objects are of another version than this library */
static bool other_version = false;

/*
 * the launcher's state file, relative to the data directory; in a directory
 * whose files base backups leave out, so that a standby made from one does
 * not take the primary's running launcher for a crash
 */
#define PGQ_STATE_FILE	"pg_stat_tmp/pgqueue.state"

/* a launcher that ran this long without a crash forgets earlier crashes */
#define PGQ_STABLE_SECS	60

/* what a database's maintenance worker is doing */
typedef struct DbSlot
{
	Oid			dbid;			/* InvalidOid: free */
	pid_t		pid;			/* running worker, -1 starting, 0 none */
	int			failures;		/* in a row */
	TimestampTz next_start;
} DbSlot;

/* databases with a maintenance worker; more get none */
#define PGQ_MAX_DBS		64

typedef struct WorkerShared
{
	LWLock	   *lock;			/* protects dbs */
	DbSlot		dbs[PGQ_MAX_DBS];
} WorkerShared;

static WorkerShared *workers = NULL;

/*
 * pgq_workers_shmem_size
 *		Bytes of shared memory of the registry of workers.
 */
Size
pgq_workers_shmem_size(void)
{
	return sizeof(WorkerShared);
}

/*
 * pgq_workers_shmem_request
 *		Reserve the registry's lock (shmem_request_hook).
 */
void
pgq_workers_shmem_request(void)
{
	RequestNamedLWLockTranche("pgqueue workers", 1);
}

/*
 * pgq_workers_shmem_init
 *		Create or attach to the registry; the caller holds
 *		AddinShmemInitLock.
 */
void
pgq_workers_shmem_init(void)
{
	bool		found;

	workers = ShmemInitStruct("pgqueue workers", sizeof(WorkerShared), &found);
	if (!found)
	{
		workers->lock = &(GetNamedLWLockTranche("pgqueue workers"))->lock;
		memset(workers->dbs, 0, sizeof(workers->dbs));
	}
}

/*
 * db_slot
 *		The slot of a database, taken from the free ones if it has none;
 *		NULL when all are taken.  Caller holds the lock exclusively.
 */
static DbSlot *
db_slot(Oid dbid)
{
	DbSlot	   *free_slot = NULL;

	for (int i = 0; i < PGQ_MAX_DBS; i++)
	{
		if (workers->dbs[i].dbid == dbid)
			return &workers->dbs[i];
		if (free_slot == NULL && !OidIsValid(workers->dbs[i].dbid))
			free_slot = &workers->dbs[i];
	}
	if (free_slot != NULL)
	{
		memset(free_slot, 0, sizeof(DbSlot));
		free_slot->dbid = dbid;
	}
	return free_slot;
}

/*
 * db_should_start
 *		For the launcher: whether to start a worker for the database now;
 *		if so, the database is marked as starting one.
 */
static bool
db_should_start(Oid dbid)
{
	DbSlot	   *slot;
	bool		start = false;

	LWLockAcquire(workers->lock, LW_EXCLUSIVE);
	slot = db_slot(dbid);
	if (slot != NULL && slot->pid == 0 && GetCurrentTimestamp() >= slot->next_start)
	{
		slot->pid = -1;
		start = true;
	}
	LWLockRelease(workers->lock);
	return start;
}

/*
 * db_started
 *		A worker runs for the database.
 */
static void
db_started(Oid dbid)
{
	DbSlot	   *slot;

	LWLockAcquire(workers->lock, LW_EXCLUSIVE);
	slot = db_slot(dbid);
	if (slot != NULL)
		slot->pid = MyProcPid;
	LWLockRelease(workers->lock);
}

/*
 * db_finished
 *		The database's worker ended: cleanly, to be started again after
 *		delay seconds, or (delay -1) by failing, to be started again after a
 *		backoff that doubles with each failure in a row, up to five minutes.
 */
static void
db_finished(Oid dbid, int delay)
{
	DbSlot	   *slot;

	LWLockAcquire(workers->lock, LW_EXCLUSIVE);
	slot = db_slot(dbid);
	if (slot != NULL)
	{
		slot->pid = 0;
		if (delay >= 0)
			slot->failures = 0;
		else
		{
			slot->failures++;
			delay = 1 << Min(slot->failures, 8);
			delay = Min(delay, 300);
		}
		slot->next_start = GetCurrentTimestamp() + (TimestampTz) delay * USECS_PER_SEC;
	}
	LWLockRelease(workers->lock);
}

/*
 * db_poke
 *		Let the launcher start the database's worker at its next look, if
 *		none runs: a database that just got the extension (or its first
 *		queue) need not wait for the minute a worker that found no
 *		extension there asked for.
 */
static void
db_poke(Oid dbid)
{
	DbSlot	   *slot;

	if (workers == NULL)
		return;
	LWLockAcquire(workers->lock, LW_EXCLUSIVE);
	slot = db_slot(dbid);
	if (slot != NULL && slot->pid == 0)
		slot->next_start = 0;
	LWLockRelease(workers->lock);
}

/*
 * forget_dropped_databases
 *		For the launcher: forget what the shared tables keep of databases
 *		that are gone (not in dbs), and free their slots.
 */
static void
forget_dropped_databases(List *dbs)
{
	Oid		   *live = palloc(sizeof(Oid) * Max(list_length(dbs), 1));
	int			n = 0;
	ListCell   *lc;
	PgqForget	forget;

	foreach(lc, dbs)
		live[n++] = lfirst_oid(lc);
	forget.dbid = InvalidOid;
	forget.nlive = n;
	forget.live = live;
	forget.seq_relid = InvalidOid;
	pgq_shmem_forget(&forget);

	LWLockAcquire(workers->lock, LW_EXCLUSIVE);
	for (int i = 0; i < PGQ_MAX_DBS; i++)
		if (OidIsValid(workers->dbs[i].dbid) && workers->dbs[i].pid == 0 &&
			!list_member_oid(dbs, workers->dbs[i].dbid))
			memset(&workers->dbs[i], 0, sizeof(DbSlot));
	LWLockRelease(workers->lock);
	pfree(live);
}

/*
 * pgq_worker_register
 *		Register the launcher; called from _PG_init while preloading.
 */
void
pgq_worker_register(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 5;
	strlcpy(bgw.bgw_library_name, "pgqueue", BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "pgq_launcher_main", BGW_MAXLEN);
	strlcpy(bgw.bgw_name, "pgqueue launcher", BGW_MAXLEN);
	strlcpy(bgw.bgw_type, "pgqueue launcher", BGW_MAXLEN);
	RegisterBackgroundWorker(&bgw);
}

/*
 * list_databases
 *		The OIDs of the databases that accept connections.
 */
static List *
list_databases(void)
{
	List	   *dbs = NIL;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	MemoryContext outer = CurrentMemoryContext;

	StartTransactionCommand();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);
		MemoryContext old;

		if (!db->datallowconn || db->datistemplate)
			continue;
		old = MemoryContextSwitchTo(outer);
		dbs = lappend_oid(dbs, db->oid);
		MemoryContextSwitchTo(old);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return dbs;
}

/*
 * start_worker
 *		Start the maintenance worker of one database.
 */
static void
start_worker(Oid dbid)
{
	BackgroundWorker bgw;
	BackgroundWorkerHandle *handle;
	pid_t		pid;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(bgw.bgw_library_name, "pgqueue", BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "pgq_worker_main", BGW_MAXLEN);
	snprintf(bgw.bgw_name, BGW_MAXLEN, "pgqueue maintenance for database %u", dbid);
	strlcpy(bgw.bgw_type, "pgqueue maintenance", BGW_MAXLEN);
	bgw.bgw_main_arg = ObjectIdGetDatum(dbid);
	bgw.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&bgw, &handle))
	{
		/* no free slot now: try again after a backoff */
		db_finished(dbid, -1);
		return;
	}
	if (WaitForBackgroundWorkerStartup(handle, &pid) != BGWH_STARTED)
		db_finished(dbid, -1);
}

/*
 * write_state
 *		Record whether the launcher runs, and the crashes in a row.
 */
static void
write_state(bool running, int crashes)
{
	FILE	   *f = AllocateFile(PGQ_STATE_FILE, "w");

	if (f == NULL)
		return;
	fprintf(f, "%s %d\n", running ? "running" : "stopped", crashes);
	FreeFile(f);
}

/*
 * launcher_exit
 *		before_shmem_exit callback: a launcher that stops normally leaves a
 *		state that is not taken for a crash.
 */
static void
launcher_exit(int code, Datum arg)
{
	write_state(false, 0);
}

/*
 * crash_backoff
 *		At launcher start: the crashes in a row so far, counting one if the
 *		last launcher did not stop normally.
 */
static int
crash_backoff(void)
{
	FILE	   *f = AllocateFile(PGQ_STATE_FILE, "r");
	char		word[16] = "";
	int			crashes = 0;

	if (f != NULL)
	{
		if (fscanf(f, "%15s %d", word, &crashes) != 2)
			crashes = 0;
		FreeFile(f);
		if (strcmp(word, "running") == 0)
			crashes++;
		else
			crashes = 0;
	}
	return crashes;
}

/*
 * pgq_launcher_main
 *		Entry point of the launcher.
 */
void
pgq_launcher_main(Datum arg)
{
	int			crashes;
	TimestampTz started = GetCurrentTimestamp();
	TimestampTz hold_until;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	crashes = crash_backoff();
	write_state(true, crashes);
	before_shmem_exit(launcher_exit, (Datum) 0);
	hold_until = started + (crashes > 0 ? (TimestampTz) Min(1 << Min(crashes, 8), 300) * USECS_PER_SEC : 0);
	if (crashes > 0)
		ereport(LOG,
				(errmsg_plural("pgqueue launcher holds maintenance back for %d s after %d crash in a row",
							   "pgqueue launcher holds maintenance back for %d s after %d crashes in a row",
							   crashes, Min(1 << Min(crashes, 8), 300), crashes)));

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (crashes > 0 &&
			GetCurrentTimestamp() - started > (TimestampTz) PGQ_STABLE_SECS * USECS_PER_SEC)
		{
			crashes = 0;
			write_state(true, 0);
		}
		{
			List	   *dbs = list_databases();
			ListCell   *lc;

			forget_dropped_databases(dbs);
			if (pgq_worker_enabled && GetCurrentTimestamp() >= hold_until)
				foreach(lc, dbs)
				{
					if (db_should_start(lfirst_oid(lc)))
						start_worker(lfirst_oid(lc));
				}
			list_free(dbs);
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 pgq_naptime, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * worker_exit
 *		before_shmem_exit callback: record how the worker ended.
 */
static void
worker_exit(int code, Datum arg)
{
	db_finished(DatumGetObjectId(arg), worker_exit_delay);
}

/*
 * database_in_use
 *		Whether someone holds the database in a mode that conflicts with
 *		connecting to it, as DROP DATABASE does while it waits for the
 *		database's sessions to go, or CREATE DATABASE copying it as a
 *		template.
 */
static bool
database_in_use(void)
{
	LOCKTAG		tag;

	SET_LOCKTAG_OBJECT(tag, InvalidOid, DatabaseRelationId, MyDatabaseId, 0);
	if (LockAcquire(&tag, RowExclusiveLock, false, true) == LOCKACQUIRE_NOT_AVAIL)
		return true;
	LockRelease(&tag, RowExclusiveLock, false);
	return false;
}

/* one duty of a maintenance round (pgqueue_internal._maint_operations) */
typedef struct Duty
{
	int32		queue_id;
	char	   *queue;
	char	   *op;				/* a function of pgqueue_internal */
	bool		repeat;			/* run again while it finds work */
} Duty;

/* compaction steps of one queue in one round, at most */
#define PGQ_MAX_REPEATS	100

/*
 * run_statement
 *		Run one statement of run_sql through SPI; its rows go to *rows, in
 *		memory context outer, if rows is given.
 */
static void
run_statement(const char *sql, Datum *values, const char *nulls, List **rows,
			  MemoryContext outer)
{
	Oid			argtypes[2] = {INT4OID, TEXTOID};
	int			rc;

	pgstat_report_activity(STATE_RUNNING, sql);
	rc = SPI_execute_with_args(sql, 2, argtypes, values, nulls, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not run \"%s\": %s", sql, SPI_result_code_string(rc));
	for (uint64 r = 0; rows != NULL && r < SPI_processed; r++)
	{
		List	   *row = NIL;
		MemoryContext old;

		for (int c = 1; c <= SPI_tuptable->tupdesc->natts; c++)
		{
			char	   *v = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, c);

			old = MemoryContextSwitchTo(outer);
			row = lappend(row, v == NULL ? NULL : pstrdup(v));
			MemoryContextSwitchTo(old);
		}
		old = MemoryContextSwitchTo(outer);
		*rows = lappend(*rows, row);
		MemoryContextSwitchTo(old);
	}
}

/*
 * run_sql
 *		Run one statement, with an int4 and a text argument, in a
 *		transaction of its own.  Returns false if the extension is gone (or
 *		its SQL objects are of another version than this library).
 *		Its rows go to *rows (as a list of text arrays, NULL for
 *		NULL), if rows is given.  An error rolls the transaction back and
 *		leaves its message in *error (NULL if none), for the caller to
 *		report; the worker goes on.  Every transaction first locks the
 *		extension, as DROP EXTENSION does before anything else, so the two
 *		wait for each other instead of deadlocking on the tables.
 */
static bool
run_sql(const char *sql, int32 id, const char *arg, List **rows, char **error)
{
	MemoryContext outer = CurrentMemoryContext;
	Datum		values[2];
	char		nulls[2] = {' ', arg == NULL ? 'n' : ' '};
	bool		has_extension = false;

	*error = NULL;
	values[0] = Int32GetDatum(id);
	values[1] = arg == NULL ? (Datum) 0 : CStringGetTextDatum(arg);
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		Oid			ext = get_extension_oid("pgqueue", true);

		if (OidIsValid(ext))
		{
			LockDatabaseObject(ExtensionRelationId, ext, 0, AccessShareLock);
			has_extension = OidIsValid(get_extension_oid("pgqueue", true));
		}
		if (has_extension)
		{
			char	   *installed;

			SPI_connect();
			PushActiveSnapshot(GetTransactionSnapshot());

			/* the objects of another version wait for ALTER EXTENSION UPDATE */
			installed = pgq_installed_version();
			has_extension = installed != NULL && strcmp(installed, PGQ_VERSION) == 0;
			if (installed != NULL && !has_extension && !other_version)
				ereport(LOG,
						(errmsg("pgqueue maintenance of database \"%s\" waits for ALTER EXTENSION pgqueue UPDATE",
								get_database_name(MyDatabaseId)),
						 errdetail("The library is of version %s, the SQL objects of version %s.",
								   PGQ_VERSION, installed)));
			other_version = installed != NULL && !has_extension;
			if (has_extension)
				run_statement(sql, values, nulls, rows, outer);
			SPI_finish();
			PopActiveSnapshot();
		}
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(outer);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		*error = edata->message;
		has_extension = true;
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
	return has_extension;
}

/*
 * round_duties
 *		The duties of this round, or NIL with *has_extension false if the
 *		extension is gone.
 */
static List *
round_duties(bool *has_extension)
{
	List	   *rows = NIL;
	List	   *duties = NIL;
	ListCell   *lc;
	char	   *error;

	*has_extension = run_sql("SELECT queue_id, queue_name, op, repeat"
							 " FROM pgqueue_internal._maint_operations(NULL)",
							 0, NULL, &rows, &error);
	if (error != NULL)
		ereport(ERROR,
				(errmsg("pgqueue maintenance could not list its duties: %s", error)));
	foreach(lc, rows)
	{
		List	   *row = lfirst(lc);
		Duty	   *d = palloc(sizeof(Duty));

		/* the duties of the database have no queue */
		d->queue_id = linitial(row) == NULL ? -1 : pg_strtoint32(linitial(row));
		d->queue = lsecond(row);
		d->op = lthird(row);
		d->repeat = strcmp(lfourth(row), "t") == 0;
		duties = lappend(duties, d);
	}
	return duties;
}

/*
 * maintenance_round
 *		One maintenance round: every duty of every queue, each in its own
 *		transaction.  A duty that fails is logged and recorded against its
 *		queue (pgqueue.maintenance), and the queue's other duties wait for
 *		its retry time; the other queues go on.  A duty of a queue whose
 *		maintenance holds its lock elsewhere (a maintain() call) is left
 *		for the next round.  Returns false if the extension is gone.
 */
static bool
maintenance_round(MemoryContext round_cxt)
{
	bool		has_extension;
	List	   *duties;
	ListCell   *lc;
	int32		failed = -1;
	bool		compacted = false;

	MemoryContextReset(round_cxt);
	MemoryContextSwitchTo(round_cxt);
	duties = round_duties(&has_extension);
	if (!has_extension)
		return false;
	foreach(lc, duties)
	{
		Duty	   *d = lfirst(lc);
		char	   *sql;

		/*
		 * A queue whose maintenance runs elsewhere waits for the next round;
		 * one dropped since the round began is left alone.
		 */
		if (d->queue_id < 0)
			sql = psprintf("SELECT pgqueue_internal.%s()::text", quote_identifier(d->op));
		else
			sql = psprintf("SELECT CASE WHEN pgqueue_internal._maint_lock($1, true)"
						   " AND EXISTS (SELECT FROM pgqueue.queue q WHERE q.queue_id = $1)"
						   " THEN pgqueue_internal.%s($1)::text END",
						   quote_identifier(d->op));

		if (d->queue_id >= 0 && d->queue_id == failed)
			continue;
		for (int i = 0; i < (d->repeat ? PGQ_MAX_REPEATS : 1); i++)
		{
			List	   *rows = NIL;
			char	   *error;
			char	   *result;

			if (!run_sql(sql, d->queue_id, NULL, &rows, &error))
				return false;
			if (error != NULL)
			{
				char	   *ignored;

				ereport(LOG,
						(errmsg("pgqueue maintenance of queue \"%s\" failed in %s: %s",
								d->queue ? d->queue : "(all)", d->op, error)));
				if (d->queue_id >= 0)
					(void) run_sql("SELECT pgqueue_internal._maint_failed($1, $2)",
								   d->queue_id, error, NULL, &ignored);
				failed = d->queue_id;
				break;
			}
			result = rows != NIL ? linitial(linitial(rows)) : NULL;
			if (result == NULL || strcmp(result, "busy") == 0)
				break;
			if (d->repeat)
			{
				compacted = true;
				ereport(LOG,
						(errmsg("pgqueue: queue \"%s\": %s: %s", d->queue, d->op, result)));
			}
		}
		CHECK_FOR_INTERRUPTS();
	}

	/*
	 * Compaction made and dropped tables, of which this process's catalog
	 * caches keep entries that nothing frees, and expiry its places in the
	 * blocks that are gone: drop both, so that the worker's memory stays
	 * flat however long it runs.
	 */
	if (compacted)
	{
		StartTransactionCommand();
		pgq_expiry_prune();
		InvalidateSystemCaches();
		CommitTransactionCommand();
	}
	return true;
}

/*
 * pgq_worker_main
 *		Entry point of a database's maintenance worker.
 */
void
pgq_worker_main(Datum arg)
{
	Oid			dbid = DatumGetObjectId(arg);
	MemoryContext round_cxt;

	before_shmem_exit(worker_exit, arg);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dbid, InvalidOid, 0);
	/* compaction needs a new snapshot per statement, whatever the default */
	SetConfigOption("default_transaction_isolation", "read committed",
					PGC_SUSET, PGC_S_OVERRIDE);
	db_started(dbid);
	round_cxt = AllocSetContextCreate(TopMemoryContext, "pgqueue maintenance round",
									  ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		TimestampTz round_end;

		/*
		 * No extension here: forget its queues, look again in a minute; or
		 * soon, if it waits for ALTER EXTENSION UPDATE.
		 */
		if (!maintenance_round(round_cxt))
		{
			PgqForget	forget;

			forget.dbid = MyDatabaseId;
			forget.nlive = 0;
			forget.live = NULL;
			forget.seq_relid = InvalidOid;
			pgq_shmem_forget(&forget);
			worker_exit_delay = other_version ? 5 : 60;
			break;
		}

		/*
		 * Sleep until the next round, looking at least every second whether
		 * the database is wanted by DROP DATABASE or as a template: then
		 * leave it and come back later.
		 */
		round_end = GetCurrentTimestamp();
		for (;;)
		{
			long		left;

			CHECK_FOR_INTERRUPTS();
			if (ConfigReloadPending)
			{
				ConfigReloadPending = false;
				ProcessConfigFile(PGC_SIGHUP);
			}
			left = (long) ((round_end - GetCurrentTimestamp()) / 1000) + pgq_naptime;
			if (!pgq_worker_enabled || database_in_use())
			{
				worker_exit_delay = 10;
				proc_exit(0);
			}
			if (left <= 0)
				break;
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 Min(left, 1000), PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
	}
	proc_exit(0);
}

/*
 * pgq_worker_poke
 *		SQL: pgqueue_internal._worker_poke() asks the launcher to start this
 *		database's maintenance worker soon (queue_create calls it).
 */
Datum
pgq_worker_poke(PG_FUNCTION_ARGS)
{
	db_poke(MyDatabaseId);
	PG_RETURN_VOID();
}
