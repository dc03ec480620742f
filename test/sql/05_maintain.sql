--
-- 05_maintain: pgqueue.maintain() and the block life cycle
--
--   lease expiry, closing full blocks, marking finished blocks done,
--   constraint exclusion of blocks in lookups by job id
--
-- These tests call maintain() by hand; the results assume nothing else
-- maintains these queues meanwhile.
\set SHOW_CONTEXT never

-- maintain() returns what it did as jsonb; with nothing to do, zeros
SELECT pgqueue.maintain();
SELECT pgqueue.maintain('nosuch');
\echo :LAST_ERROR_SQLSTATE

--
-- Lease expiry: a job whose lease ends without ack, fail or extend is
-- available again, counted as a failed attempt, or aborted when that was
-- its last attempt.
--
SELECT pgqueue.queue_create('leases', max_attempts => 2, backoff_jitter => 0);
SELECT pgqueue.queue_push_batch('leases', ARRAY['{"l": 1}', '{"l": 2}', '{"l": 3}']::jsonb[]);
SELECT job_id, attempt FROM pgqueue.queue_pop('leases', 2, lease => '1 millisecond');
SELECT job_id, attempt FROM pgqueue.queue_pop('leases', 1, lease => '1 hour');
SELECT pg_sleep(0.01);
-- until maintenance runs, the expired jobs still show as executing, with
-- their lease in the past
SELECT job_id, state, lease_until < now() AS lease_ended
  FROM pgqueue.jobs WHERE queue = 'leases' ORDER BY job_id;
-- an ack or fail that arrives after the lease ended is rejected: lease lost
\set VERBOSITY terse
SELECT pgqueue.queue_ack('leases', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT pgqueue.queue_fail('leases', 2, 'too late');
\echo :LAST_ERROR_SQLSTATE
SELECT pgqueue.queue_extend('leases', 2);
\set VERBOSITY default
-- and neither changed anything
SELECT job_id, state, attempt, failures FROM pgqueue.jobs WHERE queue = 'leases' ORDER BY job_id;

SELECT pgqueue.maintain('leases');
SELECT job_id, state, attempt, failures,
	   regexp_replace(last_error, ' at .*', ' at ...') AS last_error
  FROM pgqueue.jobs WHERE queue = 'leases' ORDER BY job_id;
-- idempotent: nothing more to do
SELECT pgqueue.maintain('leases');
-- the expired jobs are claimed again as their next attempt
SELECT job_id, attempt FROM pgqueue.queue_pop('leases', 2, lease => '1 millisecond');
SELECT pg_sleep(0.01);
-- the second expiry uses up max_attempts (2): aborted
SELECT pgqueue.maintain();
SELECT job_id, state, attempt, failures,
	   regexp_replace(last_error, ' at .*', ' at ...') AS last_error,
	   run_at, lease_until
  FROM pgqueue.jobs WHERE queue = 'leases' AND job_id IN (1, 2) ORDER BY job_id;
SELECT job_id, seq, state, attempt, failures FROM pgqueue.job_history
 WHERE queue = 'leases' AND job_id = 1 ORDER BY seq;
-- an unexpired lease is left alone
SELECT job_id, state, attempt FROM pgqueue.jobs WHERE queue = 'leases' AND job_id = 3;
SELECT pgqueue.queue_drop('leases', force => true);

--
-- Blocks: a block is open while ids are handed out from its range, closed
-- by maintain() once its range is used up, and done once no job in it is
-- unfinished; pop skips done blocks.
--
SELECT pgqueue.queue_create('blocks', block_size => 100, max_attempts => 1);
SELECT array_length(pgqueue.queue_push_batch('blocks',
		   array_agg(jsonb_build_object('n', i))), 1) AS pushed
  FROM generate_series(1, 100) i;
SELECT block_no, first_id, last_id, state, jobs, unfinished
  FROM pgqueue.blocks WHERE queue = 'blocks' ORDER BY block_no;
-- block 0 is full: maintain closes it
SELECT pgqueue.maintain('blocks');
SELECT block_no, first_id, last_id, state, jobs, unfinished
  FROM pgqueue.blocks WHERE queue = 'blocks' ORDER BY block_no;
SELECT pgqueue.maintain('blocks');
-- the next push opens block 1
SELECT pgqueue.queue_push('blocks', '{"n": 101}');
SELECT block_no, first_id, last_id, state, jobs, unfinished
  FROM pgqueue.blocks WHERE queue = 'blocks' ORDER BY block_no;
-- finish every job of block 0: 99 succeed, one is aborted
SELECT count(*) AS popped FROM pgqueue.queue_pop('blocks', 100);
SELECT pgqueue.queue_ack('blocks', array_agg(job_id))
  FROM pgqueue.jobs WHERE queue = 'blocks' AND job_id BETWEEN 1 AND 99;
SELECT pgqueue.queue_fail('blocks', 100, 'poison message');
SELECT block_no, state, jobs, unfinished
  FROM pgqueue.blocks WHERE queue = 'blocks' ORDER BY block_no;
-- block 0 is closed and finished: maintain marks it done
SELECT pgqueue.maintain('blocks');
SELECT block_no, state, jobs, unfinished
  FROM pgqueue.blocks WHERE queue = 'blocks' ORDER BY block_no;
SELECT pgqueue.maintain('blocks');
-- an open block is never marked done, even with all its jobs finished
SELECT job_id FROM pgqueue.queue_pop('blocks');
SELECT pgqueue.queue_ack('blocks', 101);
SELECT pgqueue.maintain('blocks');
SELECT block_no, state, jobs, unfinished
  FROM pgqueue.blocks WHERE queue = 'blocks' ORDER BY block_no;
-- the jobs of a done block stay visible
SELECT state, count(*) FROM pgqueue.jobs WHERE queue = 'blocks' GROUP BY state ORDER BY state;
-- a forced retry of an aborted job in a done block brings the block back,
-- and pop finds the job again
SELECT pgqueue.queue_retry('blocks', 100);
SELECT block_no, state, jobs, unfinished
  FROM pgqueue.blocks WHERE queue = 'blocks' ORDER BY block_no;
SELECT job_id, attempt, payload FROM pgqueue.queue_pop('blocks');
SELECT pgqueue.queue_ack('blocks', 100);
SELECT pgqueue.maintain('blocks');
SELECT block_no, state, jobs, unfinished
  FROM pgqueue.blocks WHERE queue = 'blocks' ORDER BY block_no;
-- a queue whose jobs are all finished can be dropped
SELECT pgqueue.queue_drop('blocks');

--
-- Looking up a job by id reads only the block whose id range holds it
-- (constraint exclusion on the block tables' CHECK constraints).  Block
-- tables are pgqueue_data.j_<queue id>_<block no> (jobs), s_... (status)
-- and c_... (claims); the queue id is shown as Q.
--
SELECT pgqueue.queue_create('x', block_size => 100);
SELECT array_length(pgqueue.queue_push_batch('x', array_agg(jsonb_build_object('n', i))), 1) AS pushed
  FROM generate_series(1, 250) i;
SELECT block_no, first_id, last_id FROM pgqueue.blocks WHERE queue = 'x' ORDER BY block_no;
-- the relations a query reads, from its plan
CREATE FUNCTION pg_temp.scanned(query text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
	line text;
	qid integer := (SELECT queue_id FROM pgqueue.queue WHERE name = 'x');
BEGIN
	FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || query LOOP
		IF line ~ 'Scan.* on ' AND line !~ 'Bitmap Index Scan' THEN
			RETURN NEXT regexp_replace(substring(line from ' on (\S+)'), '_' || qid || '_', '_Q_');
		END IF;
	END LOOP;
END
$$;
-- (job_store is the empty parent of the block tables; _job_state reads the
-- status rows and claim records of the job's block only)
SELECT relation FROM pg_temp.scanned($$SELECT * FROM pgqueue.jobs WHERE queue = 'x' AND job_id = 42$$) relation
 ORDER BY relation COLLATE "C";
SELECT relation FROM pg_temp.scanned($$SELECT * FROM pgqueue.jobs WHERE queue = 'x' AND job_id = 242$$) relation
 ORDER BY relation COLLATE "C";
SELECT queue, job_id, state, payload FROM pgqueue.jobs WHERE queue = 'x' AND job_id = 42;
SELECT queue, job_id, state, payload FROM pgqueue.jobs WHERE queue = 'x' AND job_id = 242;
SELECT pgqueue.queue_drop('x', force => true);
