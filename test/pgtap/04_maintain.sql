/*
 * 04_maintain.sql: lease expiry and the other duties of pgqueue.maintain()
 * (closing full blocks, marking finished blocks done), and the counters
 * of pgqueue.stats and pgqueue.queues.
 *
 * pgqueue stamps leases with the clock, not with the transaction start, so
 * a lease of one millisecond followed by pg_sleep expires inside the test
 * transaction.
 */
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off

BEGIN;
SELECT plan(34);

-- maintain() on an idle queue does nothing and says so
SELECT pgqueue.queue_create('t_exp', max_attempts => 2, block_size => 100) \g /dev/null
SELECT is(pgqueue.maintain('t_exp'),
		  '{"expired_leases": 0, "closed_blocks": 0, "done_blocks": 0, "created_blocks": 0, "compacted": [], "archives_dropped": 0, "errors": []}'::jsonb,
		  'maintain returns jsonb with what it did, here nothing');

-- an expired lease makes the job available again, counted as a failure
SELECT is(pgqueue.queue_push_batch('t_exp', ARRAY['{"e": 1}', '{"e": 2}']::jsonb[]),
		  ARRAY[1, 2]::bigint[], 'push two jobs');
SELECT results_eq($$SELECT job_id, attempt
					   FROM pgqueue.queue_pop('t_exp', 1, lease => '1 millisecond')$$,
				  $$VALUES (1::bigint, 1)$$, 'pop job 1 with a lease of one millisecond');
SELECT results_eq($$SELECT job_id, attempt FROM pgqueue.queue_pop('t_exp', 1, lease => '1 hour')$$,
				  $$VALUES (2::bigint, 1)$$, 'pop job 2 with a lease of one hour');
SELECT pg_sleep(0.01) \g /dev/null
SELECT throws_ok($$SELECT pgqueue.queue_ack('t_exp', 1)$$, 'PQ001',
				 'lease of job 1 has expired',
				 'ack after the lease expired, before maintenance, is rejected as lease lost');
SELECT is(pgqueue.maintain('t_exp') -> 'expired_leases', '1'::jsonb,
		  'maintain expires the one expired lease');
SELECT is(pgqueue.maintain('t_exp') -> 'expired_leases', '0'::jsonb,
		  'maintain is idempotent: a second round expires nothing');
SELECT results_eq(
	$$SELECT state, attempt, failures, last_error LIKE 'lease of attempt 1 expired at %'
		FROM pgqueue.jobs WHERE queue = 't_exp' AND job_id = 1$$,
	$$VALUES ('available', 1, 1, true)$$,
	'the job of an expired lease is available, with the expiry counted as a failure');
SELECT is((SELECT state FROM pgqueue.jobs WHERE queue = 't_exp' AND job_id = 2), 'executing',
		  'a lease that has not expired is left alone');
SELECT throws_ok($$SELECT pgqueue.queue_ack('t_exp', 1)$$, 'PQ001',
				 'lease of job 1 was lost',
				 'ack after the expired lease was taken back is rejected as lease lost');
SELECT throws_ok($$SELECT pgqueue.queue_fail('t_exp', 1, 'late')$$, 'PQ001',
				 'lease of job 1 was lost',
				 'fail after the expired lease was taken back is rejected as lease lost');
SELECT results_eq($$SELECT job_id, attempt FROM pgqueue.queue_pop('t_exp', 1, lease => '1 hour')$$,
				  $$VALUES (1::bigint, 2)$$, 'the job is popped again as attempt 2');
SELECT throws_ok($$SELECT pgqueue.queue_ack('t_exp', 1, attempt => 1)$$, 'PQ001',
				 'lease of job 1 is held by another attempt',
				 'ack by the attempt whose lease expired is rejected while attempt 2 holds it');
SELECT ok(pgqueue.queue_extend('t_exp', 1, lease => '1 millisecond', attempt => 2)
		  < clock_timestamp() + interval '1 second',
		  'extend can also shorten a lease');
SELECT pg_sleep(0.01) \g /dev/null
SELECT is(pgqueue.maintain('t_exp') -> 'expired_leases', '1'::jsonb,
		  'maintain expires the lease of attempt 2');
SELECT results_eq(
	$$SELECT state, attempt, failures FROM pgqueue.jobs WHERE queue = 't_exp' AND job_id = 1$$,
	$$VALUES ('aborted', 2, 2)$$,
	'an expiry that uses up max_attempts aborts the job');
SELECT throws_ok($$SELECT pgqueue.queue_ack('t_exp', 1, attempt => 2)$$, 'PQ001',
				 'lease of job 1 was lost',
				 'a late ack by the attempt whose expiry aborted the job is rejected as lease lost');
SELECT results_eq(
	$$SELECT seq, state, attempt, failures FROM pgqueue.job_history
	   WHERE queue = 't_exp' AND job_id = 1 ORDER BY seq$$,
	$$VALUES (1, 'executing', 1, 0), (2, 'available', 1, 1),
			 (3, 'executing', 2, 1), (4, 'executing', 2, 1), (5, 'aborted', 2, 2)$$,
	'job_history shows the claims, the extension and the expiries');
SELECT lives_ok($$SELECT pgqueue.queue_ack('t_exp', 2)$$,
				'the job whose lease did not expire can still be acked');

-- stats and queues counters
SELECT pgqueue.queue_create('t_stats', backoff_jitter => 0) \g /dev/null
SELECT is(pgqueue.queue_push_batch('t_stats', array_fill('{}'::jsonb, ARRAY[6])),
		  ARRAY[1, 2, 3, 4, 5, 6]::bigint[], 'push six jobs');
SELECT is((SELECT count(*) FROM pgqueue.queue_pop('t_stats', 4)), 4::bigint, 'pop four');
SELECT is(pgqueue.queue_ack('t_stats', ARRAY[1]::bigint[]), 1, 'ack job 1');
SELECT is(pgqueue.queue_fail('t_stats', 2, 'e'), 'failed', 'fail job 2');
SELECT lives_ok($$SELECT pgqueue.queue_abort('t_stats', 3, 'operator')$$, 'abort job 3');
SELECT results_eq(
	$$SELECT available, scheduled, executing, failed, succeeded, aborted, blocks
		FROM pgqueue.stats WHERE queue = 't_stats'$$,
	$$VALUES (2::bigint, 0::bigint, 1::bigint, 1::bigint, 1::bigint, 1::bigint, 1::bigint)$$,
	'pgqueue.stats counts the jobs in each state');
SELECT results_eq(
	$$SELECT available, scheduled, executing, failed, succeeded, aborted, blocks
		FROM pgqueue.queues WHERE queue = 't_stats'$$,
	$$SELECT available, scheduled, executing, failed, succeeded, aborted, blocks
		FROM pgqueue.stats WHERE queue = 't_stats'$$,
	'pgqueue.queues shows the same counts as pgqueue.stats');
SELECT ok((SELECT oldest_waiting >= interval '0' AND oldest_waiting < interval '1 hour'
			 FROM pgqueue.stats WHERE queue = 't_stats'),
		  'oldest_waiting is the age of the oldest available job, not negative');

-- blocks: maintain closes a full block and marks a finished closed block done
SELECT pgqueue.queue_create('t_blk', block_size => 100) \g /dev/null
SELECT is(array_length(pgqueue.queue_push_batch('t_blk', array_fill('{}'::jsonb, ARRAY[101])), 1),
		  101, 'push 101 jobs into blocks of 100');
SELECT is((SELECT count(*) FROM pgqueue.queue_pop('t_blk', 100)), 100::bigint,
		  'pop the 100 jobs of block 0');
SELECT results_eq(
	$$SELECT pgqueue.maintain('t_blk') - ARRAY['expired_leases', 'created_blocks', 'compacted', 'archives_dropped', 'errors']$$,
	$$VALUES ('{"closed_blocks": 1, "done_blocks": 0}'::jsonb)$$,
	'maintain closes the full block 0, not done while it has unfinished jobs');
SELECT is(pgqueue.queue_ack('t_blk', ARRAY(SELECT generate_series(1, 100)::bigint)), 100,
		  'ack the 100 jobs of block 0');
SELECT results_eq(
	$$SELECT pgqueue.maintain('t_blk') - ARRAY['expired_leases', 'created_blocks', 'compacted', 'archives_dropped', 'errors']$$,
	$$VALUES ('{"closed_blocks": 0, "done_blocks": 1}'::jsonb)$$,
	'maintain marks the closed block with no unfinished job done');
SELECT results_eq(
	$$SELECT block_no, state, jobs, unfinished FROM pgqueue.blocks
	   WHERE queue = 't_blk' ORDER BY block_no$$,
	$$VALUES (0, 'done', 100::bigint, 0::bigint), (1, 'open', 1, 1)$$,
	'pgqueue.blocks shows block 0 done and block 1 open');
SELECT results_eq($$SELECT job_id FROM pgqueue.queue_pop('t_blk', 10)$$,
				  $$VALUES (101::bigint)$$,
				  'pop still finds the job in the open block');

SELECT * FROM finish();
ROLLBACK;
