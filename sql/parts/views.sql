/*
 * views.sql: the inspection views and the functions they call.  The
 * monitor role reads the views; the functions that read pgqueue's tables
 * for them run as the extension's owner (SECURITY DEFINER), since a view
 * lends its owner's rights to the tables it names, not to functions.
 */

/*
 * _counters: a queue's shared counters since server start and its waiting
 * pops now (NULL without shared memory)
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._counters(queue text, OUT pushed bigint,
													  OUT popped bigint, OUT acked bigint,
													  OUT failed bigint, OUT aborted bigint,
													  OUT waiters integer)
RETURNS record
LANGUAGE c STRICT SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_counters';

/*
 * _key_blocked: whether a job of a queue waits behind its ordering key:
 * another job of the key with a lower id is unfinished, or one is executing.
 * The jobs before it are read nearest first, where an unfinished one is,
 * so that a job behind many finished ones of its key costs one look, not
 * one a finished job; only the first unfinished job of a key reads on.
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._key_blocked(queue_id integer, key text, job_id bigint)
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
SELECT coalesce((
	SELECT true FROM pgqueue_data.job_store o
	 CROSS JOIN LATERAL pgqueue_internal._job_state(o.queue_id, o.job_id, o.priority, o.tenant) l
	 WHERE o.queue_id = $1 AND o.key = $2 AND o.job_id < $3
	   AND (l.state IS NULL OR l.state NOT IN ('d', 'x'))
	 ORDER BY o.job_id DESC LIMIT 1), false)
	OR EXISTS (
	SELECT 1 FROM pgqueue_data.job_store o
	 CROSS JOIN LATERAL pgqueue_internal._job_state(o.queue_id, o.job_id, o.priority, o.tenant) l
	 WHERE o.queue_id = $1 AND o.key = $2 AND o.job_id > $3 AND l.state = 'e')
$$;

/* jobs: every live job with its current state */
CREATE OR REPLACE VIEW pgqueue.jobs AS
SELECT q.name AS queue,
	   j.job_id,
	   CASE WHEN j.key IS NOT NULL
				 AND pgqueue_internal._state(s.state, s.due_at, clock_timestamp()) = 'available'
				 AND pgqueue_internal._key_blocked(j.queue_id, j.key, j.job_id) THEN 'blocked'
			ELSE pgqueue_internal._state(s.state, s.due_at, clock_timestamp()) END AS state,
	   j.key,
	   j.tenant,
	   j.priority,
	   coalesce(s.attempt, 0) AS attempt,
	   coalesce(s.fails, 0) AS failures,
	   s.error AS last_error,
	   j.payload,
	   j.enqueued_at,
	   CASE WHEN s.state IN ('a', 's', 'f') THEN s.due_at
			WHEN s.state IS NULL THEN coalesce(j.run_at, j.enqueued_at) END AS run_at,
	   CASE WHEN s.state = 'e' THEN s.due_at END AS lease_until,
	   coalesce(s.at, j.enqueued_at) AS updated_at
  FROM pgqueue_data.job_store j
  JOIN pgqueue.queue q ON q.queue_id = j.queue_id
 CROSS JOIN LATERAL pgqueue_internal._job_state(j.queue_id, j.job_id, j.priority, j.tenant) s;

/*
 * _job_claim_rows: the transitions of a job that its claim record holds,
 * as status rows (claimed, and acked if an ack of the claim took it), for
 * job_history (compaction archives them with _block_claim_rows)
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._job_claim_rows(queue_id integer, job_id bigint,
															priority integer, tenant text)
RETURNS SETOF pgqueue_data.status_store
LANGUAGE c STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_job_claim_rows';

/*
 * job_history: every transition of every job, live (status rows, and those
 * that claim records hold) and archived
 */
CREATE OR REPLACE VIEW pgqueue.job_history AS
SELECT q.name AS queue,
	   s.job_id,
	   s.seq,
	   CASE s.state WHEN 'a' THEN 'available' WHEN 's' THEN 'scheduled'
		   WHEN 'e' THEN 'executing' WHEN 'd' THEN 'succeeded'
		   WHEN 'f' THEN 'failed' WHEN 'x' THEN 'aborted' END AS state,
	   s.attempt,
	   s.fails AS failures,
	   s.at,
	   CASE WHEN s.state = 'e' THEN s.due_at END AS lease_until,
	   CASE WHEN s.state IN ('a', 's', 'f') THEN s.due_at END AS run_at,
	   s.error,
	   false AS archived
  FROM (SELECT st.queue_id, st.job_id, st.seq, st.state, st.attempt, st.fails, st.at,
			   st.due_at, st.error
		  FROM pgqueue_data.status_store st
		UNION ALL
		SELECT j.queue_id, j.job_id, c.seq, c.state, c.attempt, c.fails, c.at, c.due_at, c.error
		  FROM pgqueue_data.job_store j
		 CROSS JOIN LATERAL pgqueue_internal._job_claim_rows(j.queue_id, j.job_id, j.priority,
															 j.tenant) c) s
  JOIN pgqueue.queue q ON q.queue_id = s.queue_id
UNION ALL
SELECT q.name, a.job_id, a.seq,
	   CASE a.state WHEN 'a' THEN 'available' WHEN 's' THEN 'scheduled'
		   WHEN 'e' THEN 'executing' WHEN 'd' THEN 'succeeded'
		   WHEN 'f' THEN 'failed' WHEN 'x' THEN 'aborted' END,
	   a.attempt, a.fails, a.at,
	   CASE WHEN a.state = 'e' THEN a.due_at END,
	   CASE WHEN a.state IN ('a', 's', 'f') THEN a.due_at END,
	   a.error,
	   true
  FROM pgqueue_data.archive_store a
  JOIN pgqueue.queue q ON q.queue_id = a.queue_id;

/*
 * _block_stats: the jobs of one block, those not finished (succeeded or
 * aborted) and the size of its tables, read in one pass (stats.c); NULLs
 * if the block or its tables are gone (a compaction that committed since
 * the statement's snapshot dropped them)
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._block_stats(queue_id integer, block_no integer,
									 OUT jobs bigint, OUT unfinished bigint, OUT bytes bigint)
RETURNS record
LANGUAGE c STRICT STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_block_stats';

/* blocks: each block with its id range, state, counts and size */
CREATE OR REPLACE VIEW pgqueue.blocks AS
SELECT q.name AS queue, b.block_no, b.first_id, b.last_id, b.state,
	   st.jobs, st.unfinished, st.bytes, b.created_at
  FROM pgqueue.block b
  JOIN pgqueue.queue q ON q.queue_id = b.queue_id
  CROSS JOIN LATERAL pgqueue_internal._block_stats(b.queue_id, b.block_no) st
 WHERE st.jobs IS NOT NULL;

/*
 * _queue_stats: the jobs of the blocks block_nos of a queue per state of
 * pgqueue.jobs, and the earliest run_at of an available job, read in one
 * pass per block (stats.c); blocks that are gone are left out
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._queue_stats(queue_id integer, block_nos integer[],
									 OUT available bigint, OUT blocked bigint,
									 OUT scheduled bigint, OUT executing bigint,
									 OUT failed bigint, OUT succeeded bigint,
									 OUT aborted bigint, OUT oldest_run_at timestamptz)
RETURNS record
LANGUAGE c STRICT STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_queue_stats';

/*
 * stats: depth per state, jobs in flight, the age of the oldest waiting job,
 * and counters of committed work since the server started (NULL without
 * shared_preload_libraries): pushed, popped, acked, failed attempts, aborted
 * jobs, and pops waiting now.  The counts are those of pgqueue.jobs.
 */
CREATE OR REPLACE VIEW pgqueue.stats AS
SELECT q.name AS queue,
	   s.available,
	   s.blocked,
	   s.scheduled,
	   s.executing,
	   s.failed,
	   s.succeeded,
	   s.aborted,
	   clock_timestamp() - s.oldest_run_at AS oldest_waiting,
	   (SELECT count(*) FROM pgqueue.block b WHERE b.queue_id = q.queue_id) AS blocks,
	   c.pushed,
	   c.popped,
	   c.acked,
	   c.failed AS failed_attempts,
	   c.aborted AS aborted_jobs,
	   c.waiters
  FROM pgqueue.queue q
  CROSS JOIN LATERAL pgqueue_internal._queue_stats(q.queue_id,
		ARRAY(SELECT b.block_no FROM pgqueue.block b WHERE b.queue_id = q.queue_id)) s
  CROSS JOIN LATERAL pgqueue_internal._counters(q.name) c;

/* queues: each queue's definition with its live counts */
CREATE OR REPLACE VIEW pgqueue.queues AS
SELECT q.name AS queue, q.paused, q.block_size, q.default_lease, q.max_attempts,
	   q.backoff_base, q.backoff_cap, q.backoff_jitter, q.notify, q.created_at,
	   q.max_in_flight, q.tenant_max_in_flight, q.max_depth, q.tenant_max_depth,
	   q.push_rate, q.tenant_push_rate, q.pop_rate, q.tenant_pop_rate, q.tenant_weights,
	   s.available, s.blocked, s.scheduled, s.executing, s.failed, s.succeeded, s.aborted,
	   s.oldest_waiting, s.blocks
  FROM pgqueue.queue q
  JOIN pgqueue.stats s ON s.queue = q.name;


/*
 * maintenance: the queues whose maintenance failed in its last round: how
 * many rounds in a row, the last error and when, and when it is tried
 * again
 */
CREATE OR REPLACE VIEW pgqueue.maintenance AS
SELECT q.name AS queue, m.failures, m.last_error, m.last_error_at, m.retry_at
  FROM pgqueue.queue_maintenance m
  JOIN pgqueue.queue q ON q.queue_id = m.queue_id;
