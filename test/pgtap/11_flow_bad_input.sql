/*
 * 11_flow_bad_input.sql: bad input of flow control (issue 5): negative or
 * infinite limits and rates, malformed tenant_weights, NULL options in
 * queue_create, bad tenants in queue_push and queue_push_batch, and tenants
 * arrays of the wrong shape.  Each error has its SQLSTATE, message and
 * hint, and creates, changes or reserves nothing.
 */
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off

\set create_hint 'block_size is 100 to 1000000000; default_lease is above 0 and at most 1 year; max_attempts is 1 to 1000; 0 <= backoff_base <= backoff_cap <= 1 year; backoff_jitter is 0 to 1; retention and archive_retention are 0 to 100 years; compact_threshold is above 0 and at most 1; limits are not negative and rates are 0 to 1e9 (0: no limit); tenant_weights maps tenants to integers 1 to 1000.'
\set alter_hint 'block_size is 100 to 1000000000; default_lease is above 0 and at most 1 year; max_attempts is 1 to 1000; 0 <= backoff_base <= backoff_cap <= 1 year; backoff_jitter is 0 to 1; retention and archive_retention are 0 to 100 years; compact_threshold is above 0 and at most 1; limits are not negative and rates are 0 to 1e9 (0: no limit); tenant_weights maps tenants to integers 1 to 1000.'

BEGIN;
SELECT plan(76);

/* the error a statement raises: 'SQLSTATE: message HINT: hint' */
CREATE FUNCTION pg_temp.err(sql text)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	state text;
	msg text;
	hint text;
BEGIN
	EXECUTE sql;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
	RETURN state || ': ' || msg || coalesce(' HINT: ' || nullif(hint, ''), '');
END
$$;

SELECT pgqueue.queue_create('q', max_depth => 5, tenant_max_depth => 3) \g /dev/null
CREATE TEMP TABLE before AS
SELECT (SELECT count(*) FROM pgqueue.queue) AS queues,
	   (SELECT count(*) FROM pg_class WHERE relnamespace = 'pgqueue_data'::regnamespace) AS rels;

-- negative and infinite limits and rates in queue_create
SELECT is(pg_temp.err($$SELECT pgqueue.queue_create('b', max_in_flight => -1)$$),
		  '22023: invalid option for queue "b" HINT: ' || :'create_hint',
		  'queue_create with a negative max_in_flight');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_create('b', tenant_max_in_flight => -1)$$),
		  '22023: invalid option for queue "b" HINT: ' || :'create_hint',
		  'queue_create with a negative tenant_max_in_flight');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_create('b', max_depth => -1)$$),
		  '22023: invalid option for queue "b" HINT: ' || :'create_hint',
		  'queue_create with a negative max_depth');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_create('b', tenant_max_depth => -5)$$),
		  '22023: invalid option for queue "b" HINT: ' || :'create_hint',
		  'queue_create with a negative tenant_max_depth');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_create('b', push_rate => -0.5)$$),
		  '22023: invalid option for queue "b" HINT: ' || :'create_hint',
		  'queue_create with a negative push_rate');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_create('b', tenant_push_rate => -1)$$),
		  '22023: invalid option for queue "b" HINT: ' || :'create_hint',
		  'queue_create with a negative tenant_push_rate');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_create('b', pop_rate => -1)$$),
		  '22023: invalid option for queue "b" HINT: ' || :'create_hint',
		  'queue_create with a negative pop_rate');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_create('b', tenant_pop_rate => -1)$$),
		  '22023: invalid option for queue "b" HINT: ' || :'create_hint',
		  'queue_create with a negative tenant_pop_rate');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_create('b', push_rate => 'infinity')$$),
		  '22023: invalid option for queue "b" HINT: ' || :'create_hint',
		  'queue_create with an infinite push_rate');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_create('b', pop_rate => 'NaN')$$),
		  '22023: invalid option for queue "b" HINT: ' || :'create_hint',
		  'queue_create with a pop_rate of NaN');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_create('b', tenant_pop_rate => '-infinity')$$),
		  '22023: invalid option for queue "b" HINT: ' || :'create_hint',
		  'queue_create with a tenant_pop_rate of -infinity');

-- malformed tenant_weights in queue_create
SELECT is(pg_temp.err($$SELECT pgqueue.queue_create('b', tenant_weights => '[1, 2]')$$),
		  '22023: invalid option for queue "b" HINT: ' || :'create_hint',
		  'queue_create with tenant_weights an array');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_create('b', tenant_weights => '3')$$),
		  '22023: invalid option for queue "b" HINT: ' || :'create_hint',
		  'queue_create with tenant_weights a number');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_create('b', tenant_weights => '"A"')$$),
		  '22023: invalid option for queue "b" HINT: ' || :'create_hint',
		  'queue_create with tenant_weights a string');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_create('b', tenant_weights => 'null')$$),
		  '22023: invalid option for queue "b" HINT: ' || :'create_hint',
		  'queue_create with tenant_weights a JSON null');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_create('b', tenant_weights => '{"A": 0}')$$),
		  '22023: invalid option for queue "b" HINT: ' || :'create_hint',
		  'queue_create with a weight of 0');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_create('b', tenant_weights => '{"A": -1}')$$),
		  '22023: invalid option for queue "b" HINT: ' || :'create_hint',
		  'queue_create with a negative weight');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_create('b', tenant_weights => '{"A": 1001}')$$),
		  '22023: invalid option for queue "b" HINT: ' || :'create_hint',
		  'queue_create with a weight of 1001');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_create('b', tenant_weights => '{"A": 2.5}')$$),
		  '22023: invalid option for queue "b" HINT: ' || :'create_hint',
		  'queue_create with a weight of 2.5');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_create('b', tenant_weights => '{"A": 1e10}')$$),
		  '22023: invalid option for queue "b" HINT: ' || :'create_hint',
		  'queue_create with a weight of 1e10');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_create('b', tenant_weights => '{"A": "3"}')$$),
		  '22023: invalid option for queue "b" HINT: ' || :'create_hint',
		  'queue_create with a weight given as a string');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_create('b', tenant_weights => '{"A": true}')$$),
		  '22023: invalid option for queue "b" HINT: ' || :'create_hint',
		  'queue_create with a weight given as a boolean');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_create('b', tenant_weights => '{"A": null}')$$),
		  '22023: invalid option for queue "b" HINT: ' || :'create_hint',
		  'queue_create with a weight given as JSON null');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_create('b', tenant_weights => '{"A": {"w": 2}}')$$),
		  '22023: invalid option for queue "b" HINT: ' || :'create_hint',
		  'queue_create with a weight given as an object');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_create('b', tenant_weights => '{"": 2}')$$),
		  '22023: invalid option for queue "b" HINT: ' || :'create_hint',
		  'queue_create with an empty tenant name in tenant_weights');
SELECT is(pg_temp.err(format('SELECT pgqueue.queue_create(''b'', tenant_weights => %L)',
							 jsonb_build_object(repeat('t', 64), 2))),
		  '22023: invalid option for queue "b" HINT: ' || :'create_hint',
		  'queue_create with a tenant of 64 bytes in tenant_weights');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_create('b', tenant_weights => '{"A": 2, "B": 0}')$$),
		  '22023: invalid option for queue "b" HINT: ' || :'create_hint',
		  'queue_create with one bad weight among good ones');

-- NULL flow options in queue_create
SELECT throws_ok($$SELECT pgqueue.queue_create('b', max_in_flight => NULL)$$, '22004',
				 'queue_create arguments must not be null', 'queue_create with a NULL max_in_flight');
SELECT throws_ok($$SELECT pgqueue.queue_create('b', tenant_max_in_flight => NULL)$$, '22004',
				 'queue_create arguments must not be null',
				 'queue_create with a NULL tenant_max_in_flight');
SELECT throws_ok($$SELECT pgqueue.queue_create('b', max_depth => NULL)$$, '22004',
				 'queue_create arguments must not be null', 'queue_create with a NULL max_depth');
SELECT throws_ok($$SELECT pgqueue.queue_create('b', tenant_max_depth => NULL)$$, '22004',
				 'queue_create arguments must not be null',
				 'queue_create with a NULL tenant_max_depth');
SELECT throws_ok($$SELECT pgqueue.queue_create('b', push_rate => NULL)$$, '22004',
				 'queue_create arguments must not be null', 'queue_create with a NULL push_rate');
SELECT throws_ok($$SELECT pgqueue.queue_create('b', tenant_push_rate => NULL)$$, '22004',
				 'queue_create arguments must not be null',
				 'queue_create with a NULL tenant_push_rate');
SELECT throws_ok($$SELECT pgqueue.queue_create('b', pop_rate => NULL)$$, '22004',
				 'queue_create arguments must not be null', 'queue_create with a NULL pop_rate');
SELECT throws_ok($$SELECT pgqueue.queue_create('b', tenant_pop_rate => NULL)$$, '22004',
				 'queue_create arguments must not be null',
				 'queue_create with a NULL tenant_pop_rate');
SELECT throws_ok($$SELECT pgqueue.queue_create('b', tenant_weights => NULL)$$, '22004',
				 'queue_create arguments must not be null',
				 'queue_create with a NULL tenant_weights');

SELECT results_eq(
	$$SELECT (SELECT count(*) FROM pgqueue.queue),
			 (SELECT count(*) FROM pg_class WHERE relnamespace = 'pgqueue_data'::regnamespace)$$,
	$$SELECT queues, rels FROM before$$,
	'the rejected queue_create calls created no queue, sequence or table');

-- the extremes that are allowed
SELECT lives_ok($$SELECT pgqueue.queue_create('ok', tenant_weights =>
				  jsonb_build_object('A', 1, 'B', 1000, repeat('t', 63), 7),
				  push_rate => 0.5, pop_rate => 1e9)$$,
				'weights 1 and 1000, a tenant of 63 bytes and fractional or huge rates are allowed');

-- the same in queue_alter, which leaves the queue as it was
SELECT pgqueue.queue_alter('q', max_in_flight => 1, tenant_max_in_flight => 2,
						   push_rate => 100, tenant_push_rate => 50, pop_rate => 100,
						   tenant_pop_rate => 50, tenant_weights => '{"A": 2}') \g /dev/null
SELECT is(pg_temp.err($$SELECT pgqueue.queue_alter('q', max_in_flight => -1)$$),
		  '22023: invalid option for queue "q" HINT: ' || :'alter_hint',
		  'queue_alter with a negative max_in_flight');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_alter('q', tenant_max_in_flight => -1)$$),
		  '22023: invalid option for queue "q" HINT: ' || :'alter_hint',
		  'queue_alter with a negative tenant_max_in_flight');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_alter('q', max_depth => -1)$$),
		  '22023: invalid option for queue "q" HINT: ' || :'alter_hint',
		  'queue_alter with a negative max_depth');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_alter('q', tenant_max_depth => -1)$$),
		  '22023: invalid option for queue "q" HINT: ' || :'alter_hint',
		  'queue_alter with a negative tenant_max_depth');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_alter('q', push_rate => -1)$$),
		  '22023: invalid option for queue "q" HINT: ' || :'alter_hint',
		  'queue_alter with a negative push_rate');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_alter('q', tenant_push_rate => -1)$$),
		  '22023: invalid option for queue "q" HINT: ' || :'alter_hint',
		  'queue_alter with a negative tenant_push_rate');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_alter('q', pop_rate => -1)$$),
		  '22023: invalid option for queue "q" HINT: ' || :'alter_hint',
		  'queue_alter with a negative pop_rate');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_alter('q', tenant_pop_rate => -1)$$),
		  '22023: invalid option for queue "q" HINT: ' || :'alter_hint',
		  'queue_alter with a negative tenant_pop_rate');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_alter('q', tenant_push_rate => 'infinity')$$),
		  '22023: invalid option for queue "q" HINT: ' || :'alter_hint',
		  'queue_alter with an infinite tenant_push_rate');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_alter('q', tenant_weights => '[]')$$),
		  '22023: invalid option for queue "q" HINT: ' || :'alter_hint',
		  'queue_alter with tenant_weights not an object');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_alter('q', tenant_weights => '{"A": 0}')$$),
		  '22023: invalid option for queue "q" HINT: ' || :'alter_hint',
		  'queue_alter with a weight of 0');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_alter('q', tenant_weights => '{"A": 1001}')$$),
		  '22023: invalid option for queue "q" HINT: ' || :'alter_hint',
		  'queue_alter with a weight of 1001');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_alter('q', tenant_weights => '{"A": 2.5}')$$),
		  '22023: invalid option for queue "q" HINT: ' || :'alter_hint',
		  'queue_alter with a weight of 2.5');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_alter('q', tenant_weights => '{"": 1}')$$),
		  '22023: invalid option for queue "q" HINT: ' || :'alter_hint',
		  'queue_alter with an empty tenant name in tenant_weights');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_alter('q', max_in_flight => 9, pop_rate => 9,
						tenant_weights => '{"B": 3}', max_depth => -1)$$),
		  '22023: invalid option for queue "q" HINT: ' || :'alter_hint',
		  'queue_alter with one bad limit among good ones');
SELECT lives_ok($$SELECT pgqueue.queue_alter('q', max_in_flight => NULL, max_depth => NULL,
				  push_rate => NULL, tenant_weights => NULL)$$,
				'queue_alter with NULL limits (leave them as they are)');
SELECT results_eq(
	$$SELECT max_in_flight, tenant_max_in_flight, max_depth, tenant_max_depth, push_rate,
			 tenant_push_rate, pop_rate, tenant_pop_rate, tenant_weights
		FROM pgqueue.queues WHERE queue = 'q'$$,
	$$VALUES (1, 2, 5::bigint, 3::bigint, 100::float8, 50::float8, 100::float8, 50::float8,
			  '{"A": 2}'::jsonb)$$,
	'the rejected queue_alter calls and the one with NULLs changed nothing');

-- bad tenants in queue_push
SELECT throws_ok($$SELECT pgqueue.queue_push('q', '{}', tenant => '')$$, '22023',
				 'invalid tenant ""', 'queue_push with an empty tenant');
SELECT throws_ok(format('SELECT pgqueue.queue_push(''q'', ''{}'', tenant => %L)', repeat('t', 64)),
				 '22023', format('invalid tenant "%s"', repeat('t', 64)),
				 'queue_push with a tenant of 64 bytes');
SELECT throws_ok(format('SELECT pgqueue.queue_push(''q'', ''{}'', tenant => %L)', repeat('é', 32)),
				 '22023', format('invalid tenant "%s"', repeat('é', 32)),
				 'queue_push with a tenant of 32 characters but 64 bytes');
SELECT is(pg_temp.err($$SELECT pgqueue.queue_push('q', '{}', tenant => '')$$),
		  '22023: invalid tenant ""',
		  'the error has no hint (the detail says what a tenant is)');
SELECT pgqueue.queue_create('nolimit') \g /dev/null
SELECT throws_ok($$SELECT pgqueue.queue_push('nolimit', '{}', tenant => '')$$, '22023',
				 'invalid tenant ""', 'queue_push with an empty tenant to a queue without limits');
SELECT throws_ok(format('SELECT pgqueue.queue_push(''nolimit'', ''{}'', tenant => %L)',
						repeat('t', 64)),
				 '22023', format('invalid tenant "%s"', repeat('t', 64)),
				 'queue_push with a tenant of 64 bytes to a queue without limits');
SELECT is(pgqueue.queue_push('q', '{}', tenant => repeat('t', 63)), 1::bigint,
		  'a tenant of 63 bytes is allowed');

-- bad tenants and tenants arrays in queue_push_batch
SELECT throws_ok($$SELECT pgqueue.queue_push_batch('q', array_fill('{}'::jsonb, ARRAY[3]),
				   tenants => ARRAY['A', '', 'B'])$$, '22023',
				 'invalid tenant ""', 'queue_push_batch with an empty tenant among good ones');
SELECT throws_ok(format('SELECT pgqueue.queue_push_batch(''q'', array_fill(''{}''::jsonb, ARRAY[2]),
						tenants => ARRAY[''A'', %L])', repeat('t', 64)), '22023',
				 format('invalid tenant "%s"', repeat('t', 64)),
				 'queue_push_batch with a tenant of 64 bytes');
SELECT throws_ok($$SELECT pgqueue.queue_push_batch('q', array_fill('{}'::jsonb, ARRAY[3]),
				   tenants => ARRAY['A', 'B'])$$, '2202E',
				 'tenants and payloads must have the same length',
				 'queue_push_batch with fewer tenants than payloads');
SELECT throws_ok($$SELECT pgqueue.queue_push_batch('q', array_fill('{}'::jsonb, ARRAY[2]),
				   tenants => ARRAY['A', 'B', 'C'])$$, '2202E',
				 'tenants and payloads must have the same length',
				 'queue_push_batch with more tenants than payloads');
SELECT throws_ok($$SELECT pgqueue.queue_push_batch('q', array_fill('{}'::jsonb, ARRAY[2]),
				   tenants => '{}'::text[])$$, '2202E',
				 'tenants and payloads must have the same length',
				 'queue_push_batch with an empty tenants array');
SELECT throws_ok($$SELECT pgqueue.queue_push_batch('q', '{}'::jsonb[], tenants => ARRAY['A'])$$,
				 '2202E', 'tenants and payloads must have the same length',
				 'queue_push_batch of no payloads with a tenant');
SELECT throws_ok($$SELECT pgqueue.queue_push_batch('q', array_fill('{}'::jsonb, ARRAY[4]),
				   tenants => ARRAY[['A', 'B'], ['C', 'D']])$$, '2202E',
				 'tenants must be a one-dimensional array',
				 'queue_push_batch with a two-dimensional tenants array');
SELECT throws_ok($$SELECT pgqueue.queue_push_batch('nolimit', array_fill('{}'::jsonb, ARRAY[3]),
				   tenants => ARRAY['A', 'B'])$$, '2202E',
				 'tenants and payloads must have the same length',
				 'queue_push_batch with fewer tenants than payloads to a queue without limits');
SELECT is((SELECT count(*) FROM pgqueue.jobs WHERE queue IN ('q', 'nolimit')), 1::bigint,
		  'the rejected pushes pushed nothing');

-- nor did they reserve anything: q takes 4 more jobs (max_depth 5), 3 of one tenant
SELECT is(pgqueue.queue_push_batch('q', array_fill('{}'::jsonb, ARRAY[3]),
								   tenants => ARRAY['A', 'A', 'A']), ARRAY[2, 3, 4]::bigint[],
		  'the rejected pushes reserved nothing of tenant A: A pushes 3 (tenant_max_depth 3)');
SELECT is(pgqueue.queue_push_batch('q', array_fill('{}'::jsonb, ARRAY[1]),
								   tenants => ARRAY[NULL]::text[]), ARRAY[5]::bigint[],
		  'the rejected pushes reserved nothing of the queue: the 5th job (max_depth 5) passes');
SELECT throws_ok($$SELECT pgqueue.queue_push('q', '{}')$$, 'PQ005', 'queue "q" is full',
				 'the 6th job does not');

-- NULL elements in tenants are jobs without a tenant
SELECT is(pgqueue.queue_push_batch('nolimit', array_fill('{}'::jsonb, ARRAY[2]),
								   tenants => ARRAY[NULL, 'A']), ARRAY[1, 2]::bigint[],
		  'queue_push_batch with a NULL tenant element');
SELECT results_eq($$SELECT job_id, tenant FROM pgqueue.jobs WHERE queue = 'nolimit' ORDER BY job_id$$,
				  $$VALUES (1::bigint, NULL::text), (2, 'A')$$,
				  'the NULL element is a job without a tenant');

SELECT * FROM finish();
ROLLBACK;
