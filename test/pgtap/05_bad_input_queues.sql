/*
 * 05_bad_input_queues.sql: bad input at the queue level: unknown queues on
 * every function, NULL queue names, hostile names and bad options in
 * queue_create and queue_alter, duplicates, and bad arguments of
 * queue_drop.  Each error has its SQLSTATE and exact message, and leaves
 * nothing behind.
 */
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off

BEGIN;
SELECT plan(79);

SELECT pgqueue.queue_create('q') \g /dev/null
CREATE TABLE pgq_tap_victim (i integer);
CREATE TEMP TABLE before AS
SELECT (SELECT count(*) FROM pgqueue.queue) AS queues,
	   (SELECT count(*) FROM pg_class WHERE relnamespace = 'pgqueue_data'::regnamespace) AS rels;

-- an unknown queue, on every function
SELECT throws_ok($$SELECT pgqueue.queue_alter('nope', max_attempts => 3)$$, '42704',
				 'queue "nope" does not exist', 'queue_alter of an unknown queue');
SELECT throws_ok($$SELECT pgqueue.queue_drop('nope')$$, '42704',
				 'queue "nope" does not exist', 'queue_drop of an unknown queue');
SELECT throws_ok($$SELECT pgqueue.queue_drop('nope', force => true)$$, '42704',
				 'queue "nope" does not exist', 'queue_drop with force of an unknown queue');
SELECT throws_ok($$SELECT pgqueue.queue_pause('nope')$$, '42704',
				 'queue "nope" does not exist', 'queue_pause of an unknown queue');
SELECT throws_ok($$SELECT pgqueue.queue_resume('nope')$$, '42704',
				 'queue "nope" does not exist', 'queue_resume of an unknown queue');
SELECT throws_ok($$SELECT pgqueue.queue_purge('nope')$$, '42704',
				 'queue "nope" does not exist', 'queue_purge of an unknown queue');
SELECT throws_ok($$SELECT pgqueue.queue_push('nope', '{}')$$, '42704',
				 'queue "nope" does not exist', 'queue_push to an unknown queue');
SELECT throws_ok($$SELECT pgqueue.queue_push_batch('nope', ARRAY['{}']::jsonb[])$$, '42704',
				 'queue "nope" does not exist', 'queue_push_batch to an unknown queue');
SELECT throws_ok($$SELECT pgqueue.queue_push_batch('nope', '{}'::jsonb[])$$, '42704',
				 'queue "nope" does not exist',
				 'queue_push_batch of no jobs to an unknown queue');
SELECT throws_ok($$SELECT * FROM pgqueue.queue_pop('nope')$$, '42704',
				 'queue "nope" does not exist', 'queue_pop from an unknown queue');
SELECT throws_ok($$SELECT pgqueue.queue_ack('nope', 1)$$, '42704',
				 'queue "nope" does not exist', 'queue_ack in an unknown queue');
SELECT throws_ok($$SELECT pgqueue.queue_ack('nope', ARRAY[1]::bigint[])$$, '42704',
				 'queue "nope" does not exist', 'queue_ack of an array in an unknown queue');
SELECT throws_ok($$SELECT pgqueue.queue_ack('nope', '{}'::bigint[])$$, '42704',
				 'queue "nope" does not exist',
				 'queue_ack of an empty array in an unknown queue');
SELECT throws_ok($$SELECT pgqueue.queue_fail('nope', 1, 'e')$$, '42704',
				 'queue "nope" does not exist', 'queue_fail in an unknown queue');
SELECT throws_ok($$SELECT pgqueue.queue_extend('nope', 1)$$, '42704',
				 'queue "nope" does not exist', 'queue_extend in an unknown queue');
SELECT throws_ok($$SELECT pgqueue.queue_release('nope', 1)$$, '42704',
				 'queue "nope" does not exist', 'queue_release in an unknown queue');
SELECT throws_ok($$SELECT pgqueue.queue_retry('nope', 1)$$, '42704',
				 'queue "nope" does not exist', 'queue_retry of a job in an unknown queue');
SELECT throws_ok($$SELECT pgqueue.queue_retry('nope', 'failed')$$, '42704',
				 'queue "nope" does not exist', 'bulk queue_retry in an unknown queue');
SELECT throws_ok($$SELECT pgqueue.queue_abort('nope', 1, 'r')$$, '42704',
				 'queue "nope" does not exist', 'queue_abort of a job in an unknown queue');
SELECT throws_ok($$SELECT pgqueue.queue_abort('nope', 'available', 'r')$$, '42704',
				 'queue "nope" does not exist', 'bulk queue_abort in an unknown queue');
SELECT throws_ok($$SELECT pgqueue.maintain('nope')$$, '42704',
				 'queue "nope" does not exist', 'maintain of an unknown queue');
SELECT throws_ok($$SELECT pgqueue.queue_push('Q', '{}')$$, '42704',
				 'queue "Q" does not exist', 'queue names are case-sensitive');
SELECT throws_ok($$SELECT pgqueue.queue_push('a''b', '{}')$$, '42704',
				 'queue "a''b" does not exist', 'queue_push to a name with a quote');
SELECT throws_ok(format('SELECT pgqueue.queue_push(%L, ''{}'')', repeat('q', 200)), '42704',
				 format('queue "%s" does not exist', repeat('q', 200)),
				 'queue_push to a name of 200 characters');
SELECT throws_ok($$SELECT * FROM pgqueue.queue_pop('')$$, '42704',
				 'queue "" does not exist', 'queue_pop from an empty name');

-- a NULL queue name
SELECT throws_ok($$SELECT pgqueue.queue_alter(NULL, max_attempts => 3)$$, '22004',
				 'queue name must not be null', 'queue_alter with a NULL queue');
SELECT throws_ok($$SELECT pgqueue.queue_drop(NULL)$$, '22004',
				 'queue name must not be null', 'queue_drop with a NULL queue');
SELECT throws_ok($$SELECT pgqueue.queue_pause(NULL)$$, '22004',
				 'queue name must not be null', 'queue_pause with a NULL queue');
SELECT throws_ok($$SELECT pgqueue.queue_resume(NULL)$$, '22004',
				 'queue name must not be null', 'queue_resume with a NULL queue');
SELECT throws_ok($$SELECT pgqueue.queue_purge(NULL)$$, '22004',
				 'queue name must not be null', 'queue_purge with a NULL queue');
SELECT throws_ok($$SELECT pgqueue.queue_push(NULL, '{}')$$, '22004',
				 'queue name must not be null', 'queue_push with a NULL queue');
SELECT throws_ok($$SELECT pgqueue.queue_push_batch(NULL, ARRAY['{}']::jsonb[])$$, '22004',
				 'queue name must not be null', 'queue_push_batch with a NULL queue');
SELECT throws_ok($$SELECT * FROM pgqueue.queue_pop(NULL)$$, '22004',
				 'queue name must not be null', 'queue_pop with a NULL queue');
SELECT throws_ok($$SELECT pgqueue.queue_ack(NULL, 1)$$, '22004',
				 'queue name must not be null', 'queue_ack with a NULL queue');
SELECT throws_ok($$SELECT pgqueue.queue_ack(NULL, ARRAY[1]::bigint[])$$, '22004',
				 'queue name and job ids must not be null',
				 'queue_ack of an array with a NULL queue');
SELECT throws_ok($$SELECT pgqueue.queue_fail(NULL, 1, 'e')$$, '22004',
				 'queue name must not be null', 'queue_fail with a NULL queue');
SELECT throws_ok($$SELECT pgqueue.queue_extend(NULL, 1)$$, '22004',
				 'queue name must not be null', 'queue_extend with a NULL queue');
SELECT throws_ok($$SELECT pgqueue.queue_release(NULL, 1)$$, '22004',
				 'queue name must not be null', 'queue_release with a NULL queue');
SELECT throws_ok($$SELECT pgqueue.queue_retry(NULL, 1)$$, '22004',
				 'queue name must not be null', 'queue_retry with a NULL queue');
SELECT throws_ok($$SELECT pgqueue.queue_retry(NULL, 'failed')$$, '22004',
				 'queue name must not be null', 'bulk queue_retry with a NULL queue');
SELECT throws_ok($$SELECT pgqueue.queue_abort(NULL, 1, 'r')$$, '22004',
				 'queue name must not be null', 'queue_abort with a NULL queue');
SELECT throws_ok($$SELECT pgqueue.queue_abort(NULL, 'available', 'r')$$, '22004',
				 'queue name must not be null', 'bulk queue_abort with a NULL queue');

-- hostile names in queue_create
SELECT throws_ok($$SELECT pgqueue.queue_create(NULL)$$, '22004',
				 'queue_create arguments must not be null', 'queue_create with a NULL name');
SELECT throws_ok($$SELECT pgqueue.queue_create('a''b')$$, '42602',
				 'invalid queue name "a''b"', 'queue_create with a quote in the name');
SELECT throws_ok($$SELECT pgqueue.queue_create('a"b')$$, '42602',
				 'invalid queue name "a"b"', 'queue_create with a double quote in the name');
SELECT throws_ok($$SELECT pgqueue.queue_create('a;drop table pgq_tap_victim')$$, '42602',
				 'invalid queue name "a;drop table pgq_tap_victim"',
				 'queue_create with a semicolon and SQL in the name');
SELECT throws_ok(format('SELECT pgqueue.queue_create(%L)', repeat('q', 200)), '42602',
				 format('invalid queue name "%s"', repeat('q', 200)),
				 'queue_create with a name of 200 characters');
SELECT throws_ok(format('SELECT pgqueue.queue_create(%L)', repeat('q', 64)), '42602',
				 format('invalid queue name "%s"', repeat('q', 64)),
				 'queue_create with a name of 64 characters');
SELECT throws_ok($$SELECT pgqueue.queue_create('')$$, '42602',
				 'invalid queue name ""', 'queue_create with an empty name');
SELECT throws_ok($$SELECT pgqueue.queue_create('.hidden')$$, '42602',
				 'invalid queue name ".hidden"', 'queue_create with a leading dot');
SELECT throws_ok($$SELECT pgqueue.queue_create('-x')$$, '42602',
				 'invalid queue name "-x"', 'queue_create with a leading dash');
SELECT throws_ok($$SELECT pgqueue.queue_create('my queue')$$, '42602',
				 'invalid queue name "my queue"', 'queue_create with a space in the name');
SELECT throws_ok($$SELECT pgqueue.queue_create(' q')$$, '42602',
				 'invalid queue name " q"', 'queue_create with a leading space');
SELECT throws_ok($$SELECT pgqueue.queue_create(E'q\n')$$, '42602',
				 E'invalid queue name "q\n"', 'queue_create with a trailing newline');
SELECT throws_ok($$SELECT pgqueue.queue_create('café')$$, '42602',
				 'invalid queue name "café"', 'queue_create with a non-ASCII letter');
SELECT throws_ok($$SELECT pgqueue.queue_create('作业')$$, '42602',
				 'invalid queue name "作业"', 'queue_create with a CJK name');
SELECT throws_ok($$SELECT pgqueue.queue_create('a/b')$$, '42602',
				 'invalid queue name "a/b"', 'queue_create with a slash in the name');
SELECT throws_ok($$SELECT pgqueue.queue_create('q')$$, '42710',
				 'queue "q" already exists', 'queue_create of an existing queue');

-- bad options in queue_create
SELECT throws_ok($$SELECT pgqueue.queue_create('b', block_size => 1)$$, '22023',
				 'invalid option for queue "b"', 'queue_create with block_size 1');
SELECT throws_ok($$SELECT pgqueue.queue_create('b', block_size => 2000000000)$$, '22023',
				 'invalid option for queue "b"', 'queue_create with a huge block_size');
SELECT throws_ok($$SELECT pgqueue.queue_create('b', max_attempts => 0)$$, '22023',
				 'invalid option for queue "b"', 'queue_create with max_attempts 0');
SELECT throws_ok($$SELECT pgqueue.queue_create('b', max_attempts => 1001)$$, '22023',
				 'invalid option for queue "b"', 'queue_create with max_attempts 1001');
SELECT throws_ok($$SELECT pgqueue.queue_create('b', backoff_jitter => 2)$$, '22023',
				 'invalid option for queue "b"', 'queue_create with backoff_jitter 2');
SELECT throws_ok($$SELECT pgqueue.queue_create('b', backoff_jitter => -0.1)$$, '22023',
				 'invalid option for queue "b"', 'queue_create with a negative backoff_jitter');
SELECT throws_ok($$SELECT pgqueue.queue_create('b', backoff_base => '1 hour',
				   backoff_cap => '1 minute')$$, '22023',
				 'invalid option for queue "b"', 'queue_create with backoff_cap < backoff_base');
SELECT throws_ok($$SELECT pgqueue.queue_create('b', backoff_base => '-1 second')$$, '22023',
				 'invalid option for queue "b"', 'queue_create with a negative backoff_base');
SELECT throws_ok($$SELECT pgqueue.queue_create('b', default_lease => '0')$$, '22023',
				 'invalid option for queue "b"', 'queue_create with a zero default_lease');
SELECT throws_ok($$SELECT pgqueue.queue_create('b', default_lease => '-5 seconds')$$, '22023',
				 'invalid option for queue "b"', 'queue_create with a negative default_lease');
SELECT throws_ok($$SELECT pgqueue.queue_create('b', max_attempts => NULL)$$, '22004',
				 'queue_create arguments must not be null', 'queue_create with a NULL option');

SELECT results_eq(
	$$SELECT (SELECT count(*) FROM pgqueue.queue),
			 (SELECT count(*) FROM pg_class WHERE relnamespace = 'pgqueue_data'::regnamespace)$$,
	$$SELECT queues, rels FROM before$$,
	'the rejected queue_create calls created no queue, sequence or table');
SELECT has_table('public', 'pgq_tap_victim',
				 'the table named in a hostile queue name still exists');

-- bad options in queue_alter leave the queue as it was
SELECT throws_ok($$SELECT pgqueue.queue_alter('q', max_attempts => 7, backoff_jitter => 2)$$,
				 '22023', 'invalid option for queue "q"',
				 'queue_alter with one bad option among good ones');
SELECT throws_ok($$SELECT pgqueue.queue_alter('q', backoff_base => '2 hours')$$,
				 '22023', 'invalid option for queue "q"',
				 'queue_alter with backoff_base above the current backoff_cap');
SELECT throws_ok($$SELECT pgqueue.queue_alter('q', default_lease => '-1 second')$$,
				 '22023', 'invalid option for queue "q"',
				 'queue_alter with a negative default_lease');
SELECT results_eq(
	$$SELECT default_lease, max_attempts, backoff_base, backoff_jitter
		FROM pgqueue.queues WHERE queue = 'q'$$,
	$$VALUES ('30 seconds'::interval, 5, '1 second'::interval, 0.1::double precision)$$,
	'a rejected queue_alter changed nothing');

-- queue_drop
SELECT is(pgqueue.queue_push('q', '{}'), 1::bigint, 'push a job to q');
SELECT throws_ok($$SELECT pgqueue.queue_drop('q', force => NULL)$$, '22004',
				 'force must not be null', 'queue_drop with a NULL force');
SELECT throws_ok($$SELECT pgqueue.queue_drop('q')$$, '55000',
				 'queue "q" is not empty', 'queue_drop of a queue with an available job');
SELECT results_eq($$SELECT job_id FROM pgqueue.queue_pop('q')$$, $$VALUES (1::bigint)$$,
				  'the queue whose drop was refused still works');

SELECT * FROM finish();
ROLLBACK;
