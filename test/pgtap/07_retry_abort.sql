/*
 * 07_retry_abort.sql: repairing with psql: forced retry of aborted, failed
 * and scheduled jobs (single and bulk, filtered by state, error text and
 * time window), and abort (single and bulk), which revokes a lease; the
 * backoff of a job that failed many times.
 */
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off

BEGIN;
SELECT plan(55);

-- forced retry of an aborted job
SELECT pgqueue.queue_create('r', max_attempts => 1, backoff_jitter => 0) \g /dev/null
SELECT is(pgqueue.queue_push('r', '{"r": 1}'), 1::bigint, 'push job 1');
SELECT is((SELECT attempt FROM pgqueue.queue_pop('r')), 1, 'pop job 1');
SELECT is(pgqueue.queue_fail('r', 1, 'disk full'), 'aborted',
		  'the only attempt fails: job 1 is aborted');
SELECT is_empty($$SELECT * FROM pgqueue.queue_pop('r')$$, 'an aborted job is not popped');
SELECT is(pgqueue.queue_retry('r', 1), true, 'queue_retry of an aborted job returns true');
SELECT results_eq(
	$$SELECT failures, attempt, last_error, lease_until IS NULL FROM pgqueue.jobs
	   WHERE queue = 'r' AND job_id = 1$$,
	$$VALUES (0, 1, 'disk full', true)$$,
	'the retried job has its failures reset to 0 and keeps its last error');
SELECT results_eq(
	$$SELECT seq, state, failures FROM pgqueue.job_history
	   WHERE queue = 'r' AND job_id = 1 ORDER BY seq$$,
	$$VALUES (1, 'executing', 0), (2, 'aborted', 1), (3, 'available', 0)$$,
	'job_history shows the forced retry as a transition to available');
SELECT results_eq($$SELECT job_id, attempt FROM pgqueue.queue_pop('r')$$,
				  $$VALUES (1::bigint, 2)$$, 'the retried job is popped again as attempt 2');
SELECT is(pgqueue.queue_fail('r', 1, 'disk full again'), 'aborted',
		  'after a forced retry the job again has max_attempts attempts (here 1)');
SELECT is(pgqueue.queue_retry('r', 1), true, 'retry it once more');
SELECT is((SELECT attempt FROM pgqueue.queue_pop('r')), 3, 'popped as attempt 3');
SELECT lives_ok($$SELECT pgqueue.queue_ack('r', 1, attempt => 3)$$, 'and acked');
SELECT is((SELECT state FROM pgqueue.jobs WHERE queue = 'r' AND job_id = 1), 'succeeded',
		  'the job retried by force finally succeeded');

-- retry of a failed job waiting for its backoff, and of a scheduled job
SELECT pgqueue.queue_create('rf', backoff_base => '1 hour', backoff_cap => '1 hour',
							backoff_jitter => 0) \g /dev/null
SELECT is(pgqueue.queue_push('rf', '{}'), 1::bigint, 'push job 1');
SELECT is((SELECT job_id FROM pgqueue.queue_pop('rf')), 1::bigint, 'pop job 1');
SELECT is(pgqueue.queue_fail('rf', 1, 'e'), 'failed', 'fail job 1: retry in an hour');
SELECT is_empty($$SELECT * FROM pgqueue.queue_pop('rf')$$, 'job 1 waits for its backoff');
SELECT is(pgqueue.queue_retry('rf', 1), true, 'queue_retry of a failed job returns true');
SELECT results_eq($$SELECT job_id, attempt FROM pgqueue.queue_pop('rf')$$,
				  $$VALUES (1::bigint, 2)$$, 'the retried failed job is popped at once');
SELECT lives_ok($$SELECT pgqueue.queue_push('rf', '{"s": 1}', run_at => now() + interval '1 day')$$,
				'push a job scheduled for tomorrow');
-- (guarded so that a failed push above fails these tests, not the whole file)
SELECT is((SELECT pgqueue.queue_retry('rf', 2) FROM pgqueue.jobs
			WHERE queue = 'rf' AND job_id = 2 AND state = 'scheduled'),
		  true, 'queue_retry of a scheduled job returns true');
SELECT results_eq($$SELECT job_id, attempt FROM pgqueue.queue_pop('rf')$$,
				  $$VALUES (2::bigint, 1)$$, 'the retried scheduled job is popped at once');

-- forced retry revives a block that maintenance marked done
SELECT pgqueue.queue_create('rb', block_size => 100) \g /dev/null
SELECT is(array_length(pgqueue.queue_push_batch('rb', array_fill('{}'::jsonb, ARRAY[101])), 1),
		  101, 'push 101 jobs into blocks of 100');
SELECT is((SELECT count(*) FROM pgqueue.queue_pop('rb', 100)), 100::bigint, 'pop block 0');
SELECT is(pgqueue.queue_ack('rb', ARRAY(SELECT generate_series(1, 99)::bigint)), 99,
		  'ack 99 of them');
SELECT lives_ok($$SELECT pgqueue.queue_abort('rb', 100, 'poison')$$, 'abort the last one');
SELECT is(pgqueue.maintain('rb') -> 'done_blocks', '1'::jsonb,
		  'maintain marks the finished block 0 done');
SELECT is(pgqueue.queue_retry('rb', 100), true, 'retry the aborted job of the done block');
SELECT is((SELECT state FROM pgqueue.blocks WHERE queue = 'rb' AND block_no = 0), 'closed',
		  'the retry revived block 0');
SELECT is(pgqueue.maintain('rb') -> 'done_blocks', '0'::jsonb,
		  'maintain does not retire the block again: the retried job is unfinished');
SELECT results_eq($$SELECT job_id FROM pgqueue.queue_pop('rb', 10) ORDER BY job_id$$,
				  $$VALUES (100::bigint), (101)$$,
				  'pop finds the retried job in the revived block');

-- bulk retry by state, error text and time window
SELECT pgqueue.queue_create('rr', max_attempts => 1) \g /dev/null
SELECT is(pgqueue.queue_push_batch('rr', array_fill('{}'::jsonb, ARRAY[5])),
		  ARRAY[1, 2, 3, 4, 5]::bigint[], 'push five jobs');
SELECT is((SELECT count(*) FROM pgqueue.queue_pop('rr', 4)), 4::bigint, 'pop four');
SELECT results_eq(
	$$SELECT pgqueue.queue_fail('rr', id, e)
		FROM (VALUES (1, 'net: timeout'), (2, 'NET: refused'), (3, 'parse error')) v(id, e)$$,
	$$VALUES ('aborted'), ('aborted'), ('aborted')$$,
	'three jobs fail once and are aborted');
SELECT is(pgqueue.queue_retry('rr', 'aborted', since => now() + interval '1 hour'), 0::bigint,
		  'bulk retry with a window after every change retries nothing');
SELECT is(pgqueue.queue_retry('rr', 'aborted', until => now()), 0::bigint,
		  'bulk retry with a window before every change retries nothing');
SELECT is(pgqueue.queue_retry('rr', 'aborted', error_like => 'disk%'), 0::bigint,
		  'bulk retry with an error pattern nothing matches retries nothing');
SELECT is(pgqueue.queue_retry('rr', 'failed'), 0::bigint,
		  'bulk retry of a state no job is in retries nothing');
SELECT is(pgqueue.queue_retry('rr', 'aborted', error_like => 'net:%', since => now(),
							  until => clock_timestamp() + interval '1 hour'),
		  2::bigint, 'bulk retry by error pattern (ILIKE) and window returns the count');
SELECT results_eq(
	$$SELECT job_id, failures FROM pgqueue.jobs WHERE queue = 'rr' AND job_id <= 3
	   ORDER BY job_id$$,
	$$VALUES (1::bigint, 0), (2, 0), (3, 1)$$,
	'bulk retry moved only the matching jobs and reset their failures');
SELECT is(pgqueue.queue_retry('rr', 'aborted'), 1::bigint,
		  'bulk retry without filters retries the remaining aborted job');
SELECT results_eq($$SELECT job_id, attempt FROM pgqueue.queue_pop('rr', 10) ORDER BY job_id$$,
				  $$VALUES (1::bigint, 2), (2, 2), (3, 2), (5, 1)$$,
				  'the retried jobs are popped again with the next attempt');

-- abort: single and bulk, revoking leases
SELECT pgqueue.queue_create('ra') \g /dev/null
SELECT is(pgqueue.queue_push_batch('ra', array_fill('{}'::jsonb, ARRAY[6])),
		  ARRAY[1, 2, 3, 4, 5, 6]::bigint[], 'push six jobs');
SELECT lives_ok($$SELECT pgqueue.queue_abort('ra', 1, 'not needed')$$,
				'abort a never-claimed job');
SELECT results_eq($$SELECT state, last_error FROM pgqueue.jobs WHERE queue = 'ra' AND job_id = 1$$,
				  $$VALUES ('aborted', 'not needed')$$,
				  'the aborted job is aborted with the reason as its error');
SELECT results_eq($$SELECT job_id FROM pgqueue.queue_pop('ra', 2)$$,
				  $$VALUES (2::bigint), (3)$$, 'pop skips the aborted job');
SELECT lives_ok($$SELECT pgqueue.queue_abort('ra', 2, 'operator stop')$$,
				'abort an executing job');
SELECT throws_ok($$SELECT pgqueue.queue_ack('ra', 2)$$, 'PQ001',
				 'lease of job 2 was lost',
				 'the ack of the holder of an aborted job fails with lease lost');
SELECT is(pgqueue.queue_abort('ra', 'available', 'drain'), 3::bigint,
		  'bulk abort of the available jobs returns the count');
SELECT is(pgqueue.queue_abort('ra', 'executing', 'stop all', error_like => 'nothing%'),
		  0::bigint, 'bulk abort with an error pattern nothing matches aborts nothing');
SELECT is(pgqueue.queue_abort('ra', 'executing', 'stop all'), 1::bigint,
		  'bulk abort of the executing jobs returns the count');
SELECT results_eq(
	$$SELECT job_id, state, last_error FROM pgqueue.jobs WHERE queue = 'ra' ORDER BY job_id$$,
	$$VALUES (1::bigint, 'aborted', 'not needed'), (2, 'aborted', 'operator stop'),
			 (3, 'aborted', 'stop all'), (4, 'aborted', 'drain'), (5, 'aborted', 'drain'),
			 (6, 'aborted', 'drain')$$,
	'every job is aborted with its reason');

-- the backoff after many failures is capped, not an error (issue 14, bug 1:
-- base * 2^failures overflowed an interval from the 45th failure on, before
-- the cap applied; checked by mutation: computing the backoff as the
-- interval $7 * power(2, l.fails) fails the first of these with 22008)
SELECT pgqueue.queue_create('ra_many', max_attempts => 1000, backoff_base => '1 second',
							backoff_cap => '1 hour', backoff_jitter => 0);
CREATE FUNCTION pg_temp.fail_until(n integer, id bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	a integer;
BEGIN
	FOR i IN 1 .. n LOOP
		SELECT attempt INTO STRICT a FROM pgqueue.queue_pop('ra_many', 1) WHERE job_id = id;
		PERFORM pgqueue.queue_fail('ra_many', id, 'again', '0 seconds', a);
	END LOOP;
END
$$;
SELECT pgqueue.queue_push('ra_many', '{}') AS j1 \gset
SELECT pg_temp.fail_until(44, :j1);
SELECT is(pgqueue.queue_fail('ra_many', :j1, 'backoff', NULL,
							 (SELECT attempt FROM pgqueue.queue_pop('ra_many', 1))),
		  'failed', 'the 45th failure with the backoff of the queue works');
SELECT pgqueue.queue_push('ra_many', '{}') AS j2 \gset
SELECT pg_temp.fail_until(998, :j2);
SELECT is(pgqueue.queue_fail('ra_many', :j2, 'backoff', NULL,
							 (SELECT attempt FROM pgqueue.queue_pop('ra_many', 1))),
		  'failed', 'the 999th failure with the backoff of the queue works');
SELECT results_eq(
	$$SELECT job_id, attempt, run_at - now() BETWEEN '1 hour' AND '1 hour 1 minute'
		FROM pgqueue.jobs WHERE queue = 'ra_many' ORDER BY job_id$$,
	format($$VALUES (%s::bigint, 45, true), (%s, 999, true)$$, :j1, :j2),
	'both are due again after the cap of the backoff');

SELECT * FROM finish();
ROLLBACK;
