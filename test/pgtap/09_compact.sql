/*
 * 09_compact.sql: compaction and archiving as pgqueue.maintain() runs them.
 *
 * Complements test/sql/07_compact.sql (which shows the decisions step by
 * step) with the invariants: no job lost or doubled, ids unchanged, every
 * block and archive table matched by its catalog row, other queues left
 * alone, pop order kept across compaction, archived jobs gone from the
 * hot paths (PQ002), a compacted block marked done and revived like any
 * other, no DDL while pushing into a block made ahead, and the option checks
 * of retention, archive_retention and compact_threshold.
 *
 * Everything runs in one transaction; statuses are stamped with the clock,
 * so retention '0' archives jobs finished a moment earlier in it.
 */
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off

BEGIN;
SELECT plan(54);

-- block tables without a catalog row, catalog rows without both tables,
-- archive tables without a catalog row and the reverse, for every queue
CREATE FUNCTION pg_temp.orphans() RETURNS SETOF text LANGUAGE sql AS $$
	SELECT 'table ' || t.tablename || ' has no block row'
	  FROM pg_tables t
	 WHERE t.schemaname = 'pgqueue_data' AND t.tablename ~ '^[js]_'
	   AND NOT EXISTS (SELECT 1 FROM pgqueue.block b
						WHERE pgqueue_internal._rel(left(t.tablename, 1), b.queue_id, b.block_no)
							  = 'pgqueue_data.' || t.tablename)
	UNION ALL
	SELECT format('block %s/%s lacks a table', b.queue_id, b.block_no)
	  FROM pgqueue.block b
	 WHERE to_regclass(pgqueue_internal._rel('j', b.queue_id, b.block_no)) IS NULL
		OR to_regclass(pgqueue_internal._rel('s', b.queue_id, b.block_no)) IS NULL
	UNION ALL
	SELECT 'table ' || t.tablename || ' has no archive row'
	  FROM pg_tables t
	 WHERE t.schemaname = 'pgqueue_data' AND t.tablename ~ '^a_'
	   AND NOT EXISTS (SELECT 1 FROM pgqueue.archive a
						WHERE pgqueue_internal._archive_rel(a.queue_id, a.day) = 'pgqueue_data.' || t.tablename)
	UNION ALL
	SELECT format('archive %s/%s lacks its table', a.queue_id, a.day)
	  FROM pgqueue.archive a
	 WHERE to_regclass(pgqueue_internal._archive_rel(a.queue_id, a.day)) IS NULL
$$;

-- each job's id and current state: live from pgqueue.jobs, or the state of
-- its latest archived status row if it is only in the archive
CREATE FUNCTION pg_temp.states(queue text) RETURNS TABLE (job_id bigint, state text)
LANGUAGE sql AS $$
	SELECT j.job_id, j.state FROM pgqueue.jobs j WHERE j.queue = $1
	UNION ALL
	(SELECT DISTINCT ON (h.job_id) h.job_id, h.state
	   FROM pgqueue.job_history h
	  WHERE h.queue = $1 AND h.archived
		AND NOT EXISTS (SELECT 1 FROM pgqueue.jobs j WHERE j.queue = $1 AND j.job_id = h.job_id)
	  ORDER BY h.job_id, h.seq DESC)
$$;

-- ack every executing job of a queue with an id in [lo, hi]
CREATE FUNCTION pg_temp.ack(queue text, lo bigint, hi bigint) RETURNS integer
LANGUAGE sql AS $$
	SELECT coalesce(pgqueue.queue_ack($1, array_agg(j.job_id), array_agg(j.attempt)), 0)
	  FROM pgqueue.jobs j
	 WHERE j.queue = $1 AND j.job_id BETWEEN $2 AND $3 AND j.state = 'executing'
$$;

--
-- option checks
--
SELECT throws_ok($$SELECT pgqueue.queue_create('t_bad', compact_threshold => 0)$$, '22023',
				 'invalid option for queue "t_bad"', 'compact_threshold 0 is rejected');
SELECT throws_ok($$SELECT pgqueue.queue_create('t_bad', compact_threshold => 1.01)$$, '22023',
				 'invalid option for queue "t_bad"', 'compact_threshold above 1 is rejected');
SELECT throws_ok($$SELECT pgqueue.queue_create('t_bad', retention => '-1 second')$$, '22023',
				 'invalid option for queue "t_bad"', 'a negative retention is rejected');
SELECT throws_ok($$SELECT pgqueue.queue_create('t_bad', archive_retention => '-1 day')$$, '22023',
				 'invalid option for queue "t_bad"', 'a negative archive_retention is rejected');
SELECT throws_ok($$SELECT pgqueue.queue_create('t_bad', archive => NULL)$$, '22004', NULL,
				 'archive => NULL is rejected');
SELECT is((SELECT count(*) FROM pgqueue.queue WHERE name = 't_bad'), 0::bigint,
		  'the rejected queue_create calls left nothing behind');
SELECT pgqueue.queue_create('t_opt') \g /dev/null
SELECT results_eq($$SELECT retention, archive, archive_retention, compact_threshold
					  FROM pgqueue.queue WHERE name = 't_opt'$$,
				  $$VALUES ('10 minutes'::interval, true, '7 days'::interval, 0.8::float8)$$,
				  'the defaults: retention 10 minutes, archive, 7 days archive retention, 0.8');
SELECT throws_ok($$SELECT pgqueue.queue_alter('t_opt', compact_threshold => 2)$$, '22023',
				 'invalid option for queue "t_opt"', 'queue_alter rejects compact_threshold 2');
SELECT lives_ok($$SELECT pgqueue.queue_alter('t_opt', retention => '0', archive => false,
											 archive_retention => '1 day', compact_threshold => 1)$$,
				'queue_alter sets retention, archive, archive_retention, compact_threshold');
SELECT results_eq($$SELECT retention, archive, archive_retention, compact_threshold
					  FROM pgqueue.queue WHERE name = 't_opt'$$,
				  $$VALUES ('0'::interval, false, '1 day'::interval, 1::float8)$$,
				  'queue_alter changed the four options');

--
-- a queue with 5 blocks of 100, one of them not finished, and priorities
--
SELECT pgqueue.queue_create('t_cmp', block_size => 100, retention => '0', max_attempts => 1) \g /dev/null
SELECT pgqueue.queue_create('t_other', block_size => 100, retention => '0') \g /dev/null
SELECT is(array_length(pgqueue.queue_push_batch('t_cmp',
			  array_agg(jsonb_build_object('n', i) ORDER BY i),
			  priorities => array_agg(i % 3 ORDER BY i)), 1), 500, 'push 500 jobs, priorities 0..2')
  FROM generate_series(1, 500) i;
SELECT is(array_length(pgqueue.queue_push_batch('t_other', array_fill('{}'::jsonb, ARRAY[200])), 1),
		  200, 'push 200 jobs into another queue');
SELECT is((SELECT count(*) FROM pgqueue.queue_pop('t_other', 200)), 200::bigint,
		  'pop them all from the other queue');
SELECT is(pg_temp.ack('t_other', 1, 200), 200, 'and ack them');
-- in t_cmp leave unfinished: 10 jobs of block 0 (ids 91..100), all of block
-- 2 (201..300) and 12 of block 4 (489..500); abort 5 (finished too)
SELECT is((SELECT count(*) FROM pgqueue.queue_pop('t_cmp', 500, lease => '1 hour')), 500::bigint,
		  'pop all 500');
SELECT is(pg_temp.ack('t_cmp', 1, 90) + pg_temp.ack('t_cmp', 101, 200) + pg_temp.ack('t_cmp', 301, 483),
		  373, 'ack 373 of them');
SELECT is(pgqueue.queue_fail('t_cmp', 484, 'poison'), 'aborted', 'fail job 484: aborted');
SELECT lives_ok($$SELECT pgqueue.queue_abort('t_cmp', j, 'operator')
					FROM generate_series(485, 488) j$$, 'abort jobs 485..488');
-- release jobs 91..100 so that pop can take them again after compaction
SELECT lives_ok($$SELECT pgqueue.queue_release('t_cmp', j) FROM generate_series(91, 100) j$$,
				'release jobs 91..100');
CREATE TEMP TABLE before_states AS SELECT * FROM pg_temp.states('t_cmp');
SELECT is((SELECT count(*) FROM before_states), 500::bigint, '500 jobs before compaction');

SELECT is(pgqueue.maintain('t_cmp') -> 'compacted',
		  '["t_cmp: 2 blocks 0..1: 10 jobs moved to block -1, 380 status rows archived", "t_cmp: 2 blocks 3..4: 12 jobs moved to block -2, 376 status rows archived"]'::jsonb,
		  'maintain compacts blocks 0..1 and 3..4, block 2 between them splits the runs');
SELECT results_eq($$SELECT block_no, first_id, last_id, state, jobs, unfinished FROM pgqueue.blocks
					 WHERE queue = 't_cmp' ORDER BY first_id$$,
				  $$VALUES (-1, 1::bigint, 200::bigint, 'closed', 10::bigint, 10::bigint),
						   (2, 201, 300, 'closed', 100, 100),
						   (-2, 301, 500, 'closed', 12, 12),
						   (5, 501, 600, 'open', 0, 0)$$,
				  'two compacted blocks replace four; block 2 and the open block 5 are untouched');
SELECT set_eq($$SELECT job_id, state FROM pg_temp.states('t_cmp')$$,
			  $$SELECT job_id, state FROM before_states$$,
			  'every job is still there once, live or archived, with the same state');
SELECT is((SELECT count(*) FROM pg_temp.states('t_cmp')), 500::bigint, 'and none twice');
SELECT is_empty($$SELECT * FROM pg_temp.orphans()$$,
				'every block table has its block row and every archive table its archive row');
SELECT is(pgqueue.maintain('t_cmp') -> 'compacted', '[]'::jsonb,
		  'a second maintain finds nothing more to compact');
SELECT results_eq($$SELECT block_no, state, jobs, unfinished FROM pgqueue.blocks
					 WHERE queue = 't_other' ORDER BY first_id$$,
				  $$VALUES (0, 'open', 100::bigint, 0::bigint), (1, 'open', 100, 0)$$,
				  'maintain of one queue leaves the other queue alone');
SELECT is((SELECT blocks FROM pgqueue.stats WHERE queue = 't_cmp'), 4::bigint,
		  'pgqueue.stats counts the blocks after compaction');
SELECT is(pgqueue_internal._compact_step((SELECT queue_id FROM pgqueue.queue WHERE name = 't_cmp')), NULL,
		  '_compact_step returns NULL when nothing qualifies');

-- archived jobs are gone from the hot paths
SELECT throws_ok($$SELECT pgqueue.queue_ack('t_cmp', 50)$$, 'PQ002',
				 'job 50 does not exist in queue "t_cmp"', 'ack of an archived job: PQ002');
SELECT throws_ok($$SELECT pgqueue.queue_retry('t_cmp', 484)$$, 'PQ002',
				 'job 484 does not exist in queue "t_cmp"', 'retry of an archived aborted job: PQ002');
SELECT results_eq($$SELECT state, count(*) FROM pgqueue.job_history
					 WHERE queue = 't_cmp' AND job_id IN (50, 484) GROUP BY state ORDER BY state$$,
				  $$VALUES ('aborted', 1::bigint), ('executing', 2), ('succeeded', 1)$$,
				  'their history is in job_history, archived');

-- pop order across compacted blocks: priority first, then older blocks
SELECT results_eq($$SELECT job_id, priority, attempt FROM pgqueue.queue_pop('t_cmp', 4, lease => '1 hour')$$,
				  $$VALUES (92::bigint, 2, 2), (95::bigint, 2, 2), (98::bigint, 2, 2), (91::bigint, 1, 2)$$,
				  'pop takes the released jobs in the compacted block by priority, then id');
SELECT is(pgqueue.queue_ack('t_cmp', ARRAY[92, 95, 98, 91]::bigint[]), 4,
		  'and they can be acked');

-- a compacted block is marked done when its jobs are finished, and revived
-- by a retry of one of its jobs (jobs finished within the retention stay)
SELECT pgqueue.queue_alter('t_cmp', retention => '1 hour') \g /dev/null
SELECT is(pg_temp.ack('t_cmp', 489, 500), 12, 'ack the 12 jobs moved to block -2');
SELECT is(pgqueue.queue_abort('t_cmp', 'available', 'operator'), 6::bigint,
		  'abort the 6 released jobs left in block -1');
SELECT is(pgqueue.maintain('t_cmp') - ARRAY['expired_leases', 'closed_blocks', 'created_blocks', 'errors'],
		  '{"done_blocks": 2, "compacted": [], "archives_dropped": 0}'::jsonb,
		  'maintain marks blocks -1 and -2 done and compacts nothing (retention 1 hour)');
SELECT results_eq($$SELECT block_no, state FROM pgqueue.blocks WHERE queue = 't_cmp' ORDER BY first_id$$,
				  $$VALUES (-1, 'done'), (2, 'closed'), (-2, 'done'), (5, 'open')$$,
				  'blocks -1 and -2 are done');
SELECT is(pgqueue.queue_retry('t_cmp', 93), true, 'retry an aborted job in block -1');
SELECT is((SELECT state FROM pgqueue.blocks WHERE queue = 't_cmp' AND block_no = -1), 'closed',
		  'the retry revives block -1');
SELECT results_eq($$SELECT job_id, attempt FROM pgqueue.queue_pop('t_cmp', 1)$$,
				  $$VALUES (93::bigint, 2)$$,
				  'pop finds the retried job in the compacted block');

-- pushes into a block made ahead run no DDL
SELECT pgqueue.queue_create('t_ahead', block_size => 100) \g /dev/null
SELECT is(array_length(pgqueue.queue_push_batch('t_ahead', array_fill('{}'::jsonb, ARRAY[60])), 1),
		  60, 'push 60 jobs into block 0');
SELECT is(pgqueue.maintain('t_ahead') -> 'created_blocks', '1'::jsonb,
		  'maintain creates block 1 ahead');
CREATE TEMP TABLE rels_before AS
	SELECT count(*) AS n FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
	 WHERE s.nspname = 'pgqueue_data';
SELECT is(array_length(pgqueue.queue_push_batch('t_ahead', array_fill('{}'::jsonb, ARRAY[100])), 1),
		  100, 'push 100 more: into blocks 0 and 1');
SELECT is((SELECT count(*) FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
			WHERE s.nspname = 'pgqueue_data'), (SELECT n FROM rels_before),
		  'no table or index was created by those pushes');

-- compaction reads the states of a block's jobs at once (_block_states,
-- _block_claim_rows): the same as the lookups of one job each, for
-- jobs claimed in a range, acked, failed out of it and claimed again,
-- extended (rows from seq 2), passed over for a busy key (a hole: rows from
-- seq 1), never claimed
SELECT pgqueue.queue_create('t_states', block_size => 100) \g /dev/null
SELECT pgqueue.queue_push_batch('t_states', array_fill('{}'::jsonb, ARRAY[40]),
		(SELECT array_agg(CASE WHEN i % 4 = 0 THEN 'k' || (i % 8) END ORDER BY i)
		   FROM generate_series(1, 40) i)) \g /dev/null
SELECT count(*) FROM pgqueue.queue_pop('t_states', 12) \g /dev/null
SELECT pgqueue.queue_ack('t_states', ARRAY[1, 2, 3]::bigint[]) \g /dev/null
SELECT pgqueue.queue_fail('t_states', 5, 'no', '0') \g /dev/null
SELECT pgqueue.queue_extend('t_states', 6, '1 hour') \g /dev/null
SELECT count(*) FROM pgqueue.queue_pop('t_states', 10) \g /dev/null
SELECT pgqueue.queue_ack('t_states', ARRAY[7, 9]::bigint[]) \g /dev/null
SELECT is((SELECT count(DISTINCT coalesce(l.state::text, '-')) FROM pgqueue_data.job_store j
			CROSS JOIN LATERAL pgqueue_internal._job_state(j.queue_id, j.job_id, j.priority,
														   j.tenant) l
		   WHERE j.queue_id = (SELECT queue_id FROM pgqueue.queue WHERE name = 't_states')),
		  4::bigint, 't_states has jobs succeeded, executing, available and never claimed');
CREATE TEMP TABLE t_states AS
	SELECT j.queue_id, j.job_id, j.priority, j.tenant FROM pgqueue_data.job_store j
	 WHERE j.queue_id = (SELECT queue_id FROM pgqueue.queue WHERE name = 't_states');
SELECT bag_eq($$SELECT l.job_id, l.state, l.at
				 FROM t_states t, pgqueue_internal._block_states(t.queue_id, 0) l
				WHERE t.job_id = (SELECT min(job_id) FROM t_states)$$,
			  $$SELECT t.job_id, l.state, l.at FROM t_states t
				CROSS JOIN LATERAL pgqueue_internal._job_state(t.queue_id, t.job_id, t.priority,
															   t.tenant) l$$,
			  'the states of all the jobs of a block read at once equal those read one by one');
SELECT bag_eq($$SELECT c.* FROM t_states t, pgqueue_internal._block_claim_rows(t.queue_id, 0) c
				WHERE t.job_id = (SELECT min(job_id) FROM t_states)$$,
			  $$SELECT c.* FROM t_states t
				CROSS JOIN LATERAL pgqueue_internal._job_claim_rows(t.queue_id, t.job_id,
																	t.priority, t.tenant) c$$,
			  'and so do the transitions their claims hold');

-- ANALYZE leaves payload out, in blocks made ahead, by compaction and in archives
SELECT is((SELECT count(*) FILTER (WHERE a.attstattarget = 0) || ' of ' || count(*)
			 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
			 JOIN pg_namespace s ON s.oid = c.relnamespace
			WHERE s.nspname = 'pgqueue_data' AND c.relname ~ '^[ja]_[0-9]+_'
			  AND c.relkind = 'r' AND a.attname = 'payload'),
		  (SELECT count(*) || ' of ' || count(*) FROM (
			 SELECT queue_id FROM pgqueue.block UNION ALL SELECT queue_id FROM pgqueue.archive) x),
		  'no jobs or archive table keeps statistics of payload');

-- queue_purge and queue_drop with compacted blocks and archives
SELECT is(pgqueue.queue_purge('t_cmp'), 122::bigint, 'queue_purge discards the live jobs of all blocks');
SELECT is(pgqueue.queue_push('t_cmp', '{}'), 502::bigint, 'ids are not reused after the purge');
SELECT is_empty($$SELECT * FROM pg_temp.orphans()$$, 'no orphan tables after the purge');
SELECT lives_ok($$SELECT pgqueue.queue_drop('t_cmp', force => true)$$, 'queue_drop of a compacted queue');
SELECT is_empty($$SELECT * FROM pg_temp.orphans()$$, 'no orphan tables after the drop');

SELECT * FROM finish();
ROLLBACK;
