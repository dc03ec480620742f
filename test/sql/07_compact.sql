--
-- 07_compact: compaction and archiving decisions of pgqueue.maintain()
--
--   the compaction threshold, contiguous runs of closed blocks, the open
--   block left alone, retention, archive => false, moved jobs keeping their
--   ids and state, job_history across live and archived rows, lookups by id
--   in compacted blocks, lease expiry there, pre-creation of the next block
--   and expiry of old archive tables.
--
-- These tests call maintain() by hand; the shared test cluster runs with
-- pgqueue.worker = off, so nothing else maintains these queues meanwhile.
-- Block tables and archive tables are named after queue ids and days, so
-- they are never printed; block numbers are (compaction's blocks are
-- negative).
\set SHOW_CONTEXT never

-- the blocks of a queue, without sizes and times
CREATE FUNCTION pg_temp.blocks(queue text)
RETURNS TABLE (block_no integer, first_id bigint, last_id bigint, state text,
			   jobs bigint, unfinished bigint)
LANGUAGE sql AS $$
	SELECT b.block_no, b.first_id, b.last_id, b.state, b.jobs, b.unfinished
	  FROM pgqueue.blocks b WHERE b.queue = $1 ORDER BY b.first_id
$$;

-- what maintain() did to one queue: the compaction steps it took, and the
-- other counters
CREATE FUNCTION pg_temp.maint(queue text)
RETURNS TABLE (did text)
LANGUAGE sql AS $$
	WITH m AS (SELECT pgqueue.maintain($1) AS r)
	SELECT 'compacted ' || c FROM m, jsonb_array_elements_text(m.r -> 'compacted') c
	UNION ALL
	SELECT (m.r - 'compacted')::text FROM m
$$;

-- live and archived status rows and jobs of a queue
CREATE FUNCTION pg_temp.counts(queue text)
RETURNS TABLE (live_jobs bigint, live_status bigint, archived_status bigint,
			   archived_jobs bigint, archive_tables bigint)
LANGUAGE sql AS $$
	SELECT (SELECT count(*) FROM pgqueue.jobs j WHERE j.queue = $1),
		   (SELECT count(*) FROM pgqueue.job_history h WHERE h.queue = $1 AND NOT h.archived),
		   (SELECT count(*) FROM pgqueue.job_history h WHERE h.queue = $1 AND h.archived),
		   (SELECT count(DISTINCT h.job_id) FROM pgqueue.job_history h
			 WHERE h.queue = $1 AND h.archived),
		   (SELECT count(*) FROM pgqueue.archive a JOIN pgqueue.queue q USING (queue_id)
			 WHERE q.name = $1)
$$;

-- every job id of a queue appears once, live or (finished) in the archive,
-- with no status row twice: returns the problems found
CREATE FUNCTION pg_temp.lost_or_doubled(queue text, pushed bigint)
RETURNS SETOF text
LANGUAGE sql AS $$
	SELECT format('job %s is live %s times', job_id, count(*))
	  FROM pgqueue.jobs WHERE jobs.queue = $1 GROUP BY job_id HAVING count(*) > 1
	UNION ALL
	SELECT format('status %s/%s appears %s times', job_id, seq, count(*))
	  FROM pgqueue.job_history h WHERE h.queue = $1 GROUP BY job_id, seq HAVING count(*) > 1
	UNION ALL
	SELECT format('job %s is lost', g)
	  FROM generate_series(1, $2) g
	 WHERE NOT EXISTS (SELECT 1 FROM pgqueue.jobs j WHERE j.queue = $1 AND j.job_id = g)
	   AND NOT EXISTS (SELECT 1 FROM pgqueue.job_history h
						WHERE h.queue = $1 AND h.job_id = g AND h.archived
						  AND h.state IN ('succeeded', 'aborted'))
	UNION ALL
	SELECT format('archived job %s is neither live nor finished', a.job_id)
	  FROM pgqueue.job_history a
	 WHERE a.queue = $1 AND a.archived
	   AND a.seq = (SELECT max(h.seq) FROM pgqueue.job_history h
					 WHERE h.queue = $1 AND h.job_id = a.job_id)
	   AND a.state NOT IN ('succeeded', 'aborted')
$$;

-- ack every executing job of a queue with an id in [lo, hi]
CREATE FUNCTION pg_temp.ack(queue text, lo bigint, hi bigint)
RETURNS integer
LANGUAGE sql AS $$
	SELECT coalesce(pgqueue.queue_ack($1, array_agg(j.job_id ORDER BY j.job_id),
									  array_agg(j.attempt ORDER BY j.job_id)), 0)
	  FROM pgqueue.jobs j
	 WHERE j.queue = $1 AND j.job_id BETWEEN $2 AND $3 AND j.state = 'executing'
$$;

-- push n jobs
CREATE FUNCTION pg_temp.push(queue text, n integer)
RETURNS integer
LANGUAGE sql AS $$
	SELECT array_length(pgqueue.queue_push_batch($1,
			   array_agg(jsonb_build_object('n', i) ORDER BY i)), 1)
	  FROM generate_series(1, $2) i
$$;

--
-- Threshold: a closed block is compacted when at least compact_threshold
-- (default 0.8) of its jobs finished longer ago than the retention.
-- Retention '0' here: every finished job counts.
--
SELECT pgqueue.queue_create('c_thr', block_size => 100, retention => '0');
SELECT pg_temp.push('c_thr', 300);
SELECT count(*) AS popped FROM pgqueue.queue_pop('c_thr', 300, lease => '1 hour');
-- block 0: 70 of 100 finished; block 1: 90; block 2: none
SELECT pg_temp.ack('c_thr', 1, 70), pg_temp.ack('c_thr', 101, 190);
-- maintain closes the three full blocks, creates block 3 (the sequence is
-- at the end of block 2), and compacts block 1 alone: its 10 unfinished
-- jobs move to block -1 with their latest status, the other 90 jobs' 180
-- status rows are archived
SELECT * FROM pg_temp.maint('c_thr');
SELECT * FROM pg_temp.blocks('c_thr');
-- idempotent
SELECT * FROM pg_temp.maint('c_thr');
-- at exactly the threshold, 80 of 100, block 0 is compacted; block -1 next
-- to it has nothing finished and is not part of the run
SELECT pg_temp.ack('c_thr', 71, 80);
SELECT * FROM pg_temp.maint('c_thr');
SELECT * FROM pg_temp.blocks('c_thr');
-- the moved jobs are still executing, with their attempt; their acks work
SELECT state, attempt, count(*) FROM pgqueue.jobs
 WHERE queue = 'c_thr' AND job_id <= 200 GROUP BY state, attempt;
SELECT pg_temp.ack('c_thr', 1, 200);
-- now the two compacted blocks are all finished and adjacent: one run,
-- nothing to keep, so no new block
SELECT * FROM pg_temp.maint('c_thr');
SELECT * FROM pg_temp.blocks('c_thr');
SELECT * FROM pg_temp.counts('c_thr');
SELECT * FROM pg_temp.lost_or_doubled('c_thr', 300);
-- a higher threshold: 95 % finished is not enough for 1.0, all of it is
SELECT pgqueue.queue_alter('c_thr', compact_threshold => 1.0);
SELECT pg_temp.ack('c_thr', 201, 295);
SELECT * FROM pg_temp.maint('c_thr');
SELECT pg_temp.ack('c_thr', 296, 300);
SELECT * FROM pg_temp.maint('c_thr');
SELECT * FROM pg_temp.blocks('c_thr');
SELECT * FROM pg_temp.lost_or_doubled('c_thr', 300);
SELECT pgqueue.queue_drop('c_thr');

--
-- Runs: only adjacent qualifying blocks are compacted together; a block that
-- does not qualify splits two runs.  A run with nothing to keep is archived
-- and dropped without a new block.  A run has at most 4 blocks.
--
SELECT pgqueue.queue_create('c_run', block_size => 100, retention => '0');
SELECT pg_temp.push('c_run', 400);
SELECT count(*) AS popped FROM pgqueue.queue_pop('c_run', 400, lease => '1 hour');
-- blocks 0, 2 and 3 finished, block 1 not
SELECT pg_temp.ack('c_run', 1, 100), pg_temp.ack('c_run', 201, 400);
SELECT * FROM pg_temp.maint('c_run');
SELECT * FROM pg_temp.blocks('c_run');
SELECT * FROM pg_temp.lost_or_doubled('c_run', 400);
SELECT pg_temp.ack('c_run', 101, 200);
SELECT * FROM pg_temp.maint('c_run');
SELECT * FROM pg_temp.blocks('c_run');
-- 6 full, finished blocks more: compacted 4 at a time (short locks)
SELECT pg_temp.push('c_run', 600);
SELECT count(*) AS popped FROM pgqueue.queue_pop('c_run', 600, lease => '1 hour');
SELECT pg_temp.ack('c_run', 401, 1000);
SELECT * FROM pg_temp.maint('c_run');
SELECT * FROM pg_temp.blocks('c_run');
SELECT * FROM pg_temp.counts('c_run');
SELECT * FROM pg_temp.lost_or_doubled('c_run', 1000);
SELECT pgqueue.queue_drop('c_run');

--
-- The open block is never compacted, even with all its jobs finished, nor
-- is the next block that maintenance created ahead.
--
SELECT pgqueue.queue_create('c_open', block_size => 100, retention => '0');
SELECT pg_temp.push('c_open', 60);
SELECT count(*) AS popped FROM pgqueue.queue_pop('c_open', 60);
SELECT pg_temp.ack('c_open', 1, 60);
SELECT * FROM pg_temp.maint('c_open');
SELECT * FROM pg_temp.maint('c_open');
SELECT * FROM pg_temp.blocks('c_open');
SELECT * FROM pg_temp.counts('c_open');
SELECT pgqueue.queue_drop('c_open');

--
-- Retention: jobs finished less than the retention ago stay live.  With
-- retention '1 hour' a block whose jobs all just finished is not compacted;
-- once retention is '0' it is.
--
SELECT pgqueue.queue_create('c_ret', block_size => 100, retention => '1 hour');
SELECT pg_temp.push('c_ret', 200);
SELECT count(*) AS popped FROM pgqueue.queue_pop('c_ret', 90);
SELECT count(*) AS popped FROM pgqueue.queue_pop('c_ret', 110);
SELECT pg_temp.ack('c_ret', 1, 200);
SELECT * FROM pg_temp.maint('c_ret');
SELECT * FROM pg_temp.blocks('c_ret');
-- Make 90 jobs of block 0 look finished two hours ago (the time of their
-- transitions is what retention looks at: here those of the claim record
-- that took them, the first pop's, and of its ack; and no job of a block
-- can be older than the block)
UPDATE pgqueue_data.claim_store SET at = at - interval '2 hours'
 WHERE queue_id = (SELECT queue_id FROM pgqueue.queue WHERE name = 'c_ret') AND claim_id = 1;
UPDATE pgqueue.block SET created_at = created_at - interval '3 hours'
 WHERE queue_id = (SELECT queue_id FROM pgqueue.queue WHERE name = 'c_ret') AND block_no = 0;
-- block 0 is compacted and its 10 recent ones stay live, succeeded, in
-- block -1
SELECT * FROM pg_temp.maint('c_ret');
SELECT * FROM pg_temp.blocks('c_ret');
SELECT job_id, state, attempt FROM pgqueue.jobs WHERE queue = 'c_ret' AND job_id <= 100 ORDER BY job_id;
-- retention '0': everything finished is archived
SELECT pgqueue.queue_alter('c_ret', retention => '0');
SELECT * FROM pg_temp.maint('c_ret');
SELECT * FROM pg_temp.blocks('c_ret');
SELECT * FROM pg_temp.counts('c_ret');
SELECT * FROM pg_temp.lost_or_doubled('c_ret', 200);
SELECT pgqueue.queue_drop('c_ret');

--
-- archive => false: the finished jobs and their history are discarded;
-- nothing is archived and no archive table is made.  The unfinished jobs
-- move as with archiving.
--
SELECT pgqueue.queue_create('c_disc', block_size => 100, retention => '0', archive => false);
SELECT pg_temp.push('c_disc', 100);
SELECT count(*) AS popped FROM pgqueue.queue_pop('c_disc', 100, lease => '1 hour');
SELECT pg_temp.ack('c_disc', 1, 95);
-- 5 jobs move; the 95 finished jobs' 190 status rows are discarded
SELECT * FROM pg_temp.maint('c_disc');
SELECT * FROM pg_temp.blocks('c_disc');
SELECT * FROM pg_temp.counts('c_disc');
SELECT count(*) AS archive_tables FROM pg_tables
 WHERE schemaname = 'pgqueue_data'
   AND tablename LIKE 'a\_' || (SELECT queue_id FROM pgqueue.queue WHERE name = 'c_disc') || '\_%';
SELECT job_id, state, attempt FROM pgqueue.jobs WHERE queue = 'c_disc' ORDER BY job_id;
SELECT pg_temp.ack('c_disc', 96, 100);
SELECT * FROM pg_temp.maint('c_disc');
SELECT * FROM pg_temp.blocks('c_disc');
SELECT * FROM pg_temp.counts('c_disc');
SELECT pgqueue.queue_drop('c_disc');

--
-- Moved jobs keep their id, state, attempt, failures, last error, key,
-- priority, payload and times; pop, ack, fail, extend, release, retry and
-- lease expiry work on them in their new block.
--
SELECT pgqueue.queue_create('c_move', block_size => 100, retention => '0',
							backoff_jitter => 0, max_attempts => 3);
SELECT array_length(pgqueue.queue_push_batch('c_move',
		   array_agg(jsonb_build_object('n', i) ORDER BY i),
		   keys => array_agg('k' || i ORDER BY i)), 1) AS pushed
  FROM generate_series(1, 195) i;
SELECT array_length(pgqueue.queue_push_batch('c_move',
		   array_agg(jsonb_build_object('later', i) ORDER BY i),
		   run_at => now() + interval '1 day'), 1) AS scheduled
  FROM generate_series(196, 200) i;
SELECT count(*) AS popped FROM pgqueue.queue_pop('c_move', 190, lease => '1 hour');
-- block 1: 101..190 succeeded, 191..195 never claimed, 196..200 scheduled
SELECT pg_temp.ack('c_move', 101, 190);
-- block 0: 1..85 and 96..100 succeeded, and
--   86, 87: failed, retry in an hour      88, 89: released (available)
--   90, 91: executing                     92, 93: aborted (finished)
--   94, 95: failed, due now (available)
SELECT pg_temp.ack('c_move', 1, 85), pg_temp.ack('c_move', 96, 100);
SELECT pgqueue.queue_fail('c_move', 86, 'later', retry_in => '1 hour'),
	   pgqueue.queue_fail('c_move', 87, 'later', retry_in => '1 hour');
SELECT pgqueue.queue_release('c_move', 88), pgqueue.queue_release('c_move', 89);
SELECT pgqueue.queue_abort('c_move', 92, 'no'), pgqueue.queue_abort('c_move', 93, 'no');
SELECT pgqueue.queue_fail('c_move', 94, 'again', retry_in => '0'),
	   pgqueue.queue_fail('c_move', 95, 'again', retry_in => '0');
CREATE TEMP TABLE before_move AS
SELECT job_id, state, key, priority, attempt, failures, last_error, payload,
	   enqueued_at, run_at, lease_until, updated_at
  FROM pgqueue.jobs WHERE queue = 'c_move' AND state NOT IN ('succeeded', 'aborted');
SELECT state, count(*) FROM before_move GROUP BY state ORDER BY state;
SELECT * FROM pg_temp.maint('c_move');
SELECT * FROM pg_temp.blocks('c_move');
-- the jobs view shows the moved jobs exactly as before
SELECT count(*) AS unchanged FROM before_move b
  JOIN pgqueue.jobs j ON j.queue = 'c_move' AND j.job_id = b.job_id
   AND (j.state, j.key, j.priority, j.attempt, j.failures, j.last_error, j.payload,
		j.enqueued_at, j.run_at, j.lease_until, j.updated_at)
	   IS NOT DISTINCT FROM
	   (b.state, b.key, b.priority, b.attempt, b.failures, b.last_error, b.payload,
		b.enqueued_at, b.run_at, b.lease_until, b.updated_at);
SELECT job_id, state, key, attempt, failures, last_error, payload
  FROM pgqueue.jobs WHERE queue = 'c_move' ORDER BY job_id;
-- job_history: the moved latest row is live, the earlier ones archived
SELECT job_id, seq, state, attempt, failures, archived
  FROM pgqueue.job_history WHERE queue = 'c_move' AND job_id IN (1, 88, 94, 191, 196)
 ORDER BY job_id, seq;
SELECT * FROM pg_temp.lost_or_doubled('c_move', 200);
-- pop: due retried and released jobs first, then never-claimed ones, in id
-- order; the scheduled ones are not due
SELECT job_id, attempt, payload FROM pgqueue.queue_pop('c_move', 20, lease => '1 hour');
-- ack, fail, extend on moved jobs
SELECT pg_temp.ack('c_move', 88, 89), pg_temp.ack('c_move', 191, 195);
SELECT pgqueue.queue_ack('c_move', 90, attempt => 1);
SELECT pgqueue.queue_fail('c_move', 94, 'third time', retry_in => '0', attempt => 2);
SELECT pgqueue.queue_extend('c_move', 91, lease => '1 millisecond', attempt => 1) < now() + interval '1 minute' AS extended;
-- retry of a failed job and of a scheduled job in the compacted block
SELECT pgqueue.queue_retry('c_move', 86), pgqueue.queue_retry('c_move', 196);
SELECT pg_sleep(0.01);
-- the lease of 91 ended in block -1: maintain expires it there
SELECT * FROM pg_temp.maint('c_move');
SELECT job_id, state, attempt, failures,
	   regexp_replace(last_error, ' at .*', ' at ...') AS last_error
  FROM pgqueue.jobs WHERE queue = 'c_move' ORDER BY job_id;
SELECT job_id, seq, state, attempt, failures, archived
  FROM pgqueue.job_history WHERE queue = 'c_move' AND job_id IN (91, 94) ORDER BY job_id, seq;
SELECT * FROM pg_temp.lost_or_doubled('c_move', 200);

--
-- A lookup by id reads only the compacted block that holds the job (its
-- CHECK constraint covers the whole range it replaced).
--
CREATE FUNCTION pg_temp.scanned(query text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
	line text;
	qid integer := (SELECT queue_id FROM pgqueue.queue WHERE name = 'c_move');
BEGIN
	FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || query LOOP
		IF line ~ 'Scan.* on ' AND line !~ 'Bitmap Index Scan' THEN
			RETURN NEXT regexp_replace(substring(line from ' on (\S+)'), '_' || qid || '_', '_Q_');
		END IF;
	END LOOP;
END
$$;
SELECT relation FROM pg_temp.scanned($$SELECT * FROM pgqueue.jobs WHERE queue = 'c_move' AND job_id = 150$$) relation
 ORDER BY relation COLLATE "C";
SELECT job_id, state, attempt FROM pgqueue.jobs WHERE queue = 'c_move' AND job_id IN (95, 150, 197);
-- (150 finished before the compaction: it is archived, not in the jobs view)
-- finish everything: the compacted block is compacted again, into nothing
SELECT pgqueue.queue_retry('c_move', state => 'failed'), pgqueue.queue_retry('c_move', state => 'scheduled');
SELECT count(*) AS popped FROM pgqueue.queue_pop('c_move', 50, lease => '1 hour');
SELECT pg_temp.ack('c_move', 1, 200);
SELECT * FROM pg_temp.maint('c_move');
SELECT * FROM pg_temp.blocks('c_move');
SELECT * FROM pg_temp.counts('c_move');
SELECT * FROM pg_temp.lost_or_doubled('c_move', 200);
SELECT state, count(*) FROM pgqueue.job_history
 WHERE queue = 'c_move' AND seq = (SELECT max(seq) FROM pgqueue.job_history h
								   WHERE h.queue = 'c_move' AND h.job_id = job_history.job_id)
 GROUP BY state ORDER BY state;
SELECT pgqueue.queue_drop('c_move');

--
-- Pre-creation: maintain creates the next block once the open one is half
-- used, so that pushes do not run DDL; created_blocks counts it.
--
SELECT pgqueue.queue_create('c_pre', block_size => 100);
SELECT pg_temp.push('c_pre', 49);
SELECT * FROM pg_temp.maint('c_pre');
SELECT pg_temp.push('c_pre', 1);
SELECT * FROM pg_temp.maint('c_pre');
SELECT * FROM pg_temp.maint('c_pre');
SELECT * FROM pg_temp.blocks('c_pre');
-- the next pushes land in the block made ahead; at half of it, the next one
SELECT pg_temp.push('c_pre', 100);
SELECT * FROM pg_temp.maint('c_pre');
SELECT * FROM pg_temp.blocks('c_pre');
SELECT pgqueue.queue_drop('c_pre', force => true);

--
-- Archive expiry: archive tables are per queue and day of archiving and
-- are dropped whole once older than archive_retention.  The test moves
-- today's archive two days back (renaming the table and its catalog row)
-- to stand for an archive made two days ago.
--
SELECT pgqueue.queue_create('c_exp', block_size => 100, retention => '0',
							archive_retention => '1 day');
SELECT pg_temp.push('c_exp', 101);
SELECT count(*) AS popped FROM pgqueue.queue_pop('c_exp', 101);
SELECT pg_temp.ack('c_exp', 1, 101);
SELECT * FROM pg_temp.maint('c_exp');
SELECT * FROM pg_temp.counts('c_exp');
CREATE FUNCTION pg_temp.age_archive(queue text, days integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	a record;
BEGIN
	FOR a IN SELECT ar.* FROM pgqueue.archive ar JOIN pgqueue.queue q USING (queue_id)
			  WHERE q.name = queue LOOP
		EXECUTE format('ALTER TABLE %s RENAME TO %I', pgqueue_internal._archive_rel(a.queue_id, a.day),
					   'a_' || a.queue_id || '_' || to_char(a.day - days, 'YYYYMMDD'));
		UPDATE pgqueue.archive ar SET day = a.day - days
		 WHERE ar.queue_id = a.queue_id AND ar.day = a.day;
	END LOOP;
END
$$;
-- one day old: kept with archive_retention '1 day'
SELECT pg_temp.age_archive('c_exp', 1);
SELECT * FROM pg_temp.maint('c_exp');
SELECT * FROM pg_temp.counts('c_exp');
-- two days old: dropped, with its rows
SELECT pg_temp.age_archive('c_exp', 1);
SELECT * FROM pg_temp.maint('c_exp');
SELECT * FROM pg_temp.counts('c_exp');
SELECT count(*) AS archive_tables FROM pg_tables
 WHERE schemaname = 'pgqueue_data'
   AND tablename LIKE 'a\_' || (SELECT queue_id FROM pgqueue.queue WHERE name = 'c_exp') || '\_%';
-- archive_retention '0' keeps today's archive only
SELECT pg_temp.push('c_exp', 100);
SELECT count(*) AS popped FROM pgqueue.queue_pop('c_exp', 100);
SELECT pg_temp.ack('c_exp', 102, 201);
SELECT pgqueue.queue_alter('c_exp', archive_retention => '0');
SELECT * FROM pg_temp.maint('c_exp');
SELECT * FROM pg_temp.counts('c_exp');
SELECT pg_temp.age_archive('c_exp', 1);
SELECT * FROM pg_temp.maint('c_exp');
SELECT * FROM pg_temp.counts('c_exp');
-- queue_drop drops the queue's archive tables too
SELECT pg_temp.push('c_exp', 100);
SELECT count(*) AS popped FROM pgqueue.queue_pop('c_exp', 100);
SELECT pg_temp.ack('c_exp', 202, 301);
SELECT * FROM pg_temp.maint('c_exp');
SELECT * FROM pg_temp.counts('c_exp');
CREATE TEMP TABLE c_exp_id AS SELECT queue_id FROM pgqueue.queue WHERE name = 'c_exp';
SELECT pgqueue.queue_drop('c_exp');
SELECT count(*) AS tables_left FROM pg_tables
 WHERE schemaname = 'pgqueue_data' AND tablename ~ ('^[jsa]_' || (SELECT queue_id FROM c_exp_id) || '_');
SELECT count(*) AS archive_rows_left FROM pgqueue.archive WHERE queue_id = (SELECT queue_id FROM c_exp_id);
-- compaction needs a new snapshot per statement: not under REPEATABLE READ
SELECT pgqueue.queue_create('c_iso');
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pgqueue.maintain('c_iso');
ROLLBACK;
SELECT pgqueue.queue_drop('c_iso');
