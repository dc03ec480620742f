/*-------------------------------------------------------------------------
 *
 * rows.h
 *	  Rows written straight into a block's tables (rows.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGQUEUE_ROWS_H
#define PGQUEUE_ROWS_H

#include "executor/tuptable.h"
#include "utils/rel.h"

extern TupleTableSlot **pgq_rows_slots(Relation rel, int n);
extern void pgq_rows_insert(Relation rel, TupleTableSlot **slots, int n);
extern void pgq_rows_free(TupleTableSlot **slots, int n);

#endif							/* PGQUEUE_ROWS_H */
