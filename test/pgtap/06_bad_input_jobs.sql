/*
 * 06_bad_input_jobs.sql: bad input at the job level: payloads, batches,
 * pop arguments, and ack/fail/extend/release/retry/abort of unknown,
 * never-claimed, finished, expired and wrongly fenced jobs.  Each error has
 * its SQLSTATE and exact message and half-applies nothing: in particular an
 * array ack with one bad id acks none.
 */
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off

BEGIN;
SELECT plan(120);

/*
 * Queue q (max_attempts 1), jobs by state:
 *   1 available, never claimed     2 succeeded     3 aborted (by fail)
 *   4 executing, attempt 1         5 executing, lease expired
 *   6, 7 executing, attempt 1
 */
SELECT pgqueue.queue_create('q', block_size => 100, max_attempts => 1) \g /dev/null
SELECT is(pgqueue.queue_push('q', '{"j": 1}', priority => -1), 1::bigint, 'push job 1');
SELECT is(pgqueue.queue_push_batch('q', array_fill('{}'::jsonb, ARRAY[6])),
		  ARRAY[2, 3, 4, 5, 6, 7]::bigint[], 'push jobs 2 to 7');
SELECT is((SELECT job_id FROM pgqueue.queue_pop('q')), 2::bigint, 'pop job 2');
SELECT lives_ok($$SELECT pgqueue.queue_ack('q', 2)$$, 'ack job 2');
SELECT is((SELECT job_id FROM pgqueue.queue_pop('q')), 3::bigint, 'pop job 3');
SELECT is(pgqueue.queue_fail('q', 3, 'fatal'), 'aborted', 'fail job 3, its only attempt');
SELECT is((SELECT job_id FROM pgqueue.queue_pop('q', 1, lease => '1 hour')), 4::bigint,
		  'pop job 4');
SELECT is((SELECT job_id FROM pgqueue.queue_pop('q', 1, lease => '1 millisecond')), 5::bigint,
		  'pop job 5 with a lease of one millisecond');
SELECT results_eq($$SELECT job_id FROM pgqueue.queue_pop('q', 2, lease => '1 hour')$$,
				  $$VALUES (6::bigint), (7)$$, 'pop jobs 6 and 7');
SELECT pg_sleep(0.01) \g /dev/null
CREATE TEMP TABLE before AS
SELECT job_id, state, attempt, failures, lease_until, last_error
  FROM pgqueue.jobs WHERE queue = 'q';

-- payloads
SELECT throws_ok($$SELECT pgqueue.queue_push('q', NULL)$$, '22004',
				 'payload must not be null', 'push of a NULL payload');
SELECT throws_ok($$SELECT pgqueue.queue_push('q', '{}', priority => NULL)$$, '22004',
				 'priority must not be null', 'push with a NULL priority');
SET LOCAL pgqueue.max_payload_size = '1kB';
SELECT throws_ok($$SELECT pgqueue.queue_push('q', jsonb_build_object('big', repeat('x', 2000)))$$,
				 '54000', 'job payload is too large',
				 'push of a payload above pgqueue.max_payload_size');
SELECT throws_ok($$SELECT pgqueue.queue_push_batch('q',
				   ARRAY['{}', jsonb_build_object('big', repeat('x', 2000))])$$,
				 '54000', 'job payload is too large',
				 'push_batch with one payload above pgqueue.max_payload_size');
SELECT lives_ok($$SELECT pgqueue.queue_push_batch('q', '{}'::jsonb[])$$,
				'(an empty batch is still fine with a small limit)');
RESET pgqueue.max_payload_size;

-- push_batch arrays
SELECT throws_ok($$SELECT pgqueue.queue_push_batch('q', NULL)$$, '22004',
				 'payloads must not be null', 'push_batch of a NULL array');
SELECT throws_ok($$SELECT pgqueue.queue_push_batch('q', ARRAY['{}', NULL]::jsonb[])$$, '22004',
				 'payloads must not contain null elements', 'push_batch with a NULL payload');
SELECT throws_ok($$SELECT pgqueue.queue_push_batch('q', ARRAY['{}', '{}']::jsonb[],
				   keys => ARRAY['a'])$$, '2202E',
				 'keys and payloads must have the same length',
				 'push_batch with fewer keys than payloads');
SELECT throws_ok($$SELECT pgqueue.queue_push_batch('q', ARRAY['{}']::jsonb[],
				   keys => ARRAY['a', 'b'])$$, '2202E',
				 'keys and payloads must have the same length',
				 'push_batch with more keys than payloads');
SELECT throws_ok($$SELECT pgqueue.queue_push_batch('q', ARRAY['{}', '{}']::jsonb[],
				   priorities => ARRAY[1])$$, '2202E',
				 'priorities and payloads must have the same length',
				 'push_batch with fewer priorities than payloads');
SELECT throws_ok($$SELECT pgqueue.queue_push_batch('q', ARRAY['{}', '{}']::jsonb[],
				   priorities => ARRAY[1, NULL])$$, '22004',
				 'priorities must not contain null elements',
				 'push_batch with a NULL priority');
SELECT throws_ok($$SELECT pgqueue.queue_push_batch('q', '{{"{}", "{}"}, {"{}", "{}"}}'::jsonb[])$$,
				 '2202E', 'payloads must be a one-dimensional array',
				 'push_batch with a two-dimensional payload array');
SELECT throws_ok($$SELECT pgqueue.queue_push_batch('q', ARRAY['{}', '{}']::jsonb[],
				   keys => '{{a}, {b}}'::text[])$$, '2202E',
				 'keys must be a one-dimensional array',
				 'push_batch with a two-dimensional key array');
SELECT is((SELECT count(*) FROM pgqueue.jobs WHERE queue = 'q'), 7::bigint,
		  'no rejected push or push_batch added a job');

-- pop arguments
SELECT throws_ok($$SELECT * FROM pgqueue.queue_pop('q', 0)$$, '22023',
				 'n must be between 1 and 10000', 'pop with n = 0');
SELECT throws_ok($$SELECT * FROM pgqueue.queue_pop('q', -1)$$, '22023',
				 'n must be between 1 and 10000', 'pop with a negative n');
SELECT throws_ok($$SELECT * FROM pgqueue.queue_pop('q', 1000000)$$, '22023',
				 'n must be between 1 and 10000', 'pop with n = 1000000');
SELECT throws_ok($$SELECT * FROM pgqueue.queue_pop('q', NULL)$$, '22004',
				 'n must not be null', 'pop with a NULL n');
SELECT throws_ok($$SELECT * FROM pgqueue.queue_pop('q', 1, lease => '0')$$, '22023',
				 'lease must be a positive interval', 'pop with a zero lease');
SELECT throws_ok($$SELECT * FROM pgqueue.queue_pop('q', 1, lease => '-1 minute')$$, '22023',
				 'lease must be a positive interval', 'pop with a negative lease');
SELECT throws_ok($$SELECT * FROM pgqueue.queue_pop('q', 1, lease => '1 day -25 hours')$$, '22023',
				 'lease must be a positive interval', 'pop with a lease that adds up negative');
SELECT throws_ok($$SELECT * FROM pgqueue.queue_pop('q', 1, wait => '-1 second')$$, '22023',
				 'wait must not be negative', 'pop with a negative wait');
SELECT throws_ok($$SELECT * FROM pgqueue.queue_pop('q', 1, wait => NULL, lease => '-1 second')$$,
				 '22023', 'lease must be a positive interval',
				 'pop with a NULL wait still checks its lease');
SELECT is((SELECT attempt FROM pgqueue.jobs WHERE queue = 'q' AND job_id = 1), 0,
		  'no rejected pop claimed a job');

-- unknown job ids
SELECT throws_ok($$SELECT pgqueue.queue_ack('q', 50)$$, 'PQ002',
				 'job 50 does not exist in queue "q"', 'ack of an unknown id inside a block');
SELECT throws_ok($$SELECT pgqueue.queue_ack('q', 1000000)$$, 'PQ002',
				 'job 1000000 does not exist in queue "q"', 'ack of an id beyond every block');
SELECT throws_ok($$SELECT pgqueue.queue_ack('q', -1)$$, 'PQ002',
				 'job -1 does not exist in queue "q"', 'ack of a negative id');
SELECT throws_ok($$SELECT pgqueue.queue_ack('q', 0)$$, 'PQ002',
				 'job 0 does not exist in queue "q"', 'ack of id 0');
SELECT throws_ok($$SELECT pgqueue.queue_fail('q', 50, 'e')$$, 'PQ002',
				 'job 50 does not exist in queue "q"', 'fail of an unknown id');
SELECT throws_ok($$SELECT pgqueue.queue_extend('q', 50)$$, 'PQ002',
				 'job 50 does not exist in queue "q"', 'extend of an unknown id');
SELECT throws_ok($$SELECT pgqueue.queue_release('q', 50)$$, 'PQ002',
				 'job 50 does not exist in queue "q"', 'release of an unknown id');
SELECT throws_ok($$SELECT pgqueue.queue_retry('q', 50)$$, 'PQ002',
				 'job 50 does not exist in queue "q"', 'retry of an unknown id');
SELECT throws_ok($$SELECT pgqueue.queue_abort('q', 50, 'r')$$, 'PQ002',
				 'job 50 does not exist in queue "q"', 'abort of an unknown id');
SELECT throws_ok($$SELECT pgqueue.queue_fail('q', 1000000, 'e')$$, 'PQ002',
				 'job 1000000 does not exist in queue "q"', 'fail of an id beyond every block');
SELECT throws_ok($$SELECT pgqueue.queue_extend('q', 1000000)$$, 'PQ002',
				 'job 1000000 does not exist in queue "q"', 'extend of an id beyond every block');
SELECT throws_ok($$SELECT pgqueue.queue_release('q', 1000000)$$, 'PQ002',
				 'job 1000000 does not exist in queue "q"', 'release of an id beyond every block');
SELECT throws_ok($$SELECT pgqueue.queue_retry('q', 1000000)$$, 'PQ002',
				 'job 1000000 does not exist in queue "q"', 'retry of an id beyond every block');
SELECT throws_ok($$SELECT pgqueue.queue_abort('q', 1000000, 'r')$$, 'PQ002',
				 'job 1000000 does not exist in queue "q"', 'abort of an id beyond every block');

-- NULL job ids and arguments
SELECT throws_ok($$SELECT pgqueue.queue_ack('q', NULL::bigint)$$, '22004',
				 'job_id must not be null', 'ack of a NULL job id');
SELECT throws_ok($$SELECT pgqueue.queue_fail('q', NULL, 'e')$$, '22004',
				 'job_id must not be null', 'fail of a NULL job id');
SELECT throws_ok($$SELECT pgqueue.queue_extend('q', NULL)$$, '22004',
				 'job_id must not be null', 'extend of a NULL job id');
SELECT throws_ok($$SELECT pgqueue.queue_release('q', NULL)$$, '22004',
				 'job_id must not be null', 'release of a NULL job id');
SELECT throws_ok($$SELECT pgqueue.queue_retry('q', NULL::bigint)$$, '22004',
				 'job_id must not be null', 'retry of a NULL job id');
SELECT throws_ok($$SELECT pgqueue.queue_abort('q', NULL::bigint, 'r')$$, '22004',
				 'job_id must not be null', 'abort of a NULL job id');
SELECT throws_ok($$SELECT pgqueue.queue_fail('q', 4, NULL)$$, '22004',
				 'error must not be null', 'fail with a NULL error');
SELECT throws_ok($$SELECT pgqueue.queue_fail('q', 4, 'e', retry_in => '-1 second')$$, '22023',
				 'retry_in must not be negative', 'fail with a negative retry_in');
SELECT throws_ok($$SELECT pgqueue.queue_extend('q', 4, lease => '0')$$, '22023',
				 'lease must be a positive interval', 'extend with a zero lease');
SELECT throws_ok($$SELECT pgqueue.queue_extend('q', 4, lease => '-1 minute')$$, '22023',
				 'lease must be a positive interval', 'extend with a negative lease');
SELECT throws_ok($$SELECT pgqueue.queue_abort('q', 4, NULL)$$, '22004',
				 'reason must not be null', 'abort with a NULL reason');
SELECT throws_ok($$SELECT pgqueue.queue_abort('q', 'executing', NULL)$$, '22004',
				 'reason must not be null', 'bulk abort with a NULL reason');

-- a never-claimed job
SELECT throws_ok($$SELECT pgqueue.queue_ack('q', 1)$$, 'PQ003',
				 'job 1 is not executing', 'ack of a never-claimed job');
SELECT throws_ok($$SELECT pgqueue.queue_fail('q', 1, 'e')$$, 'PQ003',
				 'job 1 is not executing', 'fail of a never-claimed job');
SELECT throws_ok($$SELECT pgqueue.queue_extend('q', 1)$$, 'PQ003',
				 'job 1 is not executing', 'extend of a never-claimed job');
SELECT throws_ok($$SELECT pgqueue.queue_release('q', 1)$$, 'PQ003',
				 'job 1 is not executing', 'release of a never-claimed job');
SELECT throws_ok($$SELECT pgqueue.queue_ack('q', 1, attempt => 1)$$, 'PQ003',
				 'job 1 is not executing', 'ack of a never-claimed job with an attempt');
SELECT is(pgqueue.queue_retry('q', 1), false,
		  'retry of a never-claimed (available) job returns false and changes nothing');

-- a finished job
SELECT throws_ok($$SELECT pgqueue.queue_ack('q', 2)$$, 'PQ003',
				 'job 2 has already succeeded', 'ack of a succeeded job');
SELECT throws_ok($$SELECT pgqueue.queue_ack('q', 2, attempt => 1)$$, 'PQ003',
				 'job 2 has already succeeded', 'ack of a succeeded job by the attempt that acked it');
SELECT throws_ok($$SELECT pgqueue.queue_fail('q', 2, 'e')$$, 'PQ003',
				 'job 2 has already succeeded', 'fail of a succeeded job');
SELECT throws_ok($$SELECT pgqueue.queue_extend('q', 2)$$, 'PQ003',
				 'job 2 has already succeeded', 'extend of a succeeded job');
SELECT throws_ok($$SELECT pgqueue.queue_release('q', 2)$$, 'PQ003',
				 'job 2 has already succeeded', 'release of a succeeded job');
SELECT throws_ok($$SELECT pgqueue.queue_retry('q', 2)$$, 'PQ003',
				 'cannot retry job 2: it is succeeded', 'retry of a succeeded job');
SELECT throws_ok($$SELECT pgqueue.queue_abort('q', 2, 'r')$$, 'PQ003',
				 'cannot abort job 2: it is succeeded', 'abort of a succeeded job');
SELECT throws_ok($$SELECT pgqueue.queue_ack('q', 3)$$, 'PQ001',
				 'lease of job 3 was lost', 'ack of a job its own attempt failed to aborted');
SELECT throws_ok($$SELECT pgqueue.queue_fail('q', 3, 'again')$$, 'PQ001',
				 'lease of job 3 was lost', 'fail of an aborted job');
SELECT throws_ok($$SELECT pgqueue.queue_extend('q', 3)$$, 'PQ001',
				 'lease of job 3 was lost', 'extend of an aborted job');
SELECT throws_ok($$SELECT pgqueue.queue_release('q', 3)$$, 'PQ001',
				 'lease of job 3 was lost', 'release of an aborted job');
SELECT throws_ok($$SELECT pgqueue.queue_abort('q', 3, 'r')$$, 'PQ003',
				 'cannot abort job 3: it is aborted', 'abort of an aborted job');

-- an executing job: wrong attempt, retry
SELECT throws_ok($$SELECT pgqueue.queue_ack('q', 4, attempt => 2)$$, 'PQ001',
				 'lease of job 4 is held by another attempt', 'ack with a wrong attempt');
SELECT throws_ok($$SELECT pgqueue.queue_fail('q', 4, 'e', attempt => 2)$$, 'PQ001',
				 'lease of job 4 is held by another attempt', 'fail with a wrong attempt');
SELECT throws_ok($$SELECT pgqueue.queue_extend('q', 4, attempt => 2)$$, 'PQ001',
				 'lease of job 4 is held by another attempt', 'extend with a wrong attempt');
SELECT throws_ok($$SELECT pgqueue.queue_release('q', 4, attempt => 2)$$, 'PQ001',
				 'lease of job 4 is held by another attempt', 'release with a wrong attempt');
SELECT throws_ok($$SELECT pgqueue.queue_ack('q', 4, attempt => 0)$$, 'PQ001',
				 'lease of job 4 is held by another attempt', 'ack with attempt 0');
SELECT throws_ok($$SELECT pgqueue.queue_retry('q', 4)$$, 'PQ003',
				 'cannot retry job 4: it is executing', 'retry of an executing job');

-- an expired lease (not yet taken back by maintenance)
SELECT throws_ok($$SELECT pgqueue.queue_ack('q', 5)$$, 'PQ001',
				 'lease of job 5 has expired', 'ack after the lease expired');
SELECT throws_ok($$SELECT pgqueue.queue_ack('q', 5, attempt => 1)$$, 'PQ001',
				 'lease of job 5 has expired', 'ack with the right attempt after the lease expired');
SELECT throws_ok($$SELECT pgqueue.queue_fail('q', 5, 'e')$$, 'PQ001',
				 'lease of job 5 has expired', 'fail after the lease expired');
SELECT throws_ok($$SELECT pgqueue.queue_extend('q', 5)$$, 'PQ001',
				 'lease of job 5 has expired', 'extend after the lease expired');
SELECT throws_ok($$SELECT pgqueue.queue_release('q', 5)$$, 'PQ001',
				 'lease of job 5 has expired', 'release after the lease expired');

-- array ack: all or none
SELECT throws_ok($$SELECT pgqueue.queue_ack('q', NULL::bigint[])$$, '22004',
				 'queue name and job ids must not be null', 'array ack of a NULL array');
SELECT throws_ok($$SELECT pgqueue.queue_ack('q', ARRAY[6, NULL]::bigint[])$$, '22004',
				 'job ids must not be null', 'array ack with a NULL id');
SELECT throws_ok($$SELECT pgqueue.queue_ack('q', '{{6, 7}}'::bigint[])$$, '2202E',
				 'job ids must be a one-dimensional array', 'array ack of a two-dimensional array');
SELECT throws_ok($$SELECT pgqueue.queue_ack('q', ARRAY[6, 7]::bigint[], attempts => '{{1, 1}}')$$,
				 '2202E', 'attempts must be a one-dimensional array',
				 'array ack with two-dimensional attempts');
SELECT throws_ok($$SELECT pgqueue.queue_ack('q', ARRAY[6, 7]::bigint[], attempts => ARRAY[1])$$,
				 '2202E', 'attempts and job ids must have the same length',
				 'array ack with fewer attempts than ids');
SELECT throws_ok($$SELECT pgqueue.queue_ack('q', ARRAY[6, 50]::bigint[])$$, 'PQ002',
				 'job 50 does not exist in queue "q"', 'array ack with one unknown id');
SELECT throws_ok($$SELECT pgqueue.queue_ack('q', ARRAY[6, 1000000]::bigint[])$$, 'PQ002',
				 'job 1000000 does not exist in queue "q"',
				 'array ack with one id beyond every block');
SELECT throws_ok($$SELECT pgqueue.queue_ack('q', ARRAY[6, 1]::bigint[])$$, 'PQ003',
				 'job 1 is not executing', 'array ack with one never-claimed job');
SELECT throws_ok($$SELECT pgqueue.queue_ack('q', ARRAY[6, 2]::bigint[])$$, 'PQ003',
				 'job 2 has already succeeded', 'array ack with one succeeded job');
SELECT throws_ok($$SELECT pgqueue.queue_ack('q', ARRAY[6, 5]::bigint[])$$, 'PQ001',
				 'lease of job 5 has expired', 'array ack with one expired lease');
SELECT throws_ok($$SELECT pgqueue.queue_ack('q', ARRAY[6, 7]::bigint[], attempts => ARRAY[1, 2])$$,
				 'PQ001', 'lease of job 7 is held by another attempt',
				 'array ack with one wrong attempt');
SELECT throws_ok($$SELECT pgqueue.queue_ack('q', ARRAY[7, 6]::bigint[], attempts => ARRAY[2, 1])$$,
				 'PQ001', 'lease of job 7 is held by another attempt',
				 'array ack with a wrong attempt for the first id');

-- bulk filters
SELECT throws_ok($$SELECT pgqueue.queue_retry('q', 'bogus')$$, '22023',
				 'invalid state filter "bogus"', 'bulk retry with an unknown state');
SELECT throws_ok($$SELECT pgqueue.queue_retry('q', 'succeeded')$$, '22023',
				 'invalid state filter "succeeded"', 'bulk retry of succeeded jobs');
SELECT throws_ok($$SELECT pgqueue.queue_retry('q', 'executing')$$, '22023',
				 'invalid state filter "executing"', 'bulk retry of executing jobs');
SELECT throws_ok($$SELECT pgqueue.queue_retry('q', 'available')$$, '22023',
				 'invalid state filter "available"', 'bulk retry of available jobs');
SELECT throws_ok($$SELECT pgqueue.queue_retry('q', 'FAILED')$$, '22023',
				 'invalid state filter "FAILED"', 'bulk retry state filters are case-sensitive');
SELECT throws_ok($$SELECT pgqueue.queue_abort('q', 'succeeded', 'r')$$, '22023',
				 'invalid state filter "succeeded"', 'bulk abort of succeeded jobs');
SELECT throws_ok($$SELECT pgqueue.queue_abort('q', 'aborted', 'r')$$, '22023',
				 'invalid state filter "aborted"', 'bulk abort of aborted jobs');
SELECT throws_ok($$SELECT pgqueue.queue_retry('q', NULL::text)$$, '22004',
				 'state must not be null', 'bulk retry with a NULL state');
SELECT throws_ok($$SELECT pgqueue.queue_abort('q', NULL::text, 'r')$$, '22004',
				 'state must not be null', 'bulk abort with a NULL state');
SELECT throws_ok($$SELECT pgqueue.queue_retry('q', 'aborted', since => now(),
				   until => now() - interval '1 hour')$$, '22023',
				 'invalid time window: since is after until', 'bulk retry with since after until');
SELECT throws_ok($$SELECT pgqueue.queue_abort('q', 'executing', 'r', since => now(),
				   until => now() - interval '1 hour')$$, '22023',
				 'invalid time window: since is after until', 'bulk abort with since after until');

-- nothing above changed any job
SELECT results_eq(
	$$SELECT job_id, state, attempt, failures, lease_until, last_error
		FROM pgqueue.jobs WHERE queue = 'q' ORDER BY job_id$$,
	$$SELECT * FROM before ORDER BY job_id$$,
	'no rejected call changed the state, attempt, failures, lease or error of any job');
SELECT is((SELECT count(*) FROM pgqueue.job_history WHERE queue = 'q'), 8::bigint,
		  'no rejected call appended a status row');
SELECT is(pgqueue.queue_ack('q', ARRAY[6, 7]::bigint[], attempts => ARRAY[1, 1]), 2,
		  'the jobs of the rejected array acks can still be acked together');

-- array ack across blocks: a bad id in the second block undoes the first
SELECT pgqueue.queue_create('qb', block_size => 100) \g /dev/null
SELECT is(array_length(pgqueue.queue_push_batch('qb', array_fill('{}'::jsonb, ARRAY[101])), 1),
		  101, 'push 101 jobs into blocks of 100');
SELECT is((SELECT count(*) FROM pgqueue.queue_pop('qb', 101, lease => '1 hour')), 101::bigint,
		  'pop all 101');
SELECT throws_ok($$SELECT pgqueue.queue_ack('qb', ARRAY[1, 101]::bigint[],
				   attempts => ARRAY[1, 2])$$,
				 'PQ001', 'lease of job 101 is held by another attempt',
				 'array ack over two blocks with a wrong attempt in the second block');
SELECT throws_ok($$SELECT pgqueue.queue_ack('qb', ARRAY[1, 150]::bigint[])$$,
				 'PQ002', 'job 150 does not exist in queue "qb"',
				 'array ack over two blocks with an unknown id in the second block');
SELECT results_eq(
	$$SELECT job_id, state FROM pgqueue.jobs WHERE queue = 'qb' AND job_id IN (1, 101)
	   ORDER BY job_id$$,
	$$VALUES (1::bigint, 'executing'), (101, 'executing')$$,
	'the rejected array acks acked neither job');
SELECT is(pgqueue.queue_ack('qb', ARRAY(SELECT generate_series(1, 101)::bigint)), 101,
		  'all 101 jobs can still be acked in one call');

SELECT * FROM finish();
ROLLBACK;
