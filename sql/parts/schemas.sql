/*
 * schemas.sql: the schemas of a new install (install only; see the
 * Makefile for how the parts make the install and upgrade scripts)
 */

\echo Use "CREATE EXTENSION pgqueue" to load this file. \quit

/*
 * Storage layout
 *
 * Every queue owns a sequence (pgqueue_data.seq_<queue_id>) and a set of
 * blocks.  A block covers a fixed, contiguous range of job ids and is a pair
 * of plain tables in schema pgqueue_data:
 *
 *   j_<queue_id>_<block_no>  jobs, insert-only
 *   s_<queue_id>_<block_no>  status, append-only; (job_id, seq) is unique and
 *                            every transition is a compare-and-append of
 *                            seq + 1 with ON CONFLICT DO NOTHING
 *
 * The block tables inherit from pgqueue_data.job_store and status_store only
 * so that the inspection views can read all of them; push, pop and ack work
 * on the block tables directly and never lock the parents.  CHECK
 * constraints on queue_id and the id range let constraint exclusion skip
 * blocks in lookups by job id.
 *
 * Schema pgqueue holds the API (the functions users call, the views, the
 * job type) and the catalog tables; pgqueue_internal the functions only
 * pgqueue calls; pgqueue_data the queues' tables.
 */

CREATE SCHEMA pgqueue_internal;
CREATE SCHEMA pgqueue_data;
