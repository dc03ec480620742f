/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  Every difference between the PostgreSQL versions pgqueue builds on.
 *
 * pgqueue targets PostgreSQL 15 and later; keep all PG_VERSION_NUM tests
 * in this file.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PGQUEUE_COMPAT_H
#define PGQUEUE_COMPAT_H

#if PG_VERSION_NUM < 150000
#error "pgqueue requires PostgreSQL 15 or later"
#endif

#endif							/* PGQUEUE_COMPAT_H */
