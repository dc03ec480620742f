--
-- 03_inspect: the inspection views
--
--   pgqueue.jobs, pgqueue.job_history, pgqueue.blocks, pgqueue.stats
--   (pgqueue.queues is stats joined to the definition, see 01_queue)
--
-- Timestamps are shown as booleans or intervals between two of them.
\set SHOW_CONTEXT never
-- blocks of 100 ids, so that 150 jobs span two blocks
SELECT pgqueue.queue_create('inspect', block_size => 100, max_attempts => 2,
							backoff_base => '1 hour', backoff_jitter => 0);
SELECT pgqueue.queue_create('other');

SELECT array_length(pgqueue.queue_push_batch('inspect',
		   array_agg(jsonb_build_object('n', i) ORDER BY i),
		   keys => array_agg('k' || i ORDER BY i),
		   priorities => array_agg(CASE WHEN i = 150 THEN 1 ELSE 0 END ORDER BY i)), 1) AS pushed
  FROM generate_series(1, 150) i;
SELECT pgqueue.queue_push('inspect', '{"n": "later"}', run_at => now() + interval '1 hour') AS later;
SELECT pgqueue.queue_push_batch('other', ARRAY['{"other": 1}', '{"other": 2}']::jsonb[]);

-- Move a few jobs through their states:
--   150 executing (popped first: it has the highest priority)
--     1 executing, then succeeded
--     2 failed (retries in an hour)
--     3 failed once, retried at once, then failed again: aborted
--     4 executing
SELECT job_id, attempt FROM pgqueue.queue_pop('inspect', 5);
SELECT pgqueue.queue_ack('inspect', 1);
SELECT pgqueue.queue_fail('inspect', 2, 'connection refused');
SELECT pgqueue.queue_fail('inspect', 3, 'bad input', retry_in => '0');
SELECT job_id, attempt FROM pgqueue.queue_pop('inspect');
SELECT pgqueue.queue_fail('inspect', 3, 'bad input again');

--
-- pgqueue.jobs: every live job with its current state
--
SELECT job_id, state, key, priority, attempt, failures, last_error, payload
  FROM pgqueue.jobs
 WHERE queue = 'inspect' AND (job_id <= 6 OR job_id >= 149)
 ORDER BY job_id;
-- run_at: when the job is (next) due; lease_until: while executing;
-- updated_at: the last transition, or the push
SELECT job_id, state,
	   CASE WHEN run_at IS NULL THEN '' WHEN run_at > now() THEN 'future' ELSE 'past' END AS run_at,
	   CASE WHEN lease_until IS NULL THEN '' WHEN lease_until > now() THEN 'future' ELSE 'past' END AS lease_until,
	   updated_at > enqueued_at AS changed,
	   enqueued_at <= now() AS enqueued
  FROM pgqueue.jobs
 WHERE queue = 'inspect' AND (job_id <= 6 OR job_id >= 150)
 ORDER BY job_id;
-- job ids are per queue: job 1 exists in both queues, each with its own state
SELECT queue, job_id, state, payload FROM pgqueue.jobs WHERE job_id = 1 ORDER BY queue;
-- a job in the second block is found like any other
SELECT queue, job_id, state, key, payload FROM pgqueue.jobs WHERE queue = 'inspect' AND job_id = 142;
SELECT count(*) FROM pgqueue.jobs WHERE queue = 'inspect' AND job_id = 1000;
SELECT state, count(*) FROM pgqueue.jobs WHERE queue = 'inspect' GROUP BY state ORDER BY state;

--
-- pgqueue.job_history: every status transition, in order (seq)
--
SELECT queue, job_id, seq, state, attempt, failures,
	   lease_until IS NOT NULL AS leased, run_at IS NOT NULL AS has_run_at, error
  FROM pgqueue.job_history
 WHERE queue = 'inspect'
 ORDER BY job_id, seq;
-- transitions are timestamped in order
SELECT job_id, bool_and(at <= now()) AS past,
	   array_agg(seq ORDER BY at, seq) = array_agg(seq ORDER BY seq) AS in_order
  FROM pgqueue.job_history WHERE queue = 'inspect' GROUP BY job_id ORDER BY job_id;
-- the retry time of a failed attempt is its backoff after the failure
SELECT job_id, seq, run_at - at AS backoff
  FROM pgqueue.job_history WHERE queue = 'inspect' AND state = 'failed' ORDER BY job_id, seq;

--
-- pgqueue.blocks: each block with its id range, state, counts and size
--
SELECT queue, block_no, first_id, last_id, state, jobs, unfinished,
	   bytes > 0 AS has_size, created_at <= now() AS created
  FROM pgqueue.blocks WHERE queue IN ('inspect', 'other')
 ORDER BY queue, block_no;

--
-- pgqueue.stats: depth per state, oldest waiting job, number of blocks
--
SELECT queue, available, scheduled, executing, failed, succeeded, aborted,
	   oldest_waiting > interval '0' AS waiting, blocks
  FROM pgqueue.stats WHERE queue IN ('inspect', 'other')
 ORDER BY queue;
-- pgqueue.queues shows the same counts next to the definition
SELECT q.queue, q.available = s.available AND q.scheduled = s.scheduled
		AND q.executing = s.executing AND q.failed = s.failed
		AND q.succeeded = s.succeeded AND q.aborted = s.aborted
		AND q.blocks = s.blocks AS same_counts
  FROM pgqueue.queues q JOIN pgqueue.stats s USING (queue)
 ORDER BY queue;
-- with nothing waiting there is no oldest waiting job
SELECT job_id FROM pgqueue.queue_pop('other', 10);
SELECT queue, available, executing, oldest_waiting FROM pgqueue.stats WHERE queue = 'other';

-- ack and fail work across blocks, all or none: job 149 is not executing,
-- so neither 4 (block 0) nor 150 (block 1) is acked
SELECT pgqueue.queue_ack('inspect', ARRAY[150, 4, 149]::bigint[]);
SELECT job_id, state FROM pgqueue.jobs WHERE queue = 'inspect' AND job_id IN (4, 149, 150)
 ORDER BY job_id;
SELECT pgqueue.queue_ack('inspect', ARRAY[150, 4]::bigint[]);
SELECT job_id, state FROM pgqueue.jobs WHERE queue = 'inspect' AND job_id IN (4, 149, 150)
 ORDER BY job_id;
-- a pop takes the older block first, then goes on into the next one
SELECT count(*), min(job_id), max(job_id) FROM pgqueue.queue_pop('inspect', 100);
SELECT block_no, jobs, unfinished FROM pgqueue.blocks WHERE queue = 'inspect' ORDER BY block_no;

SELECT pgqueue.queue_drop('inspect', force => true);
SELECT pgqueue.queue_drop('other', force => true);
SELECT count(*) FROM pgqueue.jobs;
SELECT count(*) FROM pgqueue.job_history;
SELECT count(*) FROM pgqueue.blocks;
SELECT count(*) FROM pgqueue.stats;
