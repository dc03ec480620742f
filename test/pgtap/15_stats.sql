/*
 * 15_stats.sql: pgqueue.stats and pgqueue.blocks count what pgqueue.jobs
 * shows (issue 14, case 10 "monitoring cost", hexpm #1773).
 *
 * The two views read each block's tables in one pass (src/stats.c) instead
 * of looking up every job's state through pgqueue.jobs.  This builds
 * queues with jobs in every state, kept by every kind of record: never
 * claimed (available, blocked behind a key that is executing, failed or
 * waiting, also behind a job of another block), scheduled, executing under
 * a claim record and under a status row (extended), failed for later and
 * failed but due again (available), succeeded through a claim's ack (of
 * some ids and of all its jobs) and through status rows (extended, then
 * acked), released (available by status row), aborted, and jobs that a
 * compaction moved into block -1 with their claims; several priorities and
 * tenants (lanes), and an empty queue.  Then it checks that
 *   - stats equals the aggregate of pgqueue.jobs per queue (the view's old
 *     definition), and oldest_waiting is the age of the earliest run_at of
 *     an available job there;
 *   - blocks equals the count of pgqueue.jobs per block, with the size of
 *     the block's tables;
 *   - every state is there (the comparisons are not empty);
 *   - a block whose tables are gone (as when a compaction committed after
 *     the view's snapshot) is left out, not an error, and stats still
 *     equals pgqueue.jobs.
 *
 * Mutations of the product, each built into a private install, made the
 * test fail as listed:
 *   - stats.c, settle_keys: a key whose unfinished job with the lowest id
 *     is not available (failed, executing) does not block its available
 *     jobs: "stats of sk" and the three "stats equals the aggregates of
 *     pgqueue.jobs" fail (sk: 6 available and 3 blocked, not 4 and 5);
 *   - claim.c, pgq_claim_fate: the search of sorted ids (the bulk read)
 *     ignores an ack of all the jobs of a claim: every check from "stats
 *     of sk" on fails (sk: 3 jobs executing that pgqueue.jobs shows
 *     succeeded; blocks: 16 unfinished, not 13);
 *   - the views before this change (commit c423c17): "blocks leaves out a
 *     block whose tables are gone" fails with 42P01 (relation
 *     "pgqueue_data.j_1_2" does not exist), the checks before it pass.
 * (Whether a key with an executing job blocks an available job with a
 * lower id cannot be tested through the API: such a job cannot be made.)
 *
 * Everything runs in one transaction; no timing but the due times, which
 * are an hour or a day away.
 */
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off

BEGIN;
SELECT plan(11);

-- stats as its old definition computed it from pgqueue.jobs, without the
-- age of the oldest waiting job (a moving clock) and the counters
CREATE FUNCTION pg_temp.expected_stats()
RETURNS TABLE (queue text, available bigint, blocked bigint, scheduled bigint, executing bigint,
			   failed bigint, succeeded bigint, aborted bigint, blocks bigint)
LANGUAGE sql AS $$
	SELECT q.name,
		   count(j.job_id) FILTER (WHERE j.state = 'available'),
		   count(j.job_id) FILTER (WHERE j.state = 'blocked'),
		   count(j.job_id) FILTER (WHERE j.state = 'scheduled'),
		   count(j.job_id) FILTER (WHERE j.state = 'executing'),
		   count(j.job_id) FILTER (WHERE j.state = 'failed'),
		   count(j.job_id) FILTER (WHERE j.state = 'succeeded'),
		   count(j.job_id) FILTER (WHERE j.state = 'aborted'),
		   (SELECT count(*) FROM pgqueue.block b WHERE b.queue_id = q.queue_id)
	  FROM pgqueue.queue q
	  LEFT JOIN pgqueue.jobs j ON j.queue = q.name
	 GROUP BY q.queue_id, q.name
	 ORDER BY q.name
$$;

CREATE FUNCTION pg_temp.actual_stats()
RETURNS TABLE (queue text, available bigint, blocked bigint, scheduled bigint, executing bigint,
			   failed bigint, succeeded bigint, aborted bigint, blocks bigint)
LANGUAGE sql AS $$
	SELECT s.queue, s.available, s.blocked, s.scheduled, s.executing, s.failed, s.succeeded,
		   s.aborted, s.blocks
	  FROM pgqueue.stats s
	 ORDER BY s.queue
$$;

-- oldest_waiting against the earliest run_at of an available job: false
-- for a queue where it is out of the bounds of the clock around the query
CREATE FUNCTION pg_temp.oldest_ok() RETURNS TABLE (queue text, ok boolean)
LANGUAGE plpgsql AS $$
DECLARE
	t0 timestamptz := clock_timestamp();
BEGIN
	CREATE TEMP TABLE oldest_now AS SELECT s.queue, s.oldest_waiting FROM pgqueue.stats s;
	RETURN QUERY
	SELECT q.name,
		   CASE WHEN m.run_at IS NULL THEN o.oldest_waiting IS NULL
				ELSE o.oldest_waiting BETWEEN t0 - m.run_at AND clock_timestamp() - m.run_at END
	  FROM pgqueue.queue q
	  JOIN oldest_now o ON o.queue = q.name
	 CROSS JOIN LATERAL (SELECT min(j.run_at) AS run_at FROM pgqueue.jobs j
						  WHERE j.queue = q.name AND j.state = 'available') m
	 ORDER BY q.name;
	DROP TABLE oldest_now;
END
$$;

-- blocks as counted from pgqueue.jobs, with the size of the block's tables
CREATE FUNCTION pg_temp.expected_blocks()
RETURNS TABLE (queue text, block_no integer, first_id bigint, last_id bigint, state text,
			   jobs bigint, unfinished bigint, bytes bigint)
LANGUAGE sql AS $$
	SELECT q.name, b.block_no, b.first_id, b.last_id, b.state,
		   count(j.job_id),
		   count(j.job_id) FILTER (WHERE j.state NOT IN ('succeeded', 'aborted')),
		   pg_total_relation_size(pgqueue_internal._rel('j', b.queue_id, b.block_no))
			 + pg_total_relation_size(pgqueue_internal._rel('s', b.queue_id, b.block_no))
			 + coalesce(pg_total_relation_size(
				   to_regclass(pgqueue_internal._rel('c', b.queue_id, b.block_no))), 0)
	  FROM pgqueue.block b
	  JOIN pgqueue.queue q ON q.queue_id = b.queue_id
	  LEFT JOIN pgqueue.jobs j ON j.queue = q.name AND j.job_id BETWEEN b.first_id AND b.last_id
	 WHERE to_regclass(pgqueue_internal._rel('j', b.queue_id, b.block_no)) IS NOT NULL
	 GROUP BY q.name, b.queue_id, b.block_no, b.first_id, b.last_id, b.state
	 ORDER BY q.name, b.first_id
$$;

CREATE FUNCTION pg_temp.actual_blocks()
RETURNS TABLE (queue text, block_no integer, first_id bigint, last_id bigint, state text,
			   jobs bigint, unfinished bigint, bytes bigint)
LANGUAGE sql AS $$
	SELECT b.queue, b.block_no, b.first_id, b.last_id, b.state, b.jobs, b.unfinished, b.bytes
	  FROM pgqueue.blocks b
	 ORDER BY b.queue, b.first_id
$$;

-- job ids popped, and what was done with them
CREATE TEMP TABLE popped (queue text, job_id bigint, n serial);

--
-- queue st: blocks of 100; failures retry an hour later, the second is the last
--
SELECT pgqueue.queue_create('st', block_size => 100, retention => '0', max_attempts => 2,
							backoff_base => '1 hour', backoff_cap => '2 hours',
							backoff_jitter => 0) \g /dev/null
-- jobs 1..200: priorities 0 and 1, tenant ta for every fourth, key kc
-- for 195..200
SELECT pgqueue.queue_push_batch('st', array_agg('{}'::jsonb ORDER BY i),
								keys => array_agg(CASE WHEN i >= 195 THEN 'kc' END ORDER BY i),
								priorities => array_agg(i % 2 ORDER BY i),
								tenants => array_agg(CASE WHEN i % 4 = 0 THEN 'ta' END ORDER BY i))
  FROM generate_series(1, 200) i \g /dev/null
-- pop them: 195 of them (kc has one job in flight), and ack 1..190 (whole
-- claims acked, and parts of others)
INSERT INTO popped (queue, job_id) SELECT 'st', p.job_id FROM pgqueue.queue_pop('st', 200, '1 hour') p;
SELECT pgqueue.queue_ack('st', array_agg(i)) FROM generate_series(1, 190) i \g /dev/null
-- jobs 201..350, so that blocks 0 and 1 are closed: priorities 0..2,
-- tenant tb for the even ones
SELECT pgqueue.queue_push_batch('st', array_agg('{}'::jsonb ORDER BY i),
								priorities => array_agg(i % 3 ORDER BY i),
								tenants => array_agg(CASE WHEN i % 2 = 0 THEN 'tb' END ORDER BY i))
  FROM generate_series(201, 350) i \g /dev/null
-- blocks 0..1 are 95 % finished: compaction moves 191..200 to block -1
SELECT pgqueue.maintain('st') \g /dev/null
-- scheduled jobs 351..360, and 361, 362 of key kc (blocked by 195)
SELECT pgqueue.queue_push_batch('st', array_fill('{}'::jsonb, ARRAY[10]),
								run_at => now() + interval '1 day') \g /dev/null
SELECT pgqueue.queue_push_batch('st', array_fill('{}'::jsonb, ARRAY[2]),
								keys => ARRAY['kc', 'kc']) \g /dev/null
-- pop 40 of 201..350 (priorities 2 then 1) and do something to most
TRUNCATE popped RESTART IDENTITY;
INSERT INTO popped (queue, job_id) SELECT 'st', p.job_id FROM pgqueue.queue_pop('st', 40, '1 hour') p;
-- 1..10 acked under their claim; 11..15 failed (retry in an hour);
-- 16..20 extended (status rows), 16 and 17 of them acked then; 21..23
-- released; 24 failed but due again at once; 25..40 left executing
SELECT pgqueue.queue_ack('st', array_agg(job_id)) FROM popped WHERE n BETWEEN 1 AND 10 \g /dev/null
SELECT pgqueue.queue_fail('st', job_id, 'later') FROM popped WHERE n BETWEEN 11 AND 15 \g /dev/null
SELECT pgqueue.queue_extend('st', job_id, '2 hours') FROM popped WHERE n BETWEEN 16 AND 20 \g /dev/null
SELECT pgqueue.queue_ack('st', job_id) FROM popped WHERE n IN (16, 17) \g /dev/null
SELECT pgqueue.queue_release('st', job_id) FROM popped WHERE n BETWEEN 21 AND 23 \g /dev/null
SELECT pgqueue.queue_fail('st', job_id, 'again', retry_in => '0') FROM popped WHERE n = 24 \g /dev/null
-- three jobs never claimed are aborted
SELECT pgqueue.queue_abort('st', j, 'operator') FROM generate_series(348, 350) j \g /dev/null

--
-- queue sk: ordering keys
--
SELECT pgqueue.queue_create('sk', block_size => 100, max_attempts => 2, backoff_base => '1 hour',
							backoff_cap => '2 hours', backoff_jitter => 0) \g /dev/null
-- k1: 1..3, k2: 4..5, k3: 6..7, k4: 8..10, u1..u6: 11..16, one job each
SELECT pgqueue.queue_push_batch('sk', array_fill('{}'::jsonb, ARRAY[16]),
								keys => ARRAY['k1', 'k1', 'k1', 'k2', 'k2', 'k3', 'k3', 'k4', 'k4',
											  'k4', 'u1', 'u2', 'u3', 'u4', 'u5', 'u6'],
								priorities => ARRAY[0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 0, 1, 2, 3, 4, 5],
								tenants => ARRAY[NULL, NULL, NULL, 'ta', 'ta', NULL, NULL, 'tb',
												 'tb', 'tb', NULL, 'ta', NULL, 'tb', NULL, NULL])
  \g /dev/null
-- the first job of each key: 1, 4, 6, 8, 11..16
TRUNCATE popped RESTART IDENTITY;
INSERT INTO popped (queue, job_id) SELECT 'sk', p.job_id FROM pgqueue.queue_pop('sk', 10, '1 hour') p;
-- k1: 1 released (available, 2 and 3 blocked); k2: 4 executing (5
-- blocked); k3: 6 failed (7 blocked); k4: 8 acked (9 available, 10
-- blocked); u1, u2 acked, u3 executing, u4 released, u5 failed but due
-- again, u6 failed for later
SELECT pgqueue.queue_release('sk', 1) \g /dev/null
SELECT pgqueue.queue_fail('sk', 6, 'later') \g /dev/null
SELECT pgqueue.queue_ack('sk', ARRAY[8::bigint, 11, 12]) \g /dev/null
SELECT pgqueue.queue_release('sk', 14) \g /dev/null
SELECT pgqueue.queue_fail('sk', 15, 'again', retry_in => '0') \g /dev/null
SELECT pgqueue.queue_fail('sk', 16, 'later') \g /dev/null

-- queue se: empty
SELECT pgqueue.queue_create('se') \g /dev/null

--
-- the checks
--
SELECT is((SELECT count(*) FROM popped), 10::bigint, 'the first job of each key of sk was popped');
SELECT ok((SELECT bool_and(n > 0) FROM (
			 SELECT sum(available) AS a, sum(blocked) AS b, sum(scheduled) AS s,
					sum(executing) AS e, sum(failed) AS f, sum(succeeded) AS d, sum(aborted) AS x
			   FROM pg_temp.expected_stats()) t, LATERAL (VALUES (a), (b), (s), (e), (f), (d), (x)) v(n)),
		  'pgqueue.jobs shows jobs in every state');
SELECT ok((SELECT jobs = 10 AND unfinished = 10 FROM pgqueue.blocks
			WHERE queue = 'st' AND block_no = -1),
		  'compaction moved the 10 unfinished jobs of blocks 0..1 to block -1');
SELECT results_eq($$SELECT job_id::integer, state FROM pgqueue.jobs WHERE queue = 'sk' ORDER BY job_id$$,
				  $$VALUES (1, 'available'), (2, 'blocked'), (3, 'blocked'), (4, 'executing'),
						   (5, 'blocked'), (6, 'failed'), (7, 'blocked'), (8, 'succeeded'),
						   (9, 'available'), (10, 'blocked'), (11, 'succeeded'),
						   (12, 'succeeded'), (13, 'executing'), (14, 'available'),
						   (15, 'available'), (16, 'failed')$$,
				  'pgqueue.jobs shows the states of the keyed jobs of sk');
SELECT results_eq($$SELECT available, blocked, scheduled, executing, failed, succeeded, aborted
					 FROM pgqueue.stats WHERE queue = 'sk'$$,
				  $$VALUES (4::bigint, 5::bigint, 0::bigint, 2::bigint, 2::bigint, 3::bigint,
							0::bigint)$$,
				  'stats of sk: 4 available, 5 blocked, 2 executing, 2 failed, 3 succeeded');
SELECT results_eq($$SELECT * FROM pg_temp.actual_stats()$$,
				  $$SELECT * FROM pg_temp.expected_stats()$$,
				  'stats equals the aggregates of pgqueue.jobs');
SELECT results_eq($$SELECT * FROM pg_temp.oldest_ok()$$,
				  $$VALUES ('se', true), ('sk', true), ('st', true)$$,
				  'oldest_waiting is the age of the earliest run_at of an available job');
SELECT results_eq($$SELECT * FROM pg_temp.actual_blocks()$$,
				  $$SELECT * FROM pg_temp.expected_blocks()$$,
				  'blocks equals the counts of pgqueue.jobs per block, and the size of its tables');

-- the tables of block 2 of st are gone, the catalog still names them
SAVEPOINT gone;
SELECT format('DROP TABLE %s, %s, %s', pgqueue_internal._rel('j', b.queue_id, b.block_no),
			  pgqueue_internal._rel('s', b.queue_id, b.block_no),
			  pgqueue_internal._rel('c', b.queue_id, b.block_no))
  FROM pgqueue.block b JOIN pgqueue.queue q USING (queue_id)
 WHERE q.name = 'st' AND b.block_no = 2 \gexec
SELECT results_eq($$SELECT * FROM pg_temp.actual_blocks()$$,
				  $$SELECT * FROM pg_temp.expected_blocks()$$,
				  'blocks leaves out a block whose tables are gone');
SELECT results_eq($$SELECT * FROM pg_temp.actual_stats()$$,
				  $$SELECT * FROM pg_temp.expected_stats()$$,
				  'stats equals the aggregates of pgqueue.jobs without that block');
ROLLBACK TO SAVEPOINT gone;

SELECT results_eq($$SELECT * FROM pg_temp.actual_stats()$$,
				  $$SELECT * FROM pg_temp.expected_stats()$$,
				  'stats equals the aggregates of pgqueue.jobs again');

SELECT * FROM finish();
ROLLBACK;
