/*
 * 03_finish.sql: the transitions out of a lease: queue_ack (single and
 * array), queue_fail (backoff, retry_in, max_attempts), queue_extend,
 * queue_release, lease expiry through maintain(), and what pgqueue.jobs,
 * pgqueue.job_history and pgqueue.stats show of them.
 */
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off

BEGIN;
SELECT plan(46);

-- ack
SELECT pgqueue.queue_create('t_ack') \g /dev/null
SELECT is(pgqueue.queue_push_batch('t_ack', array_fill('{}'::jsonb, ARRAY[6])),
		  ARRAY[1, 2, 3, 4, 5, 6]::bigint[], 'push six jobs');
SELECT is((SELECT count(*) FROM pgqueue.queue_pop('t_ack', 6)), 6::bigint, 'pop six jobs');
SELECT lives_ok($$SELECT pgqueue.queue_ack('t_ack', 1)$$, 'ack one job');
SELECT lives_ok($$SELECT pgqueue.queue_ack('t_ack', 2, attempt => 1)$$,
				'ack one job with its attempt');
SELECT is(pgqueue.queue_ack('t_ack', ARRAY[3, 4, 4, 3]::bigint[]), 2,
		  'ack of an array returns the count, duplicates counted once');
SELECT is(pgqueue.queue_ack('t_ack', ARRAY[5]::bigint[], attempts => ARRAY[1]), 1,
		  'ack of an array with attempts');
SELECT is(pgqueue.queue_ack('t_ack', '{}'::bigint[]), 0, 'ack of an empty array returns 0');
SELECT results_eq(
	$$SELECT job_id, state, attempt, lease_until IS NULL FROM pgqueue.jobs
	   WHERE queue = 't_ack' ORDER BY job_id$$,
	$$VALUES (1::bigint, 'succeeded', 1, true), (2, 'succeeded', 1, true),
			 (3, 'succeeded', 1, true), (4, 'succeeded', 1, true),
			 (5, 'succeeded', 1, true), (6, 'executing', 1, false)$$,
	'acked jobs are succeeded, the others still executing');
SELECT is_empty($$SELECT * FROM pgqueue.queue_pop('t_ack', 10)$$,
				'succeeded jobs are never popped again');

-- fail: exponential backoff without jitter, retry_in, max_attempts
SELECT pgqueue.queue_create('t_fail', max_attempts => 3, backoff_base => '10 seconds',
							backoff_cap => '1 hour', backoff_jitter => 0) \g /dev/null
SELECT is(pgqueue.queue_push('t_fail', '{"f": 1}'), 1::bigint, 'push a job to fail');
SELECT results_eq($$SELECT job_id, attempt FROM pgqueue.queue_pop('t_fail')$$,
				  $$VALUES (1::bigint, 1)$$, 'the first claim is attempt 1');
SELECT is(pgqueue.queue_fail('t_fail', 1, 'connection refused'), 'failed',
		  'fail returns failed while attempts remain');
SELECT results_eq(
	$$SELECT state, attempt, failures, last_error, lease_until IS NULL FROM pgqueue.jobs
	   WHERE queue = 't_fail' AND job_id = 1$$,
	$$VALUES ('failed', 1, 1, 'connection refused', true)$$,
	'a failed job shows failed with its failure count and error');
SELECT ok((SELECT run_at BETWEEN clock_timestamp() + interval '9 seconds'
							 AND clock_timestamp() + interval '10 seconds'
			 FROM pgqueue.jobs WHERE queue = 't_fail' AND job_id = 1),
		  'first failure retries after backoff_base (10 s)');
SELECT is_empty($$SELECT * FROM pgqueue.queue_pop('t_fail')$$,
				'a failed job is not popped before its retry time');
SELECT is(pgqueue.queue_retry('t_fail', 1), true, 'queue_retry makes it due now');
SELECT results_eq($$SELECT job_id, attempt FROM pgqueue.queue_pop('t_fail')$$,
				  $$VALUES (1::bigint, 2)$$, 'the retried job is popped as attempt 2');
SELECT is(pgqueue.queue_fail('t_fail', 1, 'timeout', retry_in => '0'), 'failed',
		  'fail with retry_in => 0');
SELECT results_eq($$SELECT job_id, attempt FROM pgqueue.queue_pop('t_fail')$$,
				  $$VALUES (1::bigint, 3)$$,
				  'a job failed with retry_in => 0 is popped again at once, next attempt');
SELECT is(pgqueue.queue_fail('t_fail', 1, 'timeout again'), 'failed',
		  'fail of the second failure (retry reset the count)');
SELECT ok((SELECT failures = 2
				  AND run_at BETWEEN clock_timestamp() + interval '19 seconds'
								 AND clock_timestamp() + interval '20 seconds'
			 FROM pgqueue.jobs WHERE queue = 't_fail' AND job_id = 1),
		  'second failure retries after backoff_base * 2 (20 s)');

SELECT is(pgqueue.queue_push('t_fail', '{"f": 2}'), 2::bigint, 'push a job to exhaust');
SELECT is((SELECT attempt FROM pgqueue.queue_pop('t_fail')), 1, 'claim 1 of job 2');
SELECT is(pgqueue.queue_fail('t_fail', 2, 'e1', retry_in => '0'), 'failed', 'failure 1 of 3');
SELECT is((SELECT attempt FROM pgqueue.queue_pop('t_fail')), 2, 'claim 2 of job 2');
SELECT is(pgqueue.queue_fail('t_fail', 2, 'e2', retry_in => '0'), 'failed', 'failure 2 of 3');
SELECT is((SELECT attempt FROM pgqueue.queue_pop('t_fail')), 3, 'claim 3 of job 2');
SELECT is(pgqueue.queue_fail('t_fail', 2, 'e3', retry_in => '0'), 'aborted',
		  'failure 3 of 3 (max_attempts) aborts the job');
SELECT results_eq(
	$$SELECT state, attempt, failures, last_error, run_at IS NULL FROM pgqueue.jobs
	   WHERE queue = 't_fail' AND job_id = 2$$,
	$$VALUES ('aborted', 3, 3, 'e3', true)$$,
	'the aborted job keeps its attempt, failures and last error');
SELECT is_empty($$SELECT * FROM pgqueue.queue_pop('t_fail', 10)$$,
				'an aborted job is not popped (job 1 is waiting for its backoff)');

-- backoff cap
SELECT pgqueue.queue_create('t_cap', backoff_base => '10 seconds', backoff_cap => '15 seconds',
							backoff_jitter => 0) \g /dev/null
SELECT is(pgqueue.queue_push('t_cap', '{}'), 1::bigint, 'push a job to fail twice');
SELECT is((SELECT attempt FROM pgqueue.queue_pop('t_cap')), 1, 'claim 1');
SELECT is(pgqueue.queue_fail('t_cap', 1, 'e1', retry_in => '0'), 'failed', 'failure 1');
SELECT is((SELECT attempt FROM pgqueue.queue_pop('t_cap')), 2, 'claim 2');
SELECT is(pgqueue.queue_fail('t_cap', 1, 'e2'), 'failed', 'failure 2');
SELECT ok((SELECT run_at BETWEEN clock_timestamp() + interval '14 seconds'
							 AND clock_timestamp() + interval '15 seconds'
			 FROM pgqueue.jobs WHERE queue = 't_cap' AND job_id = 1),
		  'the backoff is capped at backoff_cap (15 s, not 20 s)');

-- extend
SELECT pgqueue.queue_create('t_extend') \g /dev/null
SELECT is(pgqueue.queue_push('t_extend', '{}'), 1::bigint, 'push a job to extend');
SELECT ok((SELECT lease_until < clock_timestamp() + interval '1 minute'
			 FROM pgqueue.queue_pop('t_extend', lease => '1 minute')),
		  'pop with a one-minute lease');
SELECT ok(pgqueue.queue_extend('t_extend', 1, lease => '1 hour')
		  BETWEEN clock_timestamp() + interval '59 minutes' AND clock_timestamp() + interval '1 hour',
		  'extend returns the new lease end, about now + lease');
SELECT ok((SELECT state = 'executing' AND attempt = 1
				  AND lease_until > clock_timestamp() + interval '59 minutes'
			 FROM pgqueue.jobs WHERE queue = 't_extend' AND job_id = 1),
		  'the extended job is still executing, same attempt, with the new lease');
SELECT ok(pgqueue.queue_extend('t_extend', 1, attempt => 1)
		  BETWEEN clock_timestamp() + interval '29 seconds' AND clock_timestamp() + interval '30 seconds',
		  'extend without a lease renews by the default lease');

-- release: available again without counting a failure
SELECT lives_ok($$SELECT pgqueue.queue_release('t_extend', 1)$$, 'release the job');
SELECT results_eq(
	$$SELECT state, failures, lease_until IS NULL FROM pgqueue.jobs
	   WHERE queue = 't_extend' AND job_id = 1$$,
	$$VALUES ('available', 0, true)$$,
	'a released job is available with no failure counted');
SELECT results_eq($$SELECT job_id, attempt FROM pgqueue.queue_pop('t_extend')$$,
				  $$VALUES (1::bigint, 2)$$,
				  'a released job is popped again at once as the next attempt');

-- job_history lists every transition
SELECT results_eq(
	$$SELECT seq, state, attempt, failures, error FROM pgqueue.job_history
	   WHERE queue = 't_fail' AND job_id = 2 ORDER BY seq$$,
	$$VALUES (1, 'executing', 1, 0, NULL::text), (2, 'failed', 1, 1, 'e1'),
			 (3, 'executing', 2, 1, 'e1'), (4, 'failed', 2, 2, 'e2'),
			 (5, 'executing', 3, 2, 'e2'), (6, 'aborted', 3, 3, 'e3')$$,
	'job_history lists every transition of a job in order');
SELECT ok((SELECT bool_and(at BETWEEN now() AND clock_timestamp())
				  AND bool_and((state = 'executing') = (lease_until IS NOT NULL))
			 FROM pgqueue.job_history WHERE queue = 't_fail' AND job_id = 2),
		  'job_history has the time of each transition and the lease of each claim');

SELECT * FROM finish();
ROLLBACK;
