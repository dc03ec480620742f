/*
 * 01_queues.sql: queue management through the SQL interface: queue_create
 * (options visible in pgqueue.queues), queue_alter, queue_pause and
 * queue_resume, queue_purge and queue_drop.
 */
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off

BEGIN;
SELECT plan(37);

-- queue_create with defaults and with every option
SELECT lives_ok($$SELECT pgqueue.queue_create('t_default')$$,
				'queue_create with default options');
SELECT lives_ok($$SELECT pgqueue.queue_create('t_opts', block_size => 500,
				  default_lease => '2 minutes', max_attempts => 7,
				  backoff_base => '3 seconds', backoff_cap => '10 minutes',
				  backoff_jitter => 0.25)$$,
				'queue_create with every option');

SELECT results_eq(
	$$SELECT paused, block_size, default_lease, max_attempts, backoff_base,
			 backoff_cap, backoff_jitter
		FROM pgqueue.queues WHERE queue = 't_default'$$,
	$$VALUES (false, 100000::bigint, '30 seconds'::interval, 5, '1 second'::interval,
			  '1 hour'::interval, 0.1::double precision)$$,
	'pgqueue.queues shows the default options');
SELECT results_eq(
	$$SELECT paused, block_size, default_lease, max_attempts, backoff_base,
			 backoff_cap, backoff_jitter
		FROM pgqueue.queues WHERE queue = 't_opts'$$,
	$$VALUES (false, 500::bigint, '2 minutes'::interval, 7, '3 seconds'::interval,
			  '10 minutes'::interval, 0.25::double precision)$$,
	'pgqueue.queues shows the options given to queue_create');
SELECT results_eq(
	$$SELECT available, scheduled, executing, failed, succeeded, aborted, blocks
		FROM pgqueue.queues WHERE queue = 't_opts'$$,
	$$VALUES (0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 1::bigint)$$,
	'a new queue has no jobs and one block');
SELECT lives_ok($$SELECT pgqueue.queue_create(repeat('n', 63))$$,
				'a queue name of 63 characters is accepted');
SELECT lives_ok($$SELECT pgqueue.queue_create('Tenant_1.jobs:high-prio')$$,
				'a queue name with letters, digits, "_", ".", ":" and "-" is accepted');
SELECT is(pgqueue.queue_push(repeat('n', 63), '{}'), 1::bigint,
		  'push to the queue with a 63-character name');
SELECT results_eq(format('SELECT job_id, queue FROM pgqueue.queue_pop(%L)', repeat('n', 63)),
				  format('VALUES (1::bigint, %L)', repeat('n', 63)),
				  'pop from the queue with a 63-character name');
SELECT is(pgqueue.queue_push('Tenant_1.jobs:high-prio', '{}'), 1::bigint,
		  'push to the queue with punctuation in its name');
SELECT results_eq($$SELECT job_id, queue FROM pgqueue.queue_pop('Tenant_1.jobs:high-prio')$$,
				  $$VALUES (1::bigint, 'Tenant_1.jobs:high-prio')$$,
				  'pop from the queue with punctuation in its name');

-- queue_alter: NULL leaves an option alone; the change reaches the hot paths
SELECT lives_ok($$SELECT pgqueue.queue_alter('t_opts', max_attempts => 3,
				  default_lease => '5 minutes')$$,
				'queue_alter changes max_attempts and default_lease');
SELECT results_eq(
	$$SELECT default_lease, max_attempts, backoff_base, backoff_cap, backoff_jitter
		FROM pgqueue.queues WHERE queue = 't_opts'$$,
	$$VALUES ('5 minutes'::interval, 3, '3 seconds'::interval, '10 minutes'::interval,
			  0.25::double precision)$$,
	'queue_alter changed only the options given');
SELECT lives_ok($$SELECT pgqueue.queue_alter('t_opts', backoff_base => '1 second',
				  backoff_cap => '2 seconds', backoff_jitter => 0)$$,
				'queue_alter changes the backoff');
SELECT results_eq(
	$$SELECT backoff_base, backoff_cap, backoff_jitter FROM pgqueue.queues
	   WHERE queue = 't_opts'$$,
	$$VALUES ('1 second'::interval, '2 seconds'::interval, 0::double precision)$$,
	'queue_alter backoff change is visible in pgqueue.queues');
SELECT is(pgqueue.queue_push('t_opts', '{"n": 1}'), 1::bigint,
		  'the first job of a queue gets id 1');
SELECT ok((SELECT lease_until BETWEEN clock_timestamp() + interval '4 minutes 50 seconds'
								   AND clock_timestamp() + interval '5 minutes'
			 FROM pgqueue.queue_pop('t_opts')),
		  'pop without a lease uses the altered default_lease');

-- pause and resume
SELECT lives_ok($$SELECT pgqueue.queue_pause('t_default')$$, 'queue_pause');
SELECT is((SELECT paused FROM pgqueue.queues WHERE queue = 't_default'), true,
		  'a paused queue shows paused in pgqueue.queues');
SELECT is(pgqueue.queue_push('t_default', '{"n": 1}'), 1::bigint,
		  'push to a paused queue works');
SELECT is_empty($$SELECT * FROM pgqueue.queue_pop('t_default', 10)$$,
				'pop from a paused queue returns nothing');
SELECT is((SELECT state FROM pgqueue.jobs WHERE queue = 't_default' AND job_id = 1),
		  'available', 'the job pushed to a paused queue is available');
SELECT lives_ok($$SELECT pgqueue.queue_resume('t_default')$$, 'queue_resume');
SELECT is((SELECT paused FROM pgqueue.queues WHERE queue = 't_default'), false,
		  'a resumed queue no longer shows paused');
SELECT results_eq($$SELECT job_id, attempt FROM pgqueue.queue_pop('t_default', 10)$$,
				  $$VALUES (1::bigint, 1)$$,
				  'pop from a resumed queue returns the waiting job');

-- purge: counts every job whatever its state; ids are not reused
SELECT pgqueue.queue_create('t_purge', block_size => 100);
SELECT is(pgqueue.queue_push_batch('t_purge',
								   array_fill('{"p": 1}'::jsonb, ARRAY[150])),
		  ARRAY(SELECT generate_series(1, 150)::bigint),
		  'push_batch of 150 jobs over two blocks returns ids 1 to 150');
SELECT pgqueue.queue_ack('t_purge', job_id) FROM pgqueue.queue_pop('t_purge', 2);
SELECT is(pgqueue.queue_purge('t_purge'), 150::bigint,
		  'queue_purge returns the number of jobs discarded, finished ones included');
SELECT is((SELECT count(*) FROM pgqueue.jobs WHERE queue = 't_purge'), 0::bigint,
		  'no job is left after queue_purge');
SELECT cmp_ok(pgqueue.queue_push('t_purge', '{"after": "purge"}'), '>', 150::bigint,
			  'the next push after a purge gets an id above the purged ones');
SELECT results_eq($$SELECT payload FROM pgqueue.queue_pop('t_purge')$$,
				  $$VALUES ('{"after": "purge"}'::jsonb)$$,
				  'the job pushed after a purge can be popped');

-- drop: refuses a non-empty queue unless forced
SELECT throws_ok($$SELECT pgqueue.queue_drop('t_default')$$, '55000',
				 'queue "t_default" is not empty',
				 'queue_drop refuses a queue with an executing job');
SELECT throws_ok($$SELECT pgqueue.queue_drop('t_purge')$$, '55000',
				 'queue "t_purge" is not empty',
				 'queue_drop refuses a queue with unfinished jobs');
SELECT lives_ok($$SELECT pgqueue.queue_drop('t_purge', force => true)$$,
				'queue_drop with force => true drops a non-empty queue');
SELECT is((SELECT count(*) FROM pgqueue.queues WHERE queue = 't_purge'), 0::bigint,
		  'a dropped queue is gone from pgqueue.queues');
SELECT pgqueue.queue_ack('t_default', 1);
SELECT lives_ok($$SELECT pgqueue.queue_drop('t_default')$$,
				'queue_drop drops a queue whose jobs are all finished');
SELECT is((SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = 'pgqueue_data' AND c.relkind = 'r'
			  AND c.relname ~ ('^[js]_' || (SELECT queue_id FROM pgqueue.queue
											  WHERE name = 't_opts') || '_')),
		  2::bigint, 'a queue with one block owns one jobs table and one status table');
SELECT lives_ok($$SELECT pgqueue.queue_create('t_default');
				  SELECT pgqueue.queue_push('t_default', '{}');
				  SELECT * FROM pgqueue.queue_pop('t_default')$$,
				'a dropped queue name can be created again and used at once');

SELECT * FROM finish();
ROLLBACK;
