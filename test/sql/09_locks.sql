--
-- 09_locks: a pop holds the locks of the blocks it claims from, not of the
-- whole backlog
--
--   Each block a transaction locks takes entries of the shared lock table,
--   which max_locks_per_transaction sizes for the whole server.  A pop that
--   kept the locks of every block it read failed with 53200 "out of shared
--   memory" once a few concurrent pops faced a backlog of some hundred
--   blocks (issue 14, the 30-minute randomized run).  Each case counts the
--   locks of a transaction that popped a few jobs over 100 or 200 blocks: the
--   priorities read from every block, the blocks whose jobs are finished but
--   not yet marked done by maintenance (pgqueue.worker = off), the key
--   probe of a keyed job over the earlier blocks, and the count of a queue
--   with a max_in_flight limit.  The bound is far below the locks of 100
--   blocks (three tables each).
--
--   Mutations, each built into a private install, made it fail: the lanes
--   read with the block kept open (1414, 717 and 1414 locks); blocks with
--   nothing to claim kept open (317, 317); the key probe keeping the blocks
--   it read (317 in the keyed case); the count of the limited queue outside
--   a subtransaction rolled back (817).
\set SHOW_CONTEXT never

CREATE FUNCTION my_locks() RETURNS text
LANGUAGE sql AS $$
	SELECT CASE WHEN count(*) < 40 THEN 'few' ELSE count(*) || ' locks' END
	  FROM pg_catalog.pg_locks WHERE pid = pg_catalog.pg_backend_pid()
$$;

-- 200 blocks of 100; the first 100 are finished (popped and acked)
SELECT pgqueue.queue_create('lk', block_size => 100);
SELECT array_length(pgqueue.queue_push_batch('lk',
		   (SELECT array_agg('{}'::jsonb) FROM generate_series(1, 20000))), 1) AS pushed;
WITH p AS (SELECT job_id, attempt FROM pgqueue.queue_pop('lk', 10000))
SELECT pgqueue.queue_ack('lk', array_agg(job_id), array_agg(attempt)) AS acked FROM p;
-- 99 finished blocks and a keyed job in the last one
SELECT pgqueue.queue_create('lkk', block_size => 100);
SELECT array_length(pgqueue.queue_push_batch('lkk',
		   (SELECT array_agg('{}'::jsonb) FROM generate_series(1, 9900))), 1) AS pushed;
WITH p AS (SELECT job_id, attempt FROM pgqueue.queue_pop('lkk', 9900))
SELECT pgqueue.queue_ack('lkk', array_agg(job_id), array_agg(attempt)) AS acked FROM p;
SELECT pgqueue.queue_push('lkk', '{}', key => 'k') > 0 AS keyed;
-- a queue counted for its limit
SELECT pgqueue.queue_create('lf', block_size => 100, max_in_flight => 100000);
SELECT array_length(pgqueue.queue_push_batch('lf',
		   (SELECT array_agg('{}'::jsonb) FROM generate_series(1, 20000))), 1) AS pushed;

-- a new session: nothing is remembered of the blocks' priorities
\c
BEGIN;
SELECT count(*) AS popped FROM pgqueue.queue_pop('lk', 5);
SELECT my_locks();
ROLLBACK;

-- the keyed job: its key is probed in the blocks before its own
\c
BEGIN;
SELECT count(*) AS popped, count(key) AS keyed FROM pgqueue.queue_pop('lkk', 5);
SELECT my_locks();
ROLLBACK;

-- the first pop of a limited queue counts its jobs in every block
\c
BEGIN;
SELECT count(*) AS popped FROM pgqueue.queue_pop('lf', 5);
SELECT my_locks();
ROLLBACK;

SELECT pgqueue.queue_drop('lk', force => true);
SELECT pgqueue.queue_drop('lkk', force => true);
SELECT pgqueue.queue_drop('lf', force => true);
DROP FUNCTION my_locks();
