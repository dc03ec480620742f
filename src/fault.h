/*-------------------------------------------------------------------------
 *
 * fault.h
 *	  Fault injection for tests (pgqueue.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGQUEUE_FAULT_H
#define PGQUEUE_FAULT_H

extern void pgq_fault_at(const char *step);

#endif							/* PGQUEUE_FAULT_H */
