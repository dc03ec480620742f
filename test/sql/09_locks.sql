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
--   not yet marked done by maintenance (pgqueue.worker = off), without and
--   with tenants, blocks with status rows none of which is due, blocks
--   whose due status rows are of another priority than the lane's, the key
--   probe of a keyed job over the earlier blocks, the count of a queue
--   with a max_in_flight limit, and a maintenance round (lease expiry and
--   the done test read every block that is not done).  The bound is far
--   below the locks of 100 blocks (three tables each).
--
--   Mutations, each built into a private install, made it fail: the lanes
--   read with the block kept open (1414, 717 and 1414 locks in the first
--   three cases); blocks with nothing to claim kept open, tenants' lanes
--   too (317, 317, 1414, 317); the waiting claim run in every block with
--   status rows, due or not (1017 in the status rows case); the waiting
--   claim run for a lane whatever the priority of the due rows (found by
--   the 30-minute run; 1014 in the priorities case); the key probe
--   keeping the blocks it read (317 in the keyed case); the count of the
--   limited queue outside a subtransaction rolled back (817); maintenance
--   keeping every block it looked at (1064).
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
-- 200 blocks of which the first 100 are executing, each with a job whose
-- lease was extended (a status row)
SELECT pgqueue.queue_create('lm', block_size => 100);
SELECT array_length(pgqueue.queue_push_batch('lm',
		   (SELECT array_agg('{}'::jsonb) FROM generate_series(1, 20000))), 1) AS pushed;
SELECT count(*) AS popped FROM pgqueue.queue_pop('lm', 10000, '1 hour');
SELECT count(pgqueue.queue_extend('lm', b * 100 + 1, '2 hours')) AS extended
  FROM generate_series(0, 99) b;
-- (the round that makes block 200 ahead)
SELECT pgqueue.maintain('lm')->'errors' AS errors;
-- 100 blocks of 100, all executing: a job of priority 9 in each, and one
-- released job of priority 0 (due, a status row)
SELECT pgqueue.queue_create('lp', block_size => 100);
SELECT array_length(pgqueue.queue_push_batch('lp', array_agg('{}'::jsonb),
		   priorities => array_agg(CASE WHEN i % 100 = 1 THEN 9 ELSE 0 END)), 1) AS pushed
  FROM generate_series(1, 10000) i;
SELECT count(*) AS popped FROM pgqueue.queue_pop('lp', 10000, '1 hour');
SELECT count(pgqueue.queue_release('lp', b * 100 + 2)) AS released
  FROM generate_series(0, 99) b;
-- the same as lk with tenants
SELECT pgqueue.queue_create('lt', block_size => 100);
SELECT array_length(pgqueue.queue_push_batch('lt', array_agg('{}'::jsonb),
		   tenants => array_agg('t' || i % 3)), 1) AS pushed
  FROM generate_series(1, 20000) i;
WITH p AS (SELECT job_id, attempt FROM pgqueue.queue_pop('lt', 10000))
SELECT pgqueue.queue_ack('lt', array_agg(job_id), array_agg(attempt)) AS acked FROM p;
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

-- tenants: their claims are shared out over the lanes of every block
\c
BEGIN;
SELECT count(*) AS popped, count(DISTINCT tenant) AS tenants FROM pgqueue.queue_pop('lt', 6);
SELECT my_locks();
ROLLBACK;

-- status rows (extended leases) in 100 blocks, none due
\c
BEGIN;
SELECT count(*) AS popped FROM pgqueue.queue_pop('lm', 5);
SELECT my_locks();
ROLLBACK;

-- due status rows in 100 blocks, all of priority 0: the lanes of
-- priority 9 have nothing to claim again
\c
BEGIN;
SELECT job_id, priority FROM pgqueue.queue_pop('lp', 1);
SELECT my_locks();
ROLLBACK;

-- a maintenance round over the 200 blocks of lm: none is done, none has
-- a lease to end
\c
BEGIN;
SELECT pgqueue.maintain('lm')->'errors' AS errors;
SELECT my_locks();
ROLLBACK;

SELECT pgqueue.queue_drop('lk', force => true);
SELECT pgqueue.queue_drop('lm', force => true);
SELECT pgqueue.queue_drop('lt', force => true);
SELECT pgqueue.queue_drop('lkk', force => true);
SELECT pgqueue.queue_drop('lf', force => true);
SELECT pgqueue.queue_drop('lp', force => true);
DROP FUNCTION my_locks();
