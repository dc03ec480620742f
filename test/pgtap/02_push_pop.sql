/*
 * 02_push_pop.sql: producing and consuming: queue_push and queue_push_batch
 * (ids, keys, priorities, run_at), queue_pop (priority then FIFO order, n,
 * lease, attempt), transactional push and pop, and blocks filling up.
 */
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off

BEGIN;
SELECT plan(41);

SELECT pgqueue.queue_create('t_push', block_size => 100) \g /dev/null

-- queue_push returns increasing ids and stores what it was given
SELECT is(pgqueue.queue_push('t_push', '{"n": 1}'), 1::bigint, 'first push returns id 1');
SELECT is(pgqueue.queue_push('t_push', '{"n": 2}', key => 'user-7', priority => 3),
		  2::bigint, 'second push returns id 2');
SELECT is(pgqueue.queue_push('t_push', '{"n": 3}', run_at => now() - interval '1 minute'),
		  3::bigint, 'a push with run_at in the past returns the next id');
SELECT results_eq(
	$$SELECT job_id, state, key, priority, attempt, failures, payload
		FROM pgqueue.jobs WHERE queue = 't_push' ORDER BY job_id$$,
	$$VALUES (1::bigint, 'available', NULL::text, 0, 0, 0, '{"n": 1}'::jsonb),
			 (2, 'available', 'user-7', 3, 0, 0, '{"n": 2}'),
			 (3, 'available', NULL, 0, 0, 0, '{"n": 3}')$$,
	'pgqueue.jobs shows the pushed jobs as available, with key, priority and payload');
SELECT ok((SELECT bool_and(enqueued_at BETWEEN now() AND clock_timestamp()
						   AND lease_until IS NULL)
			 FROM pgqueue.jobs WHERE queue = 't_push'),
		  'enqueued_at is the push time and there is no lease');

-- a push is transactional
SAVEPOINT before_push;
SELECT pgqueue.queue_push('t_push', '{"rolled": "back"}') \g /dev/null
ROLLBACK TO SAVEPOINT before_push;
SELECT is((SELECT count(*) FROM pgqueue.jobs
			WHERE queue = 't_push' AND payload = '{"rolled": "back"}'), 0::bigint,
		  'a rolled back push leaves no job');

-- run_at in the future: scheduled, not popped
SELECT lives_ok($$SELECT pgqueue.queue_push('t_push', '{"later": true}',
				  run_at => now() + interval '1 hour')$$,
				'push with run_at in the future');
SELECT results_eq(
	$$SELECT state, run_at BETWEEN now() + interval '59 minutes' AND now() + interval '61 minutes'
		FROM pgqueue.jobs WHERE queue = 't_push' AND payload = '{"later": true}'$$,
	$$VALUES ('scheduled', true)$$,
	'a job with run_at in the future is scheduled at run_at');
SELECT results_eq(
	$$SELECT job_id FROM pgqueue.queue_pop('t_push', 10) ORDER BY job_id$$,
	$$VALUES (1::bigint), (2), (3)$$,
	'pop returns the due jobs and not the scheduled one');
SELECT is_empty($$SELECT * FROM pgqueue.queue_pop('t_push', 10)$$,
				'pop returns nothing while only a scheduled job is left');

-- push_batch: ids in order, with keys and priorities
SELECT pgqueue.queue_create('t_batch', block_size => 100) \g /dev/null
SELECT is(pgqueue.queue_push_batch('t_batch',
								   ARRAY['{"i": 1}', '{"i": 2}', '{"i": 3}']::jsonb[],
								   keys => ARRAY['a', NULL, 'c'],
								   priorities => ARRAY[1, 2, 3]),
		  ARRAY[1, 2, 3]::bigint[], 'push_batch returns the ids in input order');
SELECT results_eq(
	$$SELECT job_id, key, priority, payload FROM pgqueue.jobs
	   WHERE queue = 't_batch' ORDER BY job_id$$,
	$$VALUES (1::bigint, 'a'::text, 1, '{"i": 1}'::jsonb), (2, NULL, 2, '{"i": 2}'),
			 (3, 'c', 3, '{"i": 3}')$$,
	'push_batch stores each payload with its key and priority');
SELECT is(pgqueue.queue_push_batch('t_batch', ARRAY['{"i": 4}', '{"i": 5}']::jsonb[]),
		  ARRAY[4, 5]::bigint[], 'push_batch without keys or priorities');
SELECT is(pgqueue.queue_push_batch('t_batch', '{}'::jsonb[]), '{}'::bigint[],
		  'push_batch of an empty array returns an empty array');
SELECT lives_ok($$SELECT pgqueue.queue_push_batch('t_batch', ARRAY['{"i": 6}']::jsonb[],
				  run_at => now() + interval '1 hour')$$,
				'push_batch with run_at in the future');
SELECT is((SELECT state FROM pgqueue.jobs WHERE queue = 't_batch' AND payload = '{"i": 6}'),
		  'scheduled', 'push_batch with run_at in the future makes scheduled jobs');

-- priority order, then FIFO within a priority
SELECT pgqueue.queue_create('t_prio') \g /dev/null
SELECT is(pgqueue.queue_push_batch('t_prio', array_fill('{}'::jsonb, ARRAY[7]),
								   priorities => ARRAY[0, 5, 0, 5, 10, -1, 0]),
		  ARRAY[1, 2, 3, 4, 5, 6, 7]::bigint[], 'push_batch of seven jobs with priorities');
SELECT results_eq(
	$$SELECT job_id, priority FROM pgqueue.queue_pop('t_prio', 4)$$,
	$$VALUES (5::bigint, 10), (2, 5), (4, 5), (1, 0)$$,
	'pop returns the highest priority first and FIFO within a priority, up to n');
SELECT results_eq(
	$$SELECT job_id FROM pgqueue.queue_pop('t_prio', 1)$$,
	$$VALUES (3::bigint)$$,
	'pop n => 1 returns one job, the next in order');
SELECT results_eq(
	$$SELECT job_id FROM pgqueue.queue_pop('t_prio', 100)$$,
	$$VALUES (7::bigint), (6)$$,
	'pop returns fewer than n when fewer are available, negative priority last');
SELECT is_empty($$SELECT * FROM pgqueue.queue_pop('t_prio')$$,
				'pop of a drained queue returns nothing');

-- the popped row: attempt from 1, lease, payload
SELECT pgqueue.queue_create('t_lease') \g /dev/null
SELECT pgqueue.queue_push('t_lease', '{"x": [1, 2]}', key => 'k1', priority => 2) \g /dev/null
CREATE TEMP TABLE popped AS SELECT * FROM pgqueue.queue_pop('t_lease', 1, lease => '10 minutes');
SELECT results_eq(
	$$SELECT job_id, queue, key, payload, priority, attempt FROM popped$$,
	$$VALUES (1::bigint, 't_lease'::text, 'k1'::text, '{"x": [1, 2]}'::jsonb, 2, 1)$$,
	'pop returns the job with its queue, key, payload and priority, attempt 1');
SELECT ok((SELECT lease_until BETWEEN clock_timestamp() + interval '9 minutes 50 seconds'
								  AND clock_timestamp() + interval '10 minutes'
			 FROM popped),
		  'lease_until is about now + lease');
SELECT ok((SELECT p.enqueued_at = j.enqueued_at
			 FROM popped p JOIN pgqueue.jobs j ON j.queue = p.queue AND j.job_id = p.job_id),
		  'pop returns the enqueued_at of the job');
SELECT results_eq(
	$$SELECT j.state, j.attempt, j.lease_until = p.lease_until
		FROM popped p JOIN pgqueue.jobs j ON j.queue = p.queue AND j.job_id = p.job_id$$,
	$$VALUES ('executing', 1, true)$$,
	'pgqueue.jobs shows the popped job executing with its lease');
SELECT is_empty($$SELECT * FROM pgqueue.queue_pop('t_lease')$$,
				'a leased job is not popped again');

-- a pop that rolls back leaves the job available at once
SELECT pgqueue.queue_push('t_lease', '{"y": 1}') \g /dev/null
SAVEPOINT before_pop;
SELECT job_id FROM pgqueue.queue_pop('t_lease') \g /dev/null
ROLLBACK TO SAVEPOINT before_pop;
SELECT is((SELECT state FROM pgqueue.jobs WHERE queue = 't_lease' AND job_id = 2),
		  'available', 'a rolled back pop leaves the job available');
SELECT results_eq($$SELECT job_id, attempt FROM pgqueue.queue_pop('t_lease')$$,
				  $$VALUES (2::bigint, 1)$$,
				  'the job of a rolled back pop is popped again, still attempt 1');

-- blocks: crossing block_size creates the next block
SELECT pgqueue.queue_create('t_blocks', block_size => 100) \g /dev/null
SELECT results_eq(
	$$SELECT block_no, first_id, last_id, state, jobs, unfinished
		FROM pgqueue.blocks WHERE queue = 't_blocks'$$,
	$$VALUES (0, 1::bigint, 100::bigint, 'open', 0::bigint, 0::bigint)$$,
	'a new queue has block 0 covering ids 1 to 100');
SELECT is(array_length(pgqueue.queue_push_batch('t_blocks',
												array_fill('{}'::jsonb, ARRAY[99])), 1),
		  99, 'push_batch of 99 jobs');
SELECT is(pgqueue.queue_push('t_blocks', '{"last": "of block 0"}'), 100::bigint,
		  'push of id 100 fills block 0');
SELECT is((SELECT count(*) FROM pgqueue.blocks WHERE queue = 't_blocks'), 1::bigint,
		  'filling a block exactly does not create the next one');
SELECT is(pgqueue.queue_push('t_blocks', '{"first": "of block 1"}'), 101::bigint,
		  'push of id 101 crosses into block 1');
SELECT is(pgqueue.queue_push_batch('t_blocks', array_fill('{}'::jsonb, ARRAY[150])),
		  ARRAY(SELECT generate_series(102, 251)::bigint),
		  'push_batch across two block boundaries returns consecutive ids');
SELECT results_eq(
	$$SELECT block_no, first_id, last_id, jobs, unfinished, bytes > 0
		FROM pgqueue.blocks WHERE queue = 't_blocks' ORDER BY block_no$$,
	$$VALUES (0, 1::bigint, 100::bigint, 100::bigint, 100::bigint, true),
			 (1, 101, 200, 100, 100, true),
			 (2, 201, 300, 51, 51, true)$$,
	'pgqueue.blocks lists each block with its range, counts and size');
SELECT results_eq(
	$$SELECT count(*), min(job_id), max(job_id)
		FROM pgqueue.queue_pop('t_blocks', 300)$$,
	$$VALUES (251::bigint, 1::bigint, 251::bigint)$$,
	'pop across blocks returns every job once');
SELECT is((SELECT sum(unfinished) FROM pgqueue.blocks WHERE queue = 't_blocks'), 251::numeric,
		  'popped jobs are still unfinished');

-- a plain job costs one index entry: the lane index of a pushed block holds
-- of the default lane (priority 0, no tenant) only marks, which show the
-- lane to pop: the first job of a push where no committed mark is (here all
-- pushes run in one transaction, whose own marks do not count)
SELECT pgqueue.queue_create('t_index') \g /dev/null
SELECT is(cardinality(pgqueue.queue_push_batch('t_index', array_fill('{}'::jsonb, ARRAY[3000]))),
		  3000, 'push_batch of 3000 plain jobs');
SELECT ok((SELECT pg_relation_size(i.indexrelid) <= 2 * current_setting('block_size')::bigint
			 FROM pg_index i
			WHERE i.indrelid = pgqueue_internal._rel('j', (SELECT queue_id FROM pgqueue.queue
															  WHERE name = 't_index'), 0)::regclass
			  AND i.indnatts = 3),
		  'the lane index of their block is a metapage and one leaf: it holds their mark');
SELECT pgqueue.queue_create('t_mark') \g /dev/null
SELECT pgqueue.queue_push_batch('t_mark', array_fill('{}'::jsonb, ARRAY[20]),
								priorities => array_fill(2, ARRAY[20])) \g /dev/null
SELECT pgqueue.queue_push_batch('t_mark', array_fill('{}'::jsonb, ARRAY[20]),
								tenants => array_fill('A'::text, ARRAY[20])) \g /dev/null
SELECT pgqueue.queue_push_batch('t_mark', array_fill('{"plain": 1}'::jsonb, ARRAY[3])) \g /dev/null
SELECT pgqueue.queue_push('t_mark', '{"plain": 2}') \g /dev/null
SELECT pgqueue.queue_push_batch('t_mark', ARRAY['{}', '{"plain": 3}']::jsonb[],
								tenants => ARRAY['B', NULL]) \g /dev/null
SELECT is((SELECT count(*) FROM pgqueue_data.job_store j
			WHERE j.queue_id = (SELECT queue_id FROM pgqueue.queue WHERE name = 't_mark')
			  AND j.lane_mark),
		  3::bigint, 'each push of jobs of the default lane marked its first');
SELECT results_eq(
	$$SELECT priority, tenant, count(*), min(job_id) FROM pgqueue.queue_pop('t_mark', 100)
		GROUP BY 1, 2 ORDER BY 1 DESC, 2$$,
	$$VALUES (2, NULL::text, 20::bigint, 1::bigint), (0, 'A', 20, 21), (0, 'B', 1, 45),
			 (0, NULL, 5, 41)$$,
	'pop finds every lane, the default one by its marks');

SELECT * FROM finish();
ROLLBACK;
