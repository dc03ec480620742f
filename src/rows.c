/*-------------------------------------------------------------------------
 *
 * rows.c
 *	  Rows written straight into a block's tables: the jobs of a push and
 *	  the claim record of a pop, without a statement to plan and start.
 *
 * The rows go in by one multi-insert (as COPY does: one WAL record a page
 * of rows, not one a row), then into every index of the table.  The
 * callers make rows that satisfy the tables' CHECK constraints (the queue,
 * the block's id range), which are not evaluated again; the tables have
 * no triggers, rules or row security.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/tableam.h"
#include "access/tupdesc.h"
#include "access/xact.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"

#include "rows.h"

/*
 * pgq_rows_slots
 *		n empty slots for rows of a table, of a private copy of its row type
 *		(which no resource owner tracks: a push of many jobs does not pay
 *		for each slot there).
 */
TupleTableSlot **
pgq_rows_slots(Relation rel, int n)
{
	TupleDesc	desc = CreateTupleDescCopy(RelationGetDescr(rel));
	TupleTableSlot **slots = palloc(sizeof(TupleTableSlot *) * n);

	for (int i = 0; i < n; i++)
		slots[i] = MakeSingleTupleTableSlot(desc, &TTSOpsVirtual);
	return slots;
}

/*
 * pgq_rows_insert
 *		Insert the rows in n filled slots into a table and its indexes.
 */
void
pgq_rows_insert(Relation rel, TupleTableSlot **slots, int n)
{
	EState	   *estate = CreateExecutorState();
	ResultRelInfo *rri = makeNode(ResultRelInfo);

	InitResultRelInfo(rri, rel, 1, NULL, 0);
	ExecOpenIndices(rri, false);
	table_multi_insert(rel, slots, n, GetCurrentCommandId(true), 0, NULL);
	for (int i = 0; i < n; i++)
	{
		ResetPerTupleExprContext(estate);
		list_free(ExecInsertIndexTuples(rri, slots[i], estate, false, false, NULL, NIL));
	}
	ExecCloseIndices(rri);
	FreeExecutorState(estate);
	/* later reads of this statement see the rows, as after an SPI insert */
	CommandCounterIncrement();
}

/*
 * pgq_rows_free
 *		Drop slots made by pgq_rows_slots.
 */
void
pgq_rows_free(TupleTableSlot **slots, int n)
{
	for (int i = 0; i < n; i++)
		ExecDropSingleTupleTableSlot(slots[i]);
	pfree(slots);
}
