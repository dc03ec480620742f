/*
 * 10_flow.sql: flow control (issue 5): fair shares among tenants
 * (round-robin, tenant_weights, jobs without a tenant), in-flight caps,
 * push and pop rate limits with priority-aware shedding, maximum depth,
 * queue_alter of the limits, and ordering keys as pgqueue.jobs and
 * pgqueue.stats show them.  Bad input: 11_flow_bad_input.sql.
 *
 * Limits count in shared memory: the pushes and claims of a running
 * transaction reserve their share at once, while acks, fails and releases
 * settle only when their transaction commits (flow.c).  An ack inside the
 * test transaction therefore frees no slot of max_in_flight and no room
 * under max_depth, and the next job of a key waits for the ack to commit.
 * Those checks run first, in autocommit mode (each statement is its own
 * transaction, so no other session is needed), on queues named fc_* that
 * are dropped at the end of that part; plan() runs before them so that
 * their results count.  Everything else runs in one transaction that is
 * rolled back.
 *
 * Token buckets refill continuously (rate tokens per second, one second's
 * worth at most); the counts below assume that the pushes of one check take
 * well under 100 ms, i.e. less than one token of refill at rate 10.
 */
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off

SELECT plan(123);

/* ------------------------------------------------------------------------
 * Committed part: what an ack, release or fail frees once it commits
 * ------------------------------------------------------------------------ */

-- max_in_flight: an ack, a release and a fail each free a slot
SELECT pgqueue.queue_create('fc_cap', max_in_flight => 3, block_size => 100) \g /dev/null
SELECT pgqueue.queue_push_batch('fc_cap', array_fill('{}'::jsonb, ARRAY[10])) \g /dev/null
SELECT results_eq($$SELECT job_id FROM pgqueue.queue_pop('fc_cap', 10)$$,
				  $$VALUES (1::bigint), (2), (3)$$,
				  'committed, max_in_flight 3: a pop of 10 returns 3 jobs');
SELECT is_empty($$SELECT * FROM pgqueue.queue_pop('fc_cap', 10)$$,
				'committed, at the cap: a further pop returns nothing');
SELECT pgqueue.queue_ack('fc_cap', 1) \g /dev/null
SELECT results_eq($$SELECT job_id FROM pgqueue.queue_pop('fc_cap', 10)$$,
				  $$VALUES (4::bigint)$$,
				  'committed: after one ack a pop returns one job');
SELECT is_empty($$SELECT * FROM pgqueue.queue_pop('fc_cap', 10)$$,
				'committed: and then nothing again');
SELECT pgqueue.queue_release('fc_cap', 2) \g /dev/null
SELECT results_eq($$SELECT job_id FROM pgqueue.queue_pop('fc_cap', 10)$$,
				  $$VALUES (2::bigint)$$,
				  'committed: a release frees a slot (the released job comes back)');
SELECT pgqueue.queue_fail('fc_cap', 3, 'boom', retry_in => '1 hour') \g /dev/null
SELECT results_eq($$SELECT job_id FROM pgqueue.queue_pop('fc_cap', 10)$$,
				  $$VALUES (5::bigint)$$,
				  'committed: a fail frees a slot');
SELECT is((SELECT executing FROM pgqueue.queues WHERE queue = 'fc_cap'), 3::bigint,
		  'committed: pgqueue.queues shows 3 executing, the cap');

-- tenant_max_in_flight: a release frees a slot of that tenant only
SELECT pgqueue.queue_create('fc_tcap', tenant_max_in_flight => 1, block_size => 100) \g /dev/null
SELECT pgqueue.queue_push_batch('fc_tcap', array_fill('{}'::jsonb, ARRAY[6]),
								tenants => ARRAY['A', 'A', 'A', 'B', 'B', 'B']) \g /dev/null
SELECT results_eq($$SELECT job_id, tenant FROM pgqueue.queue_pop('fc_tcap', 10)$$,
				  $$VALUES (1::bigint, 'A'::text), (4, 'B')$$,
				  'committed, tenant_max_in_flight 1: one job of each tenant');
SELECT pgqueue.queue_release('fc_tcap', 1) \g /dev/null
SELECT results_eq($$SELECT job_id, tenant FROM pgqueue.queue_pop('fc_tcap', 10)$$,
				  $$VALUES (1::bigint, 'A'::text)$$,
				  'committed: a release of A''s job frees A''s slot, B stays at its cap');
SELECT pgqueue.queue_ack('fc_tcap', 4) \g /dev/null
SELECT results_eq($$SELECT job_id, tenant FROM pgqueue.queue_pop('fc_tcap', 10)$$,
				  $$VALUES (5::bigint, 'B'::text)$$,
				  'committed: an ack of B''s job frees B''s slot');

-- max_depth: a terminal ack or fail makes room, a retrying fail does not
SELECT pgqueue.queue_create('fc_depth', max_depth => 3, max_attempts => 2,
							block_size => 100) \g /dev/null
SELECT pgqueue.queue_push_batch('fc_depth', array_fill('{}'::jsonb, ARRAY[3])) \g /dev/null
SELECT throws_ok($$SELECT pgqueue.queue_push('fc_depth', '{}')$$, 'PQ005',
				 'queue "fc_depth" is full', 'committed, max_depth 3: the 4th push fails');
SELECT is((SELECT count(*) FROM pgqueue.queue_pop('fc_depth', 3)), 3::bigint,
		  'committed: pop the 3 jobs');
SELECT pgqueue.queue_ack('fc_depth', 1) \g /dev/null
SELECT is(pgqueue.queue_push('fc_depth', '{"after": "ack"}'), 4::bigint,
		  'committed: after an ack a push passes again');
SELECT throws_ok($$SELECT pgqueue.queue_push('fc_depth', '{}')$$, 'PQ005',
				 'queue "fc_depth" is full', 'committed: and the next one fails');
SELECT pgqueue.queue_fail('fc_depth', 2, 'first', retry_in => '1 hour') \g /dev/null
SELECT throws_ok($$SELECT pgqueue.queue_push('fc_depth', '{}')$$, 'PQ005',
				 'queue "fc_depth" is full',
				 'committed: a failed job that will retry still counts');
SELECT pgqueue.queue_abort('fc_depth', 2, 'enough') \g /dev/null
SELECT is(pgqueue.queue_push('fc_depth', '{"after": "abort"}'), 5::bigint,
		  'committed: after an abort a push passes again');
SELECT pgqueue.queue_fail('fc_depth', 3, 'once', retry_in => '0') \g /dev/null
SELECT results_eq($$SELECT job_id, attempt FROM pgqueue.queue_pop('fc_depth', 1)$$,
				  $$VALUES (3::bigint, 2)$$, 'committed: job 3 is popped for its last attempt');
SELECT is(pgqueue.queue_fail('fc_depth', 3, 'twice'), 'aborted',
		  'committed: its last attempt fails, job 3 is aborted');
SELECT is(pgqueue.queue_push('fc_depth', '{"after": "fail"}'), 6::bigint,
		  'committed: after a fail that aborts a push passes again');
SELECT throws_ok($$SELECT pgqueue.queue_push('fc_depth', '{}')$$, 'PQ005',
				 'queue "fc_depth" is full', 'committed: and the next one fails');

-- tenant_max_depth: an ack makes room for its tenant
SELECT pgqueue.queue_create('fc_tdepth', tenant_max_depth => 2, block_size => 100) \g /dev/null
SELECT pgqueue.queue_push_batch('fc_tdepth', array_fill('{}'::jsonb, ARRAY[2]),
								tenants => ARRAY['A', 'A']) \g /dev/null
SELECT throws_ok($$SELECT pgqueue.queue_push('fc_tdepth', '{}', tenant => 'A')$$, 'PQ005',
				 'tenant "A" of queue "fc_tdepth" is full',
				 'committed, tenant_max_depth 2: A''s 3rd push fails');
SELECT is((SELECT count(*) FROM pgqueue.queue_pop('fc_tdepth', 1)), 1::bigint,
		  'committed: pop one of A''s jobs');
SELECT pgqueue.queue_ack('fc_tdepth', 1) \g /dev/null
SELECT is(pgqueue.queue_push('fc_tdepth', '{}', tenant => 'A'), 3::bigint,
		  'committed: after an ack A may push again');

-- keys: the next job of a key is claimed as soon as the ack commits
SELECT pgqueue.queue_create('fc_keys', block_size => 100) \g /dev/null
SELECT pgqueue.queue_push_batch('fc_keys', array_fill('{}'::jsonb, ARRAY[3]),
								keys => ARRAY['k', 'k', 'k']) \g /dev/null
SELECT results_eq($$SELECT job_id FROM pgqueue.queue_pop('fc_keys', 10)$$,
				  $$VALUES (1::bigint)$$,
				  'committed, keys: a pop returns the first job of the key only');
SELECT pgqueue.queue_ack('fc_keys', 1) \g /dev/null
SELECT results_eq($$SELECT job_id FROM pgqueue.queue_pop('fc_keys', 10)$$,
				  $$VALUES (2::bigint)$$,
				  'committed: after its ack the next job of the key comes out at once');

-- keys: an ack looks for the next job of a key only 10 000 ids on; one
-- further on is found by the pop that gets there
SELECT pgqueue.queue_create('fc_keys_far') \g /dev/null
SELECT pgqueue.queue_push('fc_keys_far', '{}', 'k') \g /dev/null
SELECT pgqueue.queue_push_batch('fc_keys_far', array_fill('{}'::jsonb, ARRAY[12000])) \g /dev/null
SELECT pgqueue.queue_push_batch('fc_keys_far', array_fill('{}'::jsonb, ARRAY[2]),
								keys => ARRAY['k', 'k']) \g /dev/null
SELECT results_eq($$SELECT job_id FROM pgqueue.queue_pop('fc_keys_far', 1)$$,
				  $$VALUES (1::bigint)$$,
				  'committed, keys far apart: the first job of the key');
SELECT pgqueue.queue_ack('fc_keys_far', 1) \g /dev/null
SELECT is((SELECT count(*) FROM pgqueue.queue_pop('fc_keys_far', 10000)) +
		  (SELECT count(*) FROM pgqueue.queue_pop('fc_keys_far', 2000)), 12000::bigint,
		  'committed: the jobs without a key in between');
SELECT results_eq($$SELECT job_id FROM pgqueue.queue_pop('fc_keys_far', 10)$$,
				  $$VALUES (12002::bigint)$$,
				  'committed: the next job of the key, 12 001 ids on, and not the one after it');

-- keys: the ack of job 1 looks up the jobs of key k after it (2, 3, 4)
-- and its entry keeps them; the ack of job 2 takes its next job, 3, from
-- there.  Job 4 has priority 5, so pops look at it first: it must wait for 3
SELECT pgqueue.queue_create('fc_keys_chain') \g /dev/null
SELECT pgqueue.queue_push_batch('fc_keys_chain', array_fill('{}'::jsonb, ARRAY[4]),
								keys => ARRAY['k', 'k', 'k', 'k'],
								priorities => ARRAY[0, 0, 0, 5]) \g /dev/null
SELECT pgqueue.queue_ack('fc_keys_chain', job_id) FROM pgqueue.queue_pop('fc_keys_chain') \g /dev/null
SELECT results_eq($$SELECT job_id FROM pgqueue.queue_pop('fc_keys_chain', 10)$$,
				  $$VALUES (2::bigint)$$,
				  'committed, keys: after the ack of job 1, job 2 and not job 4 of higher priority');
SELECT pgqueue.queue_ack('fc_keys_chain', 2) \g /dev/null
SELECT results_eq($$SELECT job_id FROM pgqueue.queue_pop('fc_keys_chain', 10)$$,
				  $$VALUES (3::bigint)$$,
				  'committed: after the ack of job 2 (its next job kept by the ack of 1), job 3');

-- keys: a pop makes at most 100 holes (status rows of jobs whose key is
-- busy, which the lane's cursor passes); behind a longer run of one key
-- the next pop goes on from there
SELECT pgqueue.queue_create('fc_keys_run') \g /dev/null
SELECT pgqueue.queue_push_batch('fc_keys_run', array_fill('{}'::jsonb, ARRAY[152]),
								keys => array_fill('a'::text, ARRAY[151]) || 'b'::text) \g /dev/null
SELECT format('SELECT count(*) FROM %s', pgqueue_internal._rel('s', q.queue_id, 0)) AS run_holes
  FROM pgqueue.queue q WHERE q.name = 'fc_keys_run' \gset
SELECT results_eq($$SELECT job_id FROM pgqueue.queue_pop('fc_keys_run', 2)$$,
				  $$VALUES (1::bigint)$$,
				  'committed, a run of 151 jobs of one key: a pop takes the first only');
SELECT is((:run_holes), 100::bigint, 'committed: and makes 100 holes of the others, no more');
SELECT results_eq($$SELECT job_id FROM pgqueue.queue_pop('fc_keys_run', 2)$$,
				  $$VALUES (152::bigint)$$,
				  'committed: the next pop passes the rest of the run to the job of another key');

-- tenants: once a lane's density is known, a pop claims each tenant's
-- share in one range, with one claim record (50 tenants, interleaved)
SELECT pgqueue.queue_create('fc_lanes') \g /dev/null
SELECT pgqueue.queue_push_batch('fc_lanes', array_fill('{}'::jsonb, ARRAY[1000]),
								tenants => ARRAY(SELECT 't' || (i % 50) FROM generate_series(1, 1000) i))
  FROM generate_series(1, 5) \g /dev/null
DO $$
BEGIN
	FOR i IN 1..10 LOOP
		PERFORM count(*) FROM pgqueue.queue_pop('fc_lanes', 100);
	END LOOP;
END
$$;
SELECT format('SELECT count(*) FROM %s WHERE seq = 0',
			  pgqueue_internal._rel('c', q.queue_id, 0)) AS lanes_claims
  FROM pgqueue.queue q WHERE q.name = 'fc_lanes' \gset
CREATE TEMP TABLE lane_claims AS :lanes_claims;
SELECT count(*) FROM pgqueue.queue_pop('fc_lanes', 100) \g /dev/null
SELECT is((:lanes_claims) - (SELECT count FROM lane_claims), 10::bigint,
		  'committed, 50 tenants: a pop of 100 among 10 of them writes 10 claim records');

SELECT pgqueue.queue_drop(q, force => true) FROM unnest(ARRAY['fc_cap', 'fc_tcap', 'fc_depth',
															   'fc_tdepth', 'fc_keys', 'fc_keys_far',
															   'fc_keys_chain', 'fc_keys_run',
															   'fc_lanes']) q \g /dev/null
SELECT is((SELECT count(*) FROM pgqueue.queue WHERE name LIKE 'fc\_%'), 0::bigint,
		  'the queues of the committed part are dropped again');

/* ------------------------------------------------------------------------
 * The rest runs in one transaction
 * ------------------------------------------------------------------------ */
BEGIN;

/* pushes until one fails: '<pushes that passed> then <SQLSTATE>' */
CREATE FUNCTION pg_temp.pushes(q text, prio integer, t text DEFAULT NULL, lim integer DEFAULT 100)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	n integer := 0;
BEGIN
	WHILE n < lim LOOP
		BEGIN
			PERFORM pgqueue.queue_push(q, '{}', priority => prio, tenant => t);
		EXCEPTION WHEN OTHERS THEN
			RETURN n || ' then ' || SQLSTATE;
		END;
		n := n + 1;
	END LOOP;
	RETURN n || ' then none';
END
$$;

/* the number of jobs of one tenant that one pop returns */
CREATE FUNCTION pg_temp.pop_count(q text, n integer, t text)
RETURNS bigint LANGUAGE sql AS $$
SELECT count(*) FROM pgqueue.queue_pop(q, n) WHERE tenant = t
$$;

/* the number of jobs of each tenant ('-': none) that one pop returns */
CREATE FUNCTION pg_temp.pop_tenants(q text, n integer)
RETURNS text LANGUAGE sql AS $$
SELECT coalesce(string_agg(t || ':' || c, ' ' ORDER BY t COLLATE "C"), '')
  FROM (SELECT coalesce(tenant, '-') AS t, count(*) AS c
		  FROM pgqueue.queue_pop(q, n) GROUP BY 1) s
$$;

-- fairness: 100 000 jobs of A pushed first do not starve 100 jobs of B
SELECT pgqueue.queue_create('f_fair') \g /dev/null
SELECT pgqueue.queue_push_batch('f_fair', array_fill('{}'::jsonb, ARRAY[10000]),
								tenants => array_fill('A'::text, ARRAY[10000]))
  FROM generate_series(1, 10) \g /dev/null
SELECT is(pgqueue.queue_push_batch('f_fair', array_fill('{"b": true}'::jsonb, ARRAY[100]),
								   tenants => array_fill('B'::text, ARRAY[100]))
		  = ARRAY(SELECT generate_series(100001, 100100)::bigint), true,
		  'push 100 000 jobs of tenant A, then 100 jobs of tenant B');
CREATE TEMP TABLE fair_pops (pop integer, b bigint);
INSERT INTO fair_pops SELECT i, pg_temp.pop_count('f_fair', 100, 'B') FROM generate_series(1, 3) i;
SELECT is((SELECT sum(b) FROM fair_pops), 100::numeric,
		  'all 100 jobs of B come out within the first 3 pops of 100');
SELECT is((SELECT b FROM fair_pops WHERE pop = 1), 50::bigint,
		  'the first pop of 100 takes half from each tenant');

-- the same within one block
SELECT pgqueue.queue_create('f_fair1', block_size => 1000000) \g /dev/null
SELECT pgqueue.queue_push_batch('f_fair1', array_fill('{}'::jsonb, ARRAY[10000]),
								tenants => array_fill('A'::text, ARRAY[10000]))
  FROM generate_series(1, 10) \g /dev/null
SELECT pgqueue.queue_push_batch('f_fair1', array_fill('{}'::jsonb, ARRAY[100]),
								tenants => array_fill('B'::text, ARRAY[100])) \g /dev/null
SELECT is(ARRAY(SELECT pg_temp.pop_tenants('f_fair1', 100) FROM generate_series(1, 3)),
		  ARRAY['A:50 B:50', 'A:50 B:50', 'A:100'],
		  'in one block: pops of 100 take 50 from each tenant until B is empty');

-- tenant_weights: A gets 3 jobs per round, B 1
SELECT pgqueue.queue_create('f_weights', tenant_weights => '{"A": 3}') \g /dev/null
SELECT pgqueue.queue_push_batch('f_weights', array_fill('{}'::jsonb, ARRAY[200]),
								tenants => array_fill('A'::text, ARRAY[200])) \g /dev/null
SELECT pgqueue.queue_push_batch('f_weights', array_fill('{}'::jsonb, ARRAY[200]),
								tenants => array_fill('B'::text, ARRAY[200])) \g /dev/null
SELECT is(pg_temp.pop_tenants('f_weights', 100), 'A:75 B:25',
		  'tenant_weights {"A": 3}: a pop of 100 gives 75 to A and 25 to B');
SELECT is(pg_temp.pop_tenants('f_weights', 100), 'A:75 B:25',
		  'and so does the next pop');

-- round robin: pops of one job take turns
SELECT pgqueue.queue_create('f_rr') \g /dev/null
SELECT pgqueue.queue_push_batch('f_rr', array_fill('{}'::jsonb, ARRAY[20]),
								tenants => array_fill('A'::text, ARRAY[20])) \g /dev/null
SELECT pgqueue.queue_push_batch('f_rr', array_fill('{}'::jsonb, ARRAY[20]),
								tenants => array_fill('B'::text, ARRAY[20])) \g /dev/null
CREATE TEMP TABLE rr (i integer, tenant text);
INSERT INTO rr SELECT i, pg_temp.pop_tenants('f_rr', 1) FROM generate_series(1, 8) i;
SELECT results_eq($$SELECT tenant, count(*) FROM rr GROUP BY 1 ORDER BY 1$$,
				  $$VALUES ('A:1'::text, 4::bigint), ('B:1', 4)$$,
				  '8 pops of one job: 4 of each tenant');
SELECT is((SELECT count(*) FROM (SELECT tenant, lag(tenant) OVER (ORDER BY i) AS prev
								   FROM rr) s WHERE tenant = prev),
		  0::bigint, 'pops of one job alternate between the tenants');

-- jobs without a tenant take part as one more tenant
SELECT pgqueue.queue_create('f_none') \g /dev/null
SELECT pgqueue.queue_push_batch('f_none', array_fill('{}'::jsonb, ARRAY[30])) \g /dev/null
SELECT pgqueue.queue_push_batch('f_none', array_fill('{}'::jsonb, ARRAY[30]),
								tenants => array_fill('A'::text, ARRAY[30])) \g /dev/null
SELECT pgqueue.queue_push_batch('f_none', array_fill('{}'::jsonb, ARRAY[30]),
								tenants => array_fill('B'::text, ARRAY[30])) \g /dev/null
SELECT is(pg_temp.pop_tenants('f_none', 30), '-:10 A:10 B:10',
		  'jobs without a tenant form a group of their own: 10 of each of three');
SELECT is(pg_temp.pop_tenants('f_none', 70), '-:20 A:20 B:20',
		  'a tenant with fewer jobs than its share gives the rest to the others');

-- many tenants: a pop serves at most 10 of them, the next pop the next ones
SELECT pgqueue.queue_create('f_many') \g /dev/null
SELECT pgqueue.queue_push_batch('f_many', array_fill('{}'::jsonb, ARRAY[4]),
								tenants => array_fill(format('t%s', lpad(g::text, 2, '0')), ARRAY[4]))
  FROM generate_series(1, 25) g \g /dev/null
CREATE TEMP TABLE many_pops (pop integer, tenant text);
INSERT INTO many_pops SELECT 1, tenant FROM pgqueue.queue_pop('f_many', 20);
INSERT INTO many_pops SELECT 2, tenant FROM pgqueue.queue_pop('f_many', 20);
INSERT INTO many_pops SELECT 3, tenant FROM pgqueue.queue_pop('f_many', 20);
SELECT is(ARRAY(SELECT count(*) FROM many_pops WHERE pop = 1 GROUP BY tenant),
		  array_fill(2::bigint, ARRAY[10]),
		  '25 tenants: a pop of 20 gives 2 jobs to each of 10 tenants');
SELECT is((SELECT count(*) FROM many_pops a JOIN many_pops b USING (tenant)
			WHERE a.pop = 1 AND b.pop = 2), 0::bigint,
		  'the next pop serves 10 other tenants');
SELECT is((SELECT count(DISTINCT tenant) FROM many_pops), 25::bigint,
		  'three pops of 20 reach all 25 tenants');

-- max_in_flight: pops stop at the cap; claims of the transaction count at once
SELECT pgqueue.queue_create('f_cap', max_in_flight => 3) \g /dev/null
SELECT pgqueue.queue_push_batch('f_cap', array_fill('{}'::jsonb, ARRAY[10])) \g /dev/null
SELECT is((SELECT count(*) FROM pgqueue.queue_pop('f_cap', 10)), 3::bigint,
		  'max_in_flight 3: a pop of 10 returns 3');
SELECT is_empty($$SELECT * FROM pgqueue.queue_pop('f_cap', 10)$$,
				'at the cap a further pop returns nothing');
SELECT is_empty($$SELECT * FROM pgqueue.queue_pop('f_cap', 1)$$,
				'not even one job');

-- a pop that rolls back frees its slots at once
SELECT pgqueue.queue_create('f_cap_rb', max_in_flight => 3) \g /dev/null
SELECT pgqueue.queue_push_batch('f_cap_rb', array_fill('{}'::jsonb, ARRAY[10])) \g /dev/null
SAVEPOINT before_pop;
SELECT * FROM pgqueue.queue_pop('f_cap_rb', 10) \g /dev/null
ROLLBACK TO SAVEPOINT before_pop;
SELECT results_eq($$SELECT job_id FROM pgqueue.queue_pop('f_cap_rb', 10)$$,
				  $$VALUES (1::bigint), (2), (3)$$,
				  'a rolled back pop frees its slots: the next pop gets 3 again');

-- tenant_max_in_flight: each tenant up to its cap
SELECT pgqueue.queue_create('f_tcap', tenant_max_in_flight => 2) \g /dev/null
SELECT pgqueue.queue_push_batch('f_tcap', array_fill('{}'::jsonb, ARRAY[10]),
								tenants => array_fill('A'::text, ARRAY[10])) \g /dev/null
SELECT pgqueue.queue_push_batch('f_tcap', array_fill('{}'::jsonb, ARRAY[10]),
								tenants => array_fill('B'::text, ARRAY[10])) \g /dev/null
SELECT is(pg_temp.pop_tenants('f_tcap', 10), 'A:2 B:2',
		  'tenant_max_in_flight 2: a pop of 10 returns 2 of each tenant');
SELECT is(pg_temp.pop_tenants('f_tcap', 10), '',
		  'both tenants at their cap: a further pop returns nothing');
SELECT pgqueue.queue_push('f_tcap', '{}', tenant => 'C') \g /dev/null
SELECT is(pg_temp.pop_tenants('f_tcap', 10), 'C:1',
		  'another tenant still gets its jobs');
SELECT pgqueue.queue_create('f_tcap2', tenant_max_in_flight => 2) \g /dev/null
SELECT pgqueue.queue_push_batch('f_tcap2', array_fill('{}'::jsonb, ARRAY[3]),
								tenants => array_fill('A'::text, ARRAY[3])) \g /dev/null
SELECT results_eq($$SELECT job_id FROM pgqueue.queue_pop('f_tcap2', 1)$$, $$VALUES (1::bigint)$$,
				  'tenant_max_in_flight 2: a pop of one job returns A''s first job');
SELECT results_eq($$SELECT job_id FROM pgqueue.queue_pop('f_tcap2', 1)$$, $$VALUES (2::bigint)$$,
				  'A has one slot left: the next pop returns A''s second job');

-- push_rate: the bucket holds one second of tokens
SELECT pgqueue.queue_create('f_rate', push_rate => 10) \g /dev/null
SELECT is(pg_temp.pushes('f_rate', 1), '10 then PQ004',
		  'push_rate 10: 10 pushes pass at once, the 11th is rate limited');
SELECT throws_ok($$SELECT pgqueue.queue_push('f_rate', '{}', priority => 5)$$, 'PQ004',
				 'push to queue "f_rate" is rate limited',
				 'a push to an empty bucket raises PQ004');
SELECT is((SELECT count(*) FROM pgqueue.jobs WHERE queue = 'f_rate'), 10::bigint,
		  'the refused pushes left no job');

-- push_batch takes a token per job, all or none
SELECT pgqueue.queue_create('f_rate_batch', push_rate => 10) \g /dev/null
SELECT throws_ok($$SELECT pgqueue.queue_push_batch('f_rate_batch',
				   array_fill('{}'::jsonb, ARRAY[11]), priorities => array_fill(1, ARRAY[11]))$$,
				 'PQ004', 'push to queue "f_rate_batch" is rate limited',
				 'push_rate 10: a batch of 11 is refused as a whole');
SELECT is(array_length(pgqueue.queue_push_batch('f_rate_batch',
		  array_fill('{}'::jsonb, ARRAY[10]), priorities => array_fill(1, ARRAY[10])), 1), 10,
		  'the refused batch took no tokens: a batch of 10 passes');
SELECT is((SELECT count(*) FROM pgqueue.jobs WHERE queue = 'f_rate_batch'), 10::bigint,
		  'only the batch of 10 was pushed');

-- priority shedding: p <= 0 must leave 20 % x (1 - p) of the bucket (at most 90 %)
SELECT pgqueue.queue_create('f_shed', push_rate => 10) \g /dev/null
SELECT is(pg_temp.pushes('f_shed', 0), '8 then PQ004',
		  'priority 0 is refused while 20 % of the bucket remains');
SELECT is(pg_temp.pushes('f_shed', 1), '2 then PQ004',
		  'priority 1 may use the rest of the bucket');
SELECT pgqueue.queue_create('f_shed_neg', push_rate => 10) \g /dev/null
SELECT is(pg_temp.pushes('f_shed_neg', -1), '6 then PQ004',
		  'priority -1 is refused while 40 % of the bucket remains');
SELECT is(pg_temp.pushes('f_shed_neg', 0), '2 then PQ004',
		  'then priority 0 takes the bucket down to 20 %');
SELECT is(pg_temp.pushes('f_shed_neg', 1), '2 then PQ004',
		  'then priority 1 empties it');
SELECT pgqueue.queue_create('f_shed_low', push_rate => 10) \g /dev/null
SELECT is(pg_temp.pushes('f_shed_low', -1000), '1 then PQ004',
		  'a very low priority must leave 90 % of the bucket');
SELECT is(pg_temp.pushes('f_shed_low', -4), '0 then PQ004',
		  'priority -4 must leave 90 % too: refused at 90 %');
SELECT is(pg_temp.pushes('f_shed_low', -2), '3 then PQ004',
		  'priority -2 must leave 60 %');
SELECT pgqueue.queue_create('f_shed_batch', push_rate => 10) \g /dev/null
SELECT throws_ok($$SELECT pgqueue.queue_push_batch('f_shed_batch',
				   array_fill('{}'::jsonb, ARRAY[9]), priorities => ARRAY[1, 1, 1, 1, 1, 1, 1, 1, 0])$$,
				 'PQ004', 'push to queue "f_shed_batch" is rate limited',
				 'a batch is shed by its lowest priority');

-- tenant_push_rate: one tenant limited, the others still push
SELECT pgqueue.queue_create('f_trate', tenant_push_rate => 5) \g /dev/null
SELECT is(pg_temp.pushes('f_trate', 1, 'A'), '5 then PQ004',
		  'tenant_push_rate 5: tenant A pushes 5, then is rate limited');
SELECT throws_ok($$SELECT pgqueue.queue_push('f_trate', '{}', priority => 1, tenant => 'A')$$,
				 'PQ004', 'push to tenant "A" of queue "f_trate" is rate limited',
				 'the error names the tenant');
SELECT is(pg_temp.pushes('f_trate', 1, 'B'), '5 then PQ004',
		  'tenant B still pushes its 5');
SELECT is(pg_temp.pushes('f_trate', 1, NULL, 20), '20 then none',
		  'jobs without a tenant are not limited by tenant_push_rate');
SELECT is(pg_temp.pushes('f_trate', 0, 'C'), '4 then PQ004',
		  'tenant buckets shed priority 0 too');

-- a push refused by its tenant's bucket gives the queue's tokens back
SELECT pgqueue.queue_create('f_trate_q', push_rate => 4, tenant_push_rate => 2) \g /dev/null
SELECT is(pg_temp.pushes('f_trate_q', 1, 'A'), '2 then PQ004',
		  'push_rate 4, tenant_push_rate 2: tenant A pushes 2');
SELECT is(pg_temp.pushes('f_trate_q', 1, 'B'), '2 then PQ004',
		  'tenant B pushes 2: A''s refused push took no token of the queue');
SELECT throws_ok($$SELECT pgqueue.queue_push('f_trate_q', '{}', priority => 1, tenant => 'C')$$,
				 'PQ004', 'push to queue "f_trate_q" is rate limited',
				 'then the queue''s bucket is empty');

-- pop_rate: a pop returns what the bucket holds
SELECT pgqueue.queue_create('f_poprate', pop_rate => 5) \g /dev/null
SELECT pgqueue.queue_push_batch('f_poprate', array_fill('{}'::jsonb, ARRAY[100])) \g /dev/null
SELECT is((SELECT count(*) FROM pgqueue.queue_pop('f_poprate', 100)), 5::bigint,
		  'pop_rate 5: a pop of 100 returns 5');
SELECT is_empty($$SELECT * FROM pgqueue.queue_pop('f_poprate', 100)$$,
				'an immediate second pop returns nothing');
SELECT pgqueue.queue_create('f_poprate2', pop_rate => 5) \g /dev/null
SELECT pgqueue.queue_push_batch('f_poprate2', array_fill('{}'::jsonb, ARRAY[2])) \g /dev/null
SELECT is((SELECT count(*) FROM pgqueue.queue_pop('f_poprate2', 100)), 2::bigint,
		  'pop_rate 5 with 2 jobs: a pop returns 2');
SELECT pgqueue.queue_push_batch('f_poprate2', array_fill('{}'::jsonb, ARRAY[10])) \g /dev/null
SELECT is((SELECT count(*) FROM pgqueue.queue_pop('f_poprate2', 100)), 3::bigint,
		  'tokens of claims not made are given back: the next pop returns 3');

-- tenant_pop_rate: each tenant up to its bucket
SELECT pgqueue.queue_create('f_tpoprate', tenant_pop_rate => 2) \g /dev/null
SELECT pgqueue.queue_push_batch('f_tpoprate', array_fill('{}'::jsonb, ARRAY[10]),
								tenants => array_fill('A'::text, ARRAY[10])) \g /dev/null
SELECT pgqueue.queue_push_batch('f_tpoprate', array_fill('{}'::jsonb, ARRAY[10]),
								tenants => array_fill('B'::text, ARRAY[10])) \g /dev/null
SELECT is(pg_temp.pop_tenants('f_tpoprate', 100), 'A:2 B:2',
		  'tenant_pop_rate 2: a pop of 100 returns 2 of each tenant');

-- max_depth: pushes beyond it fail as a whole and leave nothing behind
SELECT pgqueue.queue_create('f_depth', max_depth => 5) \g /dev/null
SELECT is(pg_temp.pushes('f_depth', 0), '5 then PQ005',
		  'max_depth 5: 5 pushes pass, the 6th fails with PQ005');
SELECT throws_ok($$SELECT pgqueue.queue_push('f_depth', '{}')$$, 'PQ005',
				 'queue "f_depth" is full', 'the error says the queue is full');
SELECT is((SELECT count(*) FROM pgqueue.jobs WHERE queue = 'f_depth'), 5::bigint,
		  'the depth stays 5');
SELECT is((SELECT count(*) FROM pgqueue.queue_pop('f_depth', 5)), 5::bigint,
		  'pop the 5 jobs');
SELECT throws_ok($$SELECT pgqueue.queue_push('f_depth', '{}')$$, 'PQ005',
				 'queue "f_depth" is full', 'executing jobs still count');

SELECT pgqueue.queue_create('f_depth_batch', max_depth => 5) \g /dev/null
SELECT pgqueue.queue_push_batch('f_depth_batch', array_fill('{}'::jsonb, ARRAY[4])) \g /dev/null
SELECT throws_ok($$SELECT pgqueue.queue_push_batch('f_depth_batch',
				   array_fill('{}'::jsonb, ARRAY[3]))$$, 'PQ005',
				 'queue "f_depth_batch" is full',
				 'a batch of 3 on a queue at depth 4 of 5 fails');
SELECT is((SELECT count(*) FROM pgqueue.jobs WHERE queue = 'f_depth_batch'), 4::bigint,
		  'the failed batch pushed nothing: the depth stays 4');
SELECT is(pgqueue.queue_push('f_depth_batch', '{}'), 5::bigint,
		  'the failed batch reserved nothing: one more push passes');
SELECT throws_ok($$SELECT pgqueue.queue_push('f_depth_batch', '{}')$$, 'PQ005',
				 'queue "f_depth_batch" is full', 'and the next one fails');

-- tenant_max_depth: per tenant
SELECT pgqueue.queue_create('f_tdepth', tenant_max_depth => 2) \g /dev/null
SELECT is(pg_temp.pushes('f_tdepth', 0, 'A'), '2 then PQ005',
		  'tenant_max_depth 2: tenant A pushes 2, the 3rd fails with PQ005');
SELECT throws_ok($$SELECT pgqueue.queue_push('f_tdepth', '{}', tenant => 'A')$$, 'PQ005',
				 'tenant "A" of queue "f_tdepth" is full', 'the error names the tenant');
SELECT throws_ok($$SELECT pgqueue.queue_push_batch('f_tdepth', array_fill('{}'::jsonb, ARRAY[3]),
				   tenants => ARRAY['C', 'C', 'A'])$$, 'PQ005',
				 'tenant "A" of queue "f_tdepth" is full',
				 'a batch with a job of the full tenant fails as a whole');
SELECT is(pg_temp.pushes('f_tdepth', 0, 'C'), '2 then PQ005',
		  'the failed batch reserved nothing for tenant C: C still pushes 2');
SELECT is(pg_temp.pushes('f_tdepth', 0, 'B'), '2 then PQ005', 'tenant B pushes its 2');
SELECT is(pg_temp.pushes('f_tdepth', 0, NULL, 10), '10 then none',
		  'jobs without a tenant are not limited by tenant_max_depth');
SELECT results_eq($$SELECT tenant, count(*) FROM pgqueue.jobs WHERE queue = 'f_tdepth'
					 GROUP BY 1 ORDER BY 1$$,
				  $$VALUES ('A'::text, 2::bigint), ('B', 2), ('C', 2), (NULL, 10)$$,
				  'each tenant holds 2 jobs');

-- queue_alter sets and clears each limit; pgqueue.queues shows them
SELECT pgqueue.queue_create('f_alter') \g /dev/null
SELECT results_eq(
	$$SELECT max_in_flight, tenant_max_in_flight, max_depth, tenant_max_depth, push_rate,
			 tenant_push_rate, pop_rate, tenant_pop_rate, tenant_weights
		FROM pgqueue.queues WHERE queue = 'f_alter'$$,
	$$VALUES (0, 0, 0::bigint, 0::bigint, 0::float8, 0::float8, 0::float8, 0::float8,
			  '{}'::jsonb)$$,
	'a new queue has no limits');
SELECT lives_ok($$SELECT pgqueue.queue_alter('f_alter', max_in_flight => 1,
				  tenant_max_in_flight => 2, max_depth => 3, tenant_max_depth => 4,
				  push_rate => 5.5, tenant_push_rate => 6, pop_rate => 7, tenant_pop_rate => 8,
				  tenant_weights => '{"x": 2, "y": 1000}')$$,
				'queue_alter sets every limit');
SELECT results_eq(
	$$SELECT max_in_flight, tenant_max_in_flight, max_depth, tenant_max_depth, push_rate,
			 tenant_push_rate, pop_rate, tenant_pop_rate, tenant_weights
		FROM pgqueue.queues WHERE queue = 'f_alter'$$,
	$$VALUES (1, 2, 3::bigint, 4::bigint, 5.5::float8, 6::float8, 7::float8, 8::float8,
			  '{"x": 2, "y": 1000}'::jsonb)$$,
	'pgqueue.queues shows the limits set');
SELECT lives_ok($$SELECT pgqueue.queue_alter('f_alter', max_attempts => 9)$$,
				'queue_alter of another option');
SELECT results_eq(
	$$SELECT max_in_flight, tenant_max_in_flight, max_depth, tenant_max_depth, push_rate,
			 tenant_push_rate, pop_rate, tenant_pop_rate, tenant_weights
		FROM pgqueue.queues WHERE queue = 'f_alter'$$,
	$$VALUES (1, 2, 3::bigint, 4::bigint, 5.5::float8, 6::float8, 7::float8, 8::float8,
			  '{"x": 2, "y": 1000}'::jsonb)$$,
	'options not named in queue_alter keep their values');
SELECT lives_ok($$SELECT pgqueue.queue_alter('f_alter', max_in_flight => 0,
				  tenant_max_in_flight => 0, max_depth => 0, tenant_max_depth => 0,
				  push_rate => 0, tenant_push_rate => 0, pop_rate => 0, tenant_pop_rate => 0,
				  tenant_weights => '{}')$$,
				'queue_alter clears every limit with 0');
SELECT results_eq(
	$$SELECT max_in_flight, tenant_max_in_flight, max_depth, tenant_max_depth, push_rate,
			 tenant_push_rate, pop_rate, tenant_pop_rate, tenant_weights
		FROM pgqueue.queues WHERE queue = 'f_alter'$$,
	$$VALUES (0, 0, 0::bigint, 0::bigint, 0::float8, 0::float8, 0::float8, 0::float8,
			  '{}'::jsonb)$$,
	'pgqueue.queues shows the limits cleared');

-- a limit set or cleared by queue_alter applies from the next call on
SELECT pgqueue.queue_alter('f_alter', max_depth => 2) \g /dev/null
SELECT is(pg_temp.pushes('f_alter', 0), '2 then PQ005',
		  'max_depth set by queue_alter: 2 pushes pass, the 3rd fails');
SELECT pgqueue.queue_alter('f_alter', max_depth => 0) \g /dev/null
SELECT is(pg_temp.pushes('f_alter', 0, NULL, 5), '5 then none',
		  'max_depth cleared by queue_alter: pushes pass again');
SELECT pgqueue.queue_alter('f_alter', push_rate => 1) \g /dev/null
SELECT is(pg_temp.pushes('f_alter', 1), '1 then PQ004',
		  'push_rate 1 set by queue_alter: one push, then PQ004');
SELECT pgqueue.queue_alter('f_alter', push_rate => 0) \g /dev/null
SELECT is(pg_temp.pushes('f_alter', 1, NULL, 5), '5 then none',
		  'push_rate cleared by queue_alter: pushes pass again');
SELECT pgqueue.queue_alter('f_alter', pop_rate => 2) \g /dev/null
SELECT is((SELECT count(*) FROM pgqueue.queue_pop('f_alter', 100)), 2::bigint,
		  'pop_rate 2 set by queue_alter: a pop returns 2');
SELECT pgqueue.queue_alter('f_alter', pop_rate => 0) \g /dev/null
SELECT is((SELECT count(*) FROM pgqueue.queue_pop('f_alter', 100)), 11::bigint,
		  'pop_rate cleared by queue_alter: a pop returns the other 11');
SELECT pgqueue.queue_create('f_alter_cap') \g /dev/null
SELECT pgqueue.queue_push_batch('f_alter_cap', array_fill('{}'::jsonb, ARRAY[10])) \g /dev/null
SELECT pgqueue.queue_alter('f_alter_cap', max_in_flight => 2) \g /dev/null
SELECT is((SELECT count(*) FROM pgqueue.queue_pop('f_alter_cap', 100)), 2::bigint,
		  'max_in_flight 2 set by queue_alter: a pop returns 2');
SELECT pgqueue.queue_alter('f_alter_cap', max_in_flight => 0) \g /dev/null
SELECT is((SELECT count(*) FROM pgqueue.queue_pop('f_alter_cap', 100)), 8::bigint,
		  'max_in_flight cleared by queue_alter: a pop returns the other 8');

-- keys: pgqueue.jobs shows a later job of a busy key as blocked
SELECT pgqueue.queue_create('f_keys') \g /dev/null
SELECT is(pgqueue.queue_push_batch('f_keys', array_fill('{}'::jsonb, ARRAY[5]),
								   keys => ARRAY['k1', 'k1', 'k2', NULL, 'k1']),
		  ARRAY[1, 2, 3, 4, 5]::bigint[], 'push 5 jobs, 3 of key k1, 1 of k2, 1 without key');
SELECT results_eq($$SELECT job_id, state FROM pgqueue.jobs WHERE queue = 'f_keys' ORDER BY job_id$$,
				  $$VALUES (1::bigint, 'available'::text), (2, 'blocked'), (3, 'available'),
						   (4, 'available'), (5, 'blocked')$$,
				  'pgqueue.jobs shows the later jobs of k1 as blocked');
SELECT results_eq($$SELECT available, blocked FROM pgqueue.stats WHERE queue = 'f_keys'$$,
				  $$VALUES (3::bigint, 2::bigint)$$,
				  'pgqueue.stats counts 3 available and 2 blocked');
SELECT results_eq($$SELECT job_id FROM pgqueue.queue_pop('f_keys', 10) ORDER BY job_id$$,
				  $$VALUES (1::bigint), (3), (4)$$,
				  'a pop returns the first job of each key and the job without key');
SELECT results_eq($$SELECT job_id, state FROM pgqueue.jobs WHERE queue = 'f_keys' ORDER BY job_id$$,
				  $$VALUES (1::bigint, 'executing'::text), (2, 'blocked'), (3, 'executing'),
						   (4, 'executing'), (5, 'blocked')$$,
				  'jobs 2 and 5 stay blocked while job 1 is executing');
SELECT is((SELECT blocked FROM pgqueue.queues WHERE queue = 'f_keys'), 2::bigint,
		  'pgqueue.queues shows 2 blocked');
SELECT is_empty($$SELECT * FROM pgqueue.queue_pop('f_keys', 10)$$,
				'a further pop returns nothing while job 1 is executing');

SELECT * FROM finish();
ROLLBACK;
