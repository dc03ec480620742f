/*
 * jobs.sql: the hot paths (push, pop and the transitions out of a lease,
 * in C) and the repair functions (forced retry and abort).
 *
 * The hot functions in C run statements that are planned once per block
 * and kept (SPI plan cache).  A generic plan made while a block's tables
 * were small must not read them sequentially once they have grown, before
 * the next ANALYZE: pop and the transitions out of a lease run with
 * enable_seqscan off, so every plan reads by index.  All of them run
 * without JIT: their statements touch a few rows, and compiling them
 * (which high cost estimates would trigger on every call) takes far
 * longer than running them.  Each checks its caller's right on the queue
 * and runs its statements as the extension's owner (privilege.c).
 */

/* queue_push: add one job; returns its id */
CREATE OR REPLACE FUNCTION pgqueue.queue_push(
	queue text,
	payload jsonb,
	key text DEFAULT NULL,
	priority integer DEFAULT 0,
	run_at timestamptz DEFAULT NULL,
	tenant text DEFAULT NULL)
RETURNS bigint
LANGUAGE c
SET search_path = pg_catalog, pgqueue, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'pgq_push';

/* queue_push_batch: add many jobs in one call; returns their ids in order */
CREATE OR REPLACE FUNCTION pgqueue.queue_push_batch(
	queue text,
	payloads jsonb[],
	keys text[] DEFAULT NULL,
	priorities integer[] DEFAULT NULL,
	run_at timestamptz DEFAULT NULL,
	tenants text[] DEFAULT NULL)
RETURNS bigint[]
LANGUAGE c
SET search_path = pg_catalog, pgqueue, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'pgq_push_batch';

/* queue_pop: claim up to n available jobs, each under a lease */
CREATE OR REPLACE FUNCTION pgqueue.queue_pop(
	queue text,
	n integer DEFAULT 1,
	lease interval DEFAULT NULL,
	wait interval DEFAULT '0')
RETURNS SETOF pgqueue.job
LANGUAGE c
SET search_path = pg_catalog, pgqueue, pg_temp
SET enable_seqscan = off
SET jit = off
AS 'MODULE_PATHNAME', 'pgq_pop';

/* queue_ack: mark a leased job succeeded */
CREATE OR REPLACE FUNCTION pgqueue.queue_ack(queue text, job_id bigint,
											 attempt integer DEFAULT NULL)
RETURNS void
LANGUAGE c
SET search_path = pg_catalog, pgqueue, pg_temp
SET enable_seqscan = off
SET jit = off
AS 'MODULE_PATHNAME', 'pgq_ack';

/* queue_ack: mark many leased jobs succeeded, all or none; returns the count */
CREATE OR REPLACE FUNCTION pgqueue.queue_ack(queue text, job_ids bigint[],
											 attempts integer[] DEFAULT NULL)
RETURNS integer
LANGUAGE c
SET search_path = pg_catalog, pgqueue, pg_temp
SET enable_seqscan = off
SET jit = off
AS 'MODULE_PATHNAME', 'pgq_ack_array';

/* queue_fail: record a failed attempt; returns the new state, failed or aborted */
CREATE OR REPLACE FUNCTION pgqueue.queue_fail(
	queue text,
	job_id bigint,
	error text,
	retry_in interval DEFAULT NULL,
	attempt integer DEFAULT NULL)
RETURNS text
LANGUAGE c
SET search_path = pg_catalog, pgqueue, pg_temp
SET enable_seqscan = off
SET jit = off
AS 'MODULE_PATHNAME', 'pgq_fail';

/* queue_extend: renew the lease of a job (heartbeat); returns the new lease end */
CREATE OR REPLACE FUNCTION pgqueue.queue_extend(
	queue text,
	job_id bigint,
	lease interval DEFAULT NULL,
	attempt integer DEFAULT NULL)
RETURNS timestamptz
LANGUAGE c
SET search_path = pg_catalog, pgqueue, pg_temp
SET enable_seqscan = off
SET jit = off
AS 'MODULE_PATHNAME', 'pgq_extend';

/* queue_release: hand a leased job back without counting a failure */
CREATE OR REPLACE FUNCTION pgqueue.queue_release(queue text, job_id bigint,
												 attempt integer DEFAULT NULL)
RETURNS void
LANGUAGE c
SET search_path = pg_catalog, pgqueue, pg_temp
SET enable_seqscan = off
SET jit = off
AS 'MODULE_PATHNAME', 'pgq_release';

/* ------------------------------------------------------------------------
 * Repair: forced retry and abort
 * ------------------------------------------------------------------------ */

/*
 * _retry_allowed: the ids (of jobs of one queue) that a forced retry may
 * move: a job with an ordering key only while no other job of its key is
 * executing, so that at most one job of a key is ever in flight.  The
 * key's jobs are locked first, so no claim of one can slip in until this
 * transaction ends.
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._retry_allowed(qid integer, ids bigint[])
RETURNS bigint[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
BEGIN
	PERFORM 1 FROM pgqueue_data.job_store o
	 WHERE o.queue_id = qid
	   AND o.key IN (SELECT j.key FROM pgqueue_data.job_store j
					  WHERE j.queue_id = qid AND j.job_id = ANY (ids) AND j.key IS NOT NULL)
	   FOR UPDATE OF o;
	RETURN ARRAY(
		SELECT i.id FROM unnest(ids) AS i(id)
		 WHERE NOT EXISTS (
			SELECT 1 FROM pgqueue_data.job_store j
			  JOIN pgqueue_data.job_store o
				ON o.queue_id = j.queue_id AND o.key = j.key AND o.job_id <> j.job_id
			 CROSS JOIN LATERAL pgqueue_internal._job_state(o.queue_id, o.job_id, o.priority,
															o.tenant) l
			 WHERE j.queue_id = qid AND j.job_id = i.id AND l.state = 'e'));
END
$$;

/*
 * _transition: append one operator transition to the current state of the
 * given jobs of one queue (compare-and-append, so a job that changed since
 * it was read is left alone).  op is 'retry' (to available now, failures
 * reset) or 'abort' (to aborted with reason).  Only jobs whose current
 * state is in from_states move.  A job that a claim record holds (only an
 * abort can move it: it is executing) leaves its claim (_claim_abort); the
 * others get a status row.  Returns the ids that moved.
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._transition(qid integer, ids bigint[], op text,
														from_states text[], reason text)
RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
	b record;
	now_ts timestamptz := clock_timestamp();
	held bigint[];
	moved bigint[];
BEGIN
	IF op = 'retry' THEN
		ids := pgqueue_internal._retry_allowed(qid, ids);
	END IF;
	FOR b IN SELECT * FROM pgqueue.block bl WHERE bl.queue_id = qid
			  ORDER BY bl.first_id FOR UPDATE LOOP
		held := '{}';
		IF op = 'abort' THEN
			EXECUTE format($q$
				SELECT coalesce(array_agg(j.job_id), '{}') FROM %1$s j
				 CROSS JOIN LATERAL pgqueue_internal._job_state(j.queue_id, j.job_id, j.priority,
																j.tenant) s
				 WHERE j.job_id = ANY ($1)
				   AND CASE WHEN s.claim_id IS NOT NULL
								 AND pgqueue_internal._state(s.state, s.due_at, $2) = ANY ($3)
							THEN pgqueue_internal._claim_abort(j.queue_id, j.job_id, j.priority,
															   j.tenant, $4)
							ELSE false END$q$,
				pgqueue_internal._rel('j', b.queue_id, b.block_no))
			INTO held
			USING ids, now_ts, from_states, reason;
		END IF;
		EXECUTE format($q$
			WITH l AS (
				SELECT j.job_id, s.seq, s.state, s.attempt, s.fails, s.due_at, s.error
				  FROM %1$s j
				  LEFT JOIN LATERAL (SELECT * FROM %2$s st WHERE st.job_id = j.job_id
									  ORDER BY st.seq DESC LIMIT 1) s ON true
				 WHERE j.job_id = ANY ($1) AND NOT j.job_id = ANY ($7)
				   AND (s.seq IS NOT NULL
						OR (pgqueue_internal._job_state(j.queue_id, j.job_id, j.priority,
														j.tenant)).claim_id IS NULL)),
			i AS (
				INSERT INTO %2$s (queue_id, job_id, seq, state, attempt, fails, at, due_at, error)
				SELECT $2, l.job_id, coalesce(l.seq, 0) + 1,
					   CASE WHEN $3 = 'retry' THEN 'a' ELSE 'x' END,
					   coalesce(l.attempt, 0),
					   CASE WHEN $3 = 'retry' THEN 0 ELSE coalesce(l.fails, 0) END,
					   $4,
					   CASE WHEN $3 = 'retry' THEN $4 END,
					   /* a reason is kept to 2000 characters, as errors are */
					   CASE WHEN $3 = 'retry' THEN l.error ELSE left($5, 2000) END
				  FROM l
				 WHERE pgqueue_internal._state(l.state, l.due_at, $4) = ANY ($6)
				ON CONFLICT DO NOTHING
				RETURNING job_id)
			SELECT coalesce(array_agg(job_id), '{}') FROM i$q$,
			pgqueue_internal._rel('j', b.queue_id, b.block_no),
			pgqueue_internal._rel('s', b.queue_id, b.block_no))
		INTO moved
		USING ids, qid, op, now_ts, reason, from_states, held;
		moved := moved || held;
		IF cardinality(moved) > 0 THEN
			IF op = 'retry' AND b.state = 'done' THEN
				PERFORM pgqueue_internal._block_revive(b.queue_id, b.block_no);
			END IF;
			PERFORM pgqueue_internal._wake((SELECT q.name FROM pgqueue.queue q
											 WHERE q.queue_id = qid),
										   CASE WHEN op = 'retry' THEN now_ts END,
										   CASE WHEN op = 'abort' THEN cardinality(moved)
												ELSE 0 END);
			RETURN QUERY SELECT unnest(moved);
		END IF;
	END LOOP;
END
$$;

/* _check_one: the shared checks of the single-job forms of retry and abort */
CREATE OR REPLACE FUNCTION pgqueue_internal._check_one(queue text, job_id bigint,
													   allowed text[], verb text)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
	qid integer := pgqueue_internal._queue_id(queue);
	cur text;
BEGIN
	IF job_id IS NULL THEN
		RAISE EXCEPTION 'job_id must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT j.state INTO cur FROM pgqueue.jobs j
	 WHERE j.queue = _check_one.queue AND j.job_id = _check_one.job_id;
	IF NOT FOUND THEN
		/*
		 * A lookup that waited for a compaction to commit was planned with
		 * the blocks before it; a new statement sees the moved job.
		 */
		SELECT j.state INTO cur FROM pgqueue.jobs j
		 WHERE j.queue = _check_one.queue AND j.job_id = _check_one.job_id;
	END IF;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'job % does not exist in queue "%"', job_id, queue
			USING ERRCODE = 'PQ002';
	END IF;
	IF NOT cur = ANY (allowed) THEN
		RAISE EXCEPTION 'cannot % job %: it is %', verb, job_id, cur
			USING ERRCODE = 'PQ003',
				  DETAIL = format('Only jobs that are %s can be %s.',
								  array_to_string(allowed, ', '),
								  CASE verb WHEN 'retry' THEN 'retried' ELSE 'aborted' END);
	END IF;
	RETURN qid;
END
$$;

/*
 * queue_retry: make one failed, aborted or scheduled job available now, with
 * its failure count reset.  Returns false if the job was already available.
 */
CREATE OR REPLACE FUNCTION pgqueue_internal.queue_retry(queue text, job_id bigint)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
	qid integer := pgqueue_internal._check_one(queue, job_id,
											   ARRAY['available', 'blocked', 'failed', 'aborted',
													 'scheduled'], 'retry');
BEGIN
	IF (SELECT j.state FROM pgqueue.jobs j
		 WHERE j.queue = queue_retry.queue AND j.job_id = queue_retry.job_id)
	   IN ('available', 'blocked') THEN
		RETURN false;
	END IF;
	IF cardinality(pgqueue_internal._retry_allowed(qid, ARRAY[job_id])) = 0 THEN
		RAISE EXCEPTION 'cannot retry job %: another job of its key is executing', job_id
			USING ERRCODE = 'PQ003',
				  DETAIL = 'At most one job of an ordering key is in flight.',
				  HINT = 'Retry it when that job has finished.';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pgqueue_internal._transition(qid, ARRAY[job_id], 'retry',
															  ARRAY['failed', 'aborted',
																	'scheduled'], NULL)) THEN
		RAISE EXCEPTION 'could not retry job %: it changed concurrently', job_id
			USING ERRCODE = 'serialization_failure', HINT = 'Try again.';
	END IF;
	RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION pgqueue.queue_retry(queue text, job_id bigint)
RETURNS boolean
LANGUAGE c
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_admin_call';

/* _bulk_ids: ids of a queue's jobs matching a state, error pattern and time window */
CREATE OR REPLACE FUNCTION pgqueue_internal._bulk_ids(queue text, state text, error_like text,
													  since timestamptz, until timestamptz,
													  allowed text[])
RETURNS bigint[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
BEGIN
	PERFORM pgqueue_internal._queue_id(queue);
	IF state IS NULL THEN
		RAISE EXCEPTION 'state must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF NOT state = ANY (allowed) THEN
		RAISE EXCEPTION 'invalid state filter "%"', state
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('The state must be one of %s.', array_to_string(allowed, ', '));
	END IF;
	IF since IS NOT NULL AND until IS NOT NULL AND since > until THEN
		RAISE EXCEPTION 'invalid time window: since is after until'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	RETURN ARRAY(
		SELECT j.job_id FROM pgqueue.jobs j
		 WHERE j.queue = _bulk_ids.queue
		   AND j.state = _bulk_ids.state
		   AND (error_like IS NULL OR j.last_error ILIKE error_like)
		   AND (since IS NULL OR j.updated_at >= since)
		   AND (until IS NULL OR j.updated_at < until)
		 ORDER BY j.job_id);
END
$$;

/*
 * queue_retry (bulk): retry every job of a queue in the given state (failed,
 * aborted or scheduled) whose last error matches error_like (ILIKE) and whose
 * last change falls in [since, until).  Returns the number retried.
 */
CREATE OR REPLACE FUNCTION pgqueue_internal.queue_retry(queue text, state text, error_like text,
														since timestamptz, until timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
	allowed text[] := ARRAY['failed', 'aborted', 'scheduled'];
	ids bigint[] := pgqueue_internal._bulk_ids(queue, state, error_like, since, until, allowed);
BEGIN
	RETURN (SELECT count(*) FROM pgqueue_internal._transition(pgqueue_internal._queue_id(queue),
															  ids, 'retry', ARRAY[state], NULL));
END
$$;

CREATE OR REPLACE FUNCTION pgqueue.queue_retry(
	queue text,
	state text,
	error_like text DEFAULT NULL,
	since timestamptz DEFAULT NULL,
	until timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE c
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_admin_call';

/*
 * queue_abort: move one unfinished job to aborted (dead letter) with a
 * reason.  A lease held on it is revoked: its ack will fail with lease lost.
 */
CREATE OR REPLACE FUNCTION pgqueue_internal.queue_abort(queue text, job_id bigint, reason text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
	allowed text[] := ARRAY['available', 'blocked', 'scheduled', 'executing', 'failed'];
	qid integer;
BEGIN
	IF reason IS NULL THEN
		RAISE EXCEPTION 'reason must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	qid := pgqueue_internal._check_one(queue, job_id, allowed, 'abort');
	IF NOT EXISTS (SELECT 1 FROM pgqueue_internal._transition(qid, ARRAY[job_id], 'abort',
															  allowed, reason)) THEN
		RAISE EXCEPTION 'could not abort job %: it changed concurrently', job_id
			USING ERRCODE = 'serialization_failure', HINT = 'Try again.';
	END IF;
END
$$;

CREATE OR REPLACE FUNCTION pgqueue.queue_abort(queue text, job_id bigint, reason text)
RETURNS void
LANGUAGE c
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_admin_call';

/* queue_abort (bulk): abort every matching unfinished job; returns the count */
CREATE OR REPLACE FUNCTION pgqueue_internal.queue_abort(queue text, state text, reason text,
														error_like text, since timestamptz,
														until timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
	allowed text[] := ARRAY['available', 'blocked', 'scheduled', 'executing', 'failed'];
	ids bigint[];
BEGIN
	IF reason IS NULL THEN
		RAISE EXCEPTION 'reason must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	ids := pgqueue_internal._bulk_ids(queue, state, error_like, since, until, allowed);
	/* a blocked job is available as far as its status goes */
	RETURN (SELECT count(*) FROM pgqueue_internal._transition(
				pgqueue_internal._queue_id(queue), ids, 'abort',
				ARRAY[CASE state WHEN 'blocked' THEN 'available' ELSE state END], reason));
END
$$;

CREATE OR REPLACE FUNCTION pgqueue.queue_abort(
	queue text,
	state text,
	reason text,
	error_like text DEFAULT NULL,
	since timestamptz DEFAULT NULL,
	until timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE c
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_admin_call';
