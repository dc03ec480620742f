/*-------------------------------------------------------------------------
 *
 * forget.c
 *	  Forgetting what the shared tables keep of queues that are gone.
 *
 * The lanes of a block are forgotten when it is dropped or finished, and
 * everything of a queue when it is dropped (queue_drop); what such calls
 * miss (DROP EXTENSION, a drop that raced with a pop) is forgotten by a
 * maintenance duty of each database, and what dropped databases left by
 * the launcher.  Forgetting a hint early only costs a look at the tables.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/array.h"

#include "flow.h"
#include "forget.h"
#include "watermark.h"

PG_FUNCTION_INFO_V1(pgq_forget);
PG_FUNCTION_INFO_V1(pgq_forget_dropped);

/*
 * pgq_shmem_forget
 *		Remove what the shared tables keep of the queues to forget.
 */
void
pgq_shmem_forget(const PgqForget *forget)
{
	pgq_lanes_forget(forget, NULL);
	pgq_flow_forget(forget);
	pgq_queues_forget(forget);
}

/*
 * pgq_forget
 *		SQL: pgqueue_internal._forget(seq, block_no) forgets the lanes of one
 *		block of the queue whose sequence is seq (a block dropped or
 *		finished), or with block_no NULL everything of the queue (dropped).
 *		Forgetting early only costs a look at the tables if it rolls back.
 */
Datum
pgq_forget(PG_FUNCTION_ARGS)
{
	PgqForget	forget;

	if (PG_ARGISNULL(0))
		PG_RETURN_VOID();
	forget.dbid = MyDatabaseId;
	forget.nlive = -1;
	forget.live = NULL;
	forget.seq_relid = PG_GETARG_OID(0);
	if (PG_ARGISNULL(1))
		pgq_shmem_forget(&forget);
	else
	{
		int32		block_no = PG_GETARG_INT32(1);

		pgq_lanes_forget(&forget, &block_no);
	}
	PG_RETURN_VOID();
}

/*
 * pgq_forget_dropped
 *		SQL: pgqueue_internal._forget_dropped(seqs) forgets everything the
 *		shared tables keep of this database's queues but those whose
 *		sequences are given (the queues that exist): a maintenance duty.
 */
Datum
pgq_forget_dropped(PG_FUNCTION_ARGS)
{
	ArrayType  *seqs = PG_GETARG_ARRAYTYPE_P(0);
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	Oid		   *live;
	PgqForget	forget;

	deconstruct_array(seqs, OIDOID, sizeof(Oid), true, TYPALIGN_INT, &elems, &nulls, &n);
	live = palloc(sizeof(Oid) * Max(n, 1));
	for (int i = 0; i < n; i++)
		live[i] = nulls[i] ? InvalidOid : DatumGetObjectId(elems[i]);
	forget.dbid = MyDatabaseId;
	forget.nlive = n;
	forget.live = live;
	forget.seq_relid = InvalidOid;
	pgq_shmem_forget(&forget);
	PG_RETURN_VOID();
}

