/*
 * 08_wait.sql: queue_pop(wait => ...) as seen from one session, the NOTIFY
 * option and the shared counters of pgqueue.stats.
 *
 * This file runs in one transaction that is rolled back, and wake-ups
 * happen only when a push commits, so nothing here waits for another
 * session: that is tested by the isolation specs test/specs/wait_*.spec
 * and the TAP test test/t/001_wait.pl.  What is tested here: a wait on a
 * queue that has a job (even one pushed by this transaction) returns at
 * once; a wait that finds nothing returns no rows when it ends, not before
 * and not much later; statement_timeout cancels a waiting pop (SQLSTATE
 * 57014) and leaves no waiter behind; the notify option and its catalog
 * and view columns; the pgqueue.poll_interval setting; the columns of the
 * stats counters, which count committed work only.
 *
 * throws_ok cannot check the statement timeout: it catches WHEN OTHERS,
 * which in PL/pgSQL excludes query_canceled, so the cancellation would end
 * the whole file.  pg_temp.pop_error() catches query_canceled by name.
 */
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off

BEGIN;
SELECT plan(41);

-- how long a pop takes, and how many jobs it claims
CREATE FUNCTION pg_temp.timed_pop(queue text, wait interval, n integer DEFAULT 1,
								  OUT jobs bigint, OUT took interval)
LANGUAGE plpgsql AS $$
DECLARE
	t0 timestamptz := clock_timestamp();
BEGIN
	SELECT count(*) INTO jobs FROM pgqueue.queue_pop(queue, n, wait => wait);
	took := clock_timestamp() - t0;
END
$$;

-- the error a pop ends with, including a cancellation
CREATE FUNCTION pg_temp.pop_error(queue text, wait interval)
RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM * FROM pgqueue.queue_pop(queue, wait => wait);
	RETURN 'no error';
EXCEPTION WHEN query_canceled OR others THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

SELECT pgqueue.queue_create('w_empty') \g /dev/null
SELECT pgqueue.queue_create('w_jobs') \g /dev/null

--
-- A wait that finds jobs returns at once
--
SELECT is(pgqueue.queue_push_batch('w_jobs', ARRAY['{"j": 1}', '{"j": 2}']::jsonb[]),
		  ARRAY[1, 2]::bigint[], 'push two jobs in this transaction');
SELECT results_eq($$SELECT job_id, attempt FROM pgqueue.queue_pop('w_jobs', wait => '10 s')$$,
				  $$VALUES (1::bigint, 1)$$,
				  'a pop with a wait claims a job pushed by its own transaction');
SELECT ok((SELECT took < interval '1 s' AND jobs = 1
			 FROM pg_temp.timed_pop('w_jobs', '10 s')),
		  'a pop with a 10 s wait on a queue with a job returns it at once');
SELECT is(pgqueue.queue_push_batch('w_jobs', ARRAY['{"j": 3}', '{"j": 4}']::jsonb[]),
		  ARRAY[3, 4]::bigint[], 'push two more');
SELECT ok((SELECT took < interval '1 s' AND jobs = 2
			 FROM pg_temp.timed_pop('w_jobs', '10 s', n => 5)),
		  'a pop for 5 jobs with a 10 s wait returns the 2 there are at once');
SELECT is((SELECT count(*) FROM pgqueue.jobs WHERE queue = 'w_jobs' AND state = 'executing'),
		  4::bigint, 'the four jobs are executing');

--
-- A wait that finds nothing ends on time with no rows
--
SELECT is_empty($$SELECT * FROM pgqueue.queue_pop('w_empty', wait => '50 ms')$$,
				'a 50 ms wait on an empty queue returns no rows');
SELECT ok((SELECT took >= interval '50 ms' AND took < interval '1 s' AND jobs = 0
			 FROM pg_temp.timed_pop('w_empty', '50 ms')),
		  'a 50 ms wait on an empty queue ends after 50 ms, not much later');
SELECT ok((SELECT took >= interval '200 ms' AND took < interval '1200 ms' AND jobs = 0
			 FROM pg_temp.timed_pop('w_empty', '200 ms')),
		  'a 200 ms wait on an empty queue ends after 200 ms, not much later');
SELECT ok((SELECT took < interval '1 s' AND jobs = 0 FROM pg_temp.timed_pop('w_empty', '0')),
		  'wait => 0 returns at once');
SELECT ok((SELECT took < interval '1 s' AND jobs = 0 FROM pg_temp.timed_pop('w_empty', NULL)),
		  'wait => NULL returns at once');
SELECT ok((SELECT took >= interval '100 ms' AND took < interval '1100 ms' AND jobs = 0
			 FROM pg_temp.timed_pop('w_jobs', '100 ms')),
		  'a wait on a queue whose jobs are all executing ends empty after the wait');

SELECT pgqueue.queue_create('w_paused') \g /dev/null
SELECT pgqueue.queue_push('w_paused', '{"p": 1}') \g /dev/null
SELECT pgqueue.queue_pause('w_paused') \g /dev/null
SELECT ok((SELECT took >= interval '100 ms' AND took < interval '1100 ms' AND jobs = 0
			 FROM pg_temp.timed_pop('w_paused', '100 ms')),
		  'a wait on a paused queue with an available job ends empty after the wait');

SELECT pgqueue.queue_create('w_later') \g /dev/null
SELECT pgqueue.queue_push('w_later', '{"l": 1}', run_at => now() + interval '1 hour') \g /dev/null
SELECT ok((SELECT took >= interval '100 ms' AND took < interval '1100 ms' AND jobs = 0
			 FROM pg_temp.timed_pop('w_later', '100 ms')),
		  'a wait on a queue with a job due in an hour ends empty after the wait');

SELECT throws_ok($$SELECT * FROM pgqueue.queue_pop('w_empty', wait => '-1 ms')$$,
				 '22023', 'wait must not be negative', 'a negative wait is refused');

--
-- statement_timeout cancels a waiting pop
--
SET LOCAL statement_timeout = '200ms';
SELECT is(pg_temp.pop_error('w_empty', '10 s'), '57014: canceling statement due to statement timeout',
		  'statement_timeout cancels a pop waiting 10 s with SQLSTATE 57014');
SET LOCAL statement_timeout = 0;
SELECT is(pg_temp.pop_error('w_empty', '20 ms'), 'no error',
		  'the session can wait again after a cancellation');
SELECT is((SELECT waiters FROM pgqueue.stats WHERE queue = 'w_empty'), 0,
		  'no waiter is left registered after a timed-out and a canceled wait');
SELECT is(pg_temp.pop_error('nosuch', '10 s'), '42704: queue "nosuch" does not exist',
		  'a wait on an unknown queue fails at once');

--
-- pgqueue.poll_interval: how often a waiting pop polls without shared memory
--
SELECT results_eq(
	$$SELECT setting, unit, boot_val, min_val, max_val, context FROM pg_settings
	   WHERE name = 'pgqueue.poll_interval'$$,
	$$VALUES ('100', 'ms', '100', '1', '60000', 'user')$$,
	'pgqueue.poll_interval: 100 ms by default, 1 ms to 60 s, settable by any user');
SELECT lives_ok($$SET LOCAL pgqueue.poll_interval = '50ms'$$, 'set pgqueue.poll_interval');
SELECT is(current_setting('pgqueue.poll_interval'), '50ms', 'pgqueue.poll_interval is 50ms');
SELECT throws_ok($$SET LOCAL pgqueue.poll_interval = 0$$, '22023', NULL,
				 'pgqueue.poll_interval must be at least 1 ms');

--
-- The notify option
--
SELECT has_column('pgqueue', 'queue', 'notify', 'pgqueue.queue has a notify column');
SELECT col_type_is('pgqueue', 'queue', 'notify', 'boolean', 'notify is a boolean');
SELECT has_column('pgqueue', 'queues', 'notify', 'the queues view shows notify');
SELECT is((SELECT notify FROM pgqueue.queues WHERE queue = 'w_empty'), false,
		  'notify is off by default');
SELECT lives_ok($$SELECT pgqueue.queue_create('w_notify', notify => true)$$,
				'queue_create(notify => true)');
SELECT is((SELECT notify FROM pgqueue.queues WHERE queue = 'w_notify'), true,
		  'the queues view shows notify on');
SELECT lives_ok($$SELECT pgqueue.queue_alter('w_notify', notify => false)$$,
				'queue_alter(notify => false)');
SELECT is((SELECT notify FROM pgqueue.queues WHERE queue = 'w_notify'), false,
		  'queue_alter turned notify off');
SELECT lives_ok($$SELECT pgqueue.queue_alter('w_notify', max_attempts => 3)$$,
				'queue_alter of another option');
SELECT is((SELECT notify FROM pgqueue.queues WHERE queue = 'w_notify'), false,
		  'queue_alter without notify keeps it');
SELECT lives_ok($$SELECT pgqueue.queue_alter('w_notify', notify => true)$$,
				'queue_alter(notify => true)');
SELECT is((SELECT notify FROM pgqueue.queues WHERE queue = 'w_notify'), true,
		  'queue_alter turned notify on');
SELECT throws_ok($$SELECT pgqueue.queue_create('w_notify_null', notify => NULL)$$, '22004',
				 'queue_create arguments must not be null', 'queue_create(notify => NULL) is refused');
SELECT is(pgqueue.queue_push('w_notify', '{"n": 1}'), 1::bigint,
		  'a push to a queue with notify works (the notification is sent at commit)');

--
-- The shared counters of pgqueue.stats (this suite runs with pgqueue
-- preloaded, so they are not NULL); they count committed work only, so in
-- this transaction they are all 0 and the two pops above are not counted
--
SELECT columns_are('pgqueue', 'stats',
	ARRAY['queue', 'available', 'blocked', 'scheduled', 'executing', 'failed', 'succeeded', 'aborted',
		  'oldest_waiting', 'blocks', 'pushed', 'popped', 'acked', 'failed_attempts',
		  'aborted_jobs', 'waiters'],
	'pgqueue.stats has the depth columns and the shared counters');
SELECT results_eq(
	$$SELECT pg_typeof(pushed)::text, pg_typeof(popped)::text, pg_typeof(acked)::text,
			 pg_typeof(failed_attempts)::text, pg_typeof(aborted_jobs)::text,
			 pg_typeof(waiters)::text
		FROM pgqueue.stats WHERE queue = 'w_jobs'$$,
	$$VALUES ('bigint', 'bigint', 'bigint', 'bigint', 'bigint', 'integer')$$,
	'the counters are bigint, waiters an integer');
SELECT results_eq(
	$$SELECT pushed, popped, acked, failed_attempts, aborted_jobs, waiters
		FROM pgqueue.stats WHERE queue = 'w_jobs'$$,
	$$VALUES (0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0)$$,
	'uncommitted pushes and pops are not counted yet; nobody waits');
SELECT results_eq(
	$$SELECT pushed, popped, acked, failed_attempts, aborted_jobs, waiters
		FROM pgqueue.stats WHERE queue = 'w_notify'$$,
	$$VALUES (0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0)$$,
	'a queue that no pop has waited on and no commit has counted for shows 0, not NULL');

SELECT * FROM finish();
ROLLBACK;
