--
-- 02_push_pop: producing and consuming jobs
--
--   queue_push, queue_push_batch, queue_pop, queue_ack (single and array),
--   queue_fail, queue_extend, queue_release
--
-- Timestamps are never printed: leases and retry times are shown relative
-- to now or to the moment of the transition.
\set SHOW_CONTEXT never
SELECT pgqueue.queue_create('work', backoff_jitter => 0);

--
-- queue_push returns the new job's id; ids count up from 1 per queue.
--
SELECT pgqueue.queue_push('work', '{"task": "first"}');
SELECT pgqueue.queue_push('work', '{"task": "keyed"}', key => 'user-7');
SELECT pgqueue.queue_push('work', '{"task": "urgent"}', priority => 10);
SELECT queue, job_id, state, key, priority, attempt, failures, last_error, payload,
	   run_at = enqueued_at AS due_at_push, lease_until, updated_at = enqueued_at AS untouched
  FROM pgqueue.jobs WHERE queue = 'work' ORDER BY job_id;

-- A push is transactional: a rolled back push leaves no job (its id is
-- skipped, never reused).
BEGIN;
SELECT pgqueue.queue_push('work', '{"task": "rolled back"}');
SELECT count(*) FROM pgqueue.jobs WHERE queue = 'work';
ROLLBACK;
SELECT job_id FROM pgqueue.jobs WHERE queue = 'work' ORDER BY job_id;

-- Bad input is rejected.
SELECT pgqueue.queue_push('work', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pgqueue.queue_push(NULL, '{}');
SELECT pgqueue.queue_push('work', '{}', priority => NULL);
SELECT pgqueue.queue_push('nosuch', '{}');
\echo :LAST_ERROR_SQLSTATE
SET pgqueue.max_payload_size = 64;
SELECT pgqueue.queue_push('work', jsonb_build_object('blob', repeat('x', 100)));
\echo :LAST_ERROR_SQLSTATE
SELECT pgqueue.queue_push('work', '{"small": true}') AS small_payload_fits;
RESET pgqueue.max_payload_size;
SELECT count(*) FROM pgqueue.jobs WHERE queue = 'work';

--
-- queue_push_batch: many jobs in one call; ids come back in input order,
-- keys and priorities are optional and parallel to the payloads.
--
SELECT pgqueue.queue_push_batch('work', ARRAY['{"n": 1}', '{"n": 2}', '{"n": 3}']::jsonb[]);
SELECT pgqueue.queue_push_batch('work',
	ARRAY['{"n": 4}', '{"n": 5}']::jsonb[],
	keys => ARRAY['user-1', NULL],
	priorities => ARRAY[3, -3]);
SELECT job_id, key, priority, payload
  FROM pgqueue.jobs WHERE queue = 'work' AND job_id >= 7 ORDER BY job_id;
-- an empty batch adds nothing
SELECT pgqueue.queue_push_batch('work', '{}'::jsonb[]);
SELECT pgqueue.queue_push_batch('nosuch', '{}'::jsonb[]);
SELECT pgqueue.queue_push_batch('work', ARRAY['{}', NULL]::jsonb[]);
\echo :LAST_ERROR_SQLSTATE
SELECT pgqueue.queue_push_batch('work', ARRAY['{}', '{}']::jsonb[], keys => ARRAY['k']);
\echo :LAST_ERROR_SQLSTATE
SELECT pgqueue.queue_push_batch('work', ARRAY['{}', '{}']::jsonb[], priorities => ARRAY[1]);
SELECT pgqueue.queue_push_batch('work', ARRAY['{}', '{}']::jsonb[], priorities => ARRAY[1, NULL]);
SELECT pgqueue.queue_push_batch('work', ARRAY[['{}', '{}'], ['{}', '{}']]::jsonb[]);
SELECT pgqueue.queue_push_batch('work', NULL);
-- a failed batch adds none of its jobs
SELECT count(*) FROM pgqueue.jobs WHERE queue = 'work';

-- start over with a new queue (ids from 1) for the consuming part

--
-- Priorities: higher priority first; FIFO (by job id) within a priority.
--
SELECT pgqueue.queue_drop('work', force => true);
SELECT pgqueue.queue_create('work', backoff_jitter => 0);
SELECT pgqueue.queue_push_batch('work',
	ARRAY['{"p": 0, "i": 1}', '{"p": 5, "i": 1}', '{"p": 0, "i": 2}',
		  '{"p": 5, "i": 2}', '{"p": -1, "i": 1}', '{"p": 0, "i": 3}']::jsonb[],
	priorities => ARRAY[0, 5, 0, 5, -1, 0]);
-- queue_pop claims up to n jobs; each comes back with its lease
SELECT job_id, queue, key, payload, priority, attempt,
	   lease_until BETWEEN now() + interval '29 seconds' AND now() + interval '31 seconds'
		   AS leased_30s
  FROM pgqueue.queue_pop('work', 3);
SELECT job_id, payload, priority FROM pgqueue.queue_pop('work', 10);
-- nothing left to claim
SELECT job_id FROM pgqueue.queue_pop('work');
SELECT state, count(*) FROM pgqueue.jobs WHERE queue = 'work' GROUP BY state;
SELECT pgqueue.queue_purge('work');

-- queue_pop arguments
SELECT pgqueue.queue_push('work', '{"lease": "custom"}');
SELECT job_id, attempt,
	   lease_until BETWEEN now() + interval '299 seconds' AND now() + interval '301 seconds'
		   AS leased_5min
  FROM pgqueue.queue_pop('work', lease => '5 minutes');
SELECT job_id, state, lease_until > now() + interval '299 seconds' AS leased_5min
  FROM pgqueue.jobs WHERE queue = 'work';
SELECT * FROM pgqueue.queue_pop('work', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pgqueue.queue_pop('work', 10001);
SELECT * FROM pgqueue.queue_pop('work', NULL);
SELECT * FROM pgqueue.queue_pop('work', lease => '0');
SELECT * FROM pgqueue.queue_pop('work', lease => '-1 second');
SELECT * FROM pgqueue.queue_pop('work', wait => '-1 second');
SELECT * FROM pgqueue.queue_pop(NULL);
SELECT * FROM pgqueue.queue_pop('nosuch');
-- wait = 0 (the default) returns at once
SELECT * FROM pgqueue.queue_pop('work', wait => '0');

--
-- run_at: a job pushed for later is scheduled and not claimed before it
-- is due; a run_at in the past is due at once.
--
SELECT pgqueue.queue_purge('work');
SELECT pgqueue.queue_push('work', '{"when": "tomorrow"}', run_at => now() + interval '1 day');
SELECT pgqueue.queue_push('work', '{"when": "yesterday"}', run_at => now() - interval '1 day');
SELECT job_id, state, payload, run_at > now() AS in_future
  FROM pgqueue.jobs WHERE queue = 'work' ORDER BY job_id;
SELECT job_id, payload FROM pgqueue.queue_pop('work', 10);
-- once its run_at has passed, a scheduled job is claimed like any other
SELECT pgqueue.queue_push('work', '{"when": "soon"}', run_at => clock_timestamp() + interval '300 milliseconds');
SELECT pg_sleep(0.4);
SELECT job_id, state FROM pgqueue.jobs WHERE queue = 'work' AND job_id = 12;
SELECT job_id, payload, attempt FROM pgqueue.queue_pop('work', 10);
SELECT job_id, state FROM pgqueue.jobs WHERE queue = 'work' ORDER BY job_id;
-- push_batch takes one run_at for the whole batch
SELECT pgqueue.queue_push_batch('work', ARRAY['{"b": 1}', '{"b": 2}']::jsonb[],
								run_at => now() + interval '1 hour');
SELECT job_id, state FROM pgqueue.jobs WHERE queue = 'work' ORDER BY job_id;
SELECT job_id FROM pgqueue.queue_pop('work', 10);

-- a scheduled job cannot be acked
SELECT pgqueue.queue_ack('work', 10);
\echo :LAST_ERROR_SQLSTATE

--
-- queue_ack: finish a job successfully.
--
SELECT pgqueue.queue_drop('work', force => true);
SELECT pgqueue.queue_create('work', max_attempts => 3, backoff_jitter => 0);
SELECT pgqueue.queue_push_batch('work',
	ARRAY['{"j": 1}', '{"j": 2}', '{"j": 3}', '{"j": 4}', '{"j": 5}', '{"j": 6}']::jsonb[]);
SELECT job_id, attempt FROM pgqueue.queue_pop('work', 5);
-- single: by job id, optionally fenced by the attempt that was popped
SELECT pgqueue.queue_ack('work', 1);
SELECT pgqueue.queue_ack('work', 2, attempt => 1);
-- array form: all or none, returns how many
SELECT pgqueue.queue_ack('work', ARRAY[3, 4]::bigint[]);
SELECT job_id, state, attempt, lease_until IS NOT NULL AS leased
  FROM pgqueue.jobs WHERE queue = 'work' ORDER BY job_id;
-- acking again is refused
SELECT pgqueue.queue_ack('work', 1);
\echo :LAST_ERROR_SQLSTATE
-- an ack for another attempt is refused (the attempt is the fencing token)
SELECT pgqueue.queue_ack('work', 5, attempt => 2);
\echo :LAST_ERROR_SQLSTATE
-- a job that was never claimed cannot be acked
SELECT pgqueue.queue_ack('work', 6);
\echo :LAST_ERROR_SQLSTATE
SELECT pgqueue.queue_ack('work', 999);
\echo :LAST_ERROR_SQLSTATE
SELECT pgqueue.queue_ack('work', NULL::bigint);
SELECT pgqueue.queue_ack('nosuch', 1);
-- all or none: one bad id in the array and nothing is acked
SELECT pgqueue.queue_ack('work', ARRAY[5, 6]::bigint[]);
SELECT job_id, state FROM pgqueue.jobs WHERE queue = 'work' AND job_id >= 5 ORDER BY job_id;
SELECT pgqueue.queue_ack('work', ARRAY[5, NULL]::bigint[]);
SELECT pgqueue.queue_ack('work', ARRAY[5]::bigint[], attempts => ARRAY[1, 1]);
SELECT pgqueue.queue_ack('work', ARRAY[5]::bigint[], attempts => ARRAY[2]);
SELECT pgqueue.queue_ack('work', '{}'::bigint[]);
-- duplicates count once
SELECT pgqueue.queue_ack('work', ARRAY[5, 5]::bigint[], attempts => ARRAY[1, 1]);
SELECT state, count(*) FROM pgqueue.jobs WHERE queue = 'work' GROUP BY state ORDER BY state;

--
-- queue_fail: a failed attempt; the job retries with exponential backoff
-- (backoff_base * 2^(failures - 1), at most backoff_cap, here without
-- jitter) until max_attempts failures, then it is aborted.
--
SELECT pgqueue.queue_purge('work');
SELECT pgqueue.queue_alter('work', backoff_base => '100 milliseconds',
						   backoff_cap => '250 milliseconds');
SELECT pgqueue.queue_alter('work', max_attempts => 4);
SELECT pgqueue.queue_push('work', '{"flaky": true}') AS job \gset
SELECT job_id, attempt FROM pgqueue.queue_pop('work');
SELECT pgqueue.queue_fail('work', :job, 'timeout talking to smtp');
SELECT state, attempt, failures, last_error, run_at - updated_at AS backoff, lease_until
  FROM pgqueue.jobs WHERE queue = 'work' AND job_id = :job;
-- claimable again once the backoff has passed
SELECT pg_sleep(0.15);
SELECT job_id, attempt FROM pgqueue.queue_pop('work');
SELECT pgqueue.queue_fail('work', :job, 'timeout again');
SELECT state, attempt, failures, last_error, run_at - updated_at AS backoff
  FROM pgqueue.jobs WHERE queue = 'work' AND job_id = :job;
SELECT pg_sleep(0.25);
SELECT job_id, attempt FROM pgqueue.queue_pop('work');
SELECT pgqueue.queue_fail('work', :job, 'third timeout');
-- 100 ms * 2^2 = 400 ms is capped at 250 ms
SELECT state, attempt, failures, last_error, run_at - updated_at AS backoff
  FROM pgqueue.jobs WHERE queue = 'work' AND job_id = :job;
SELECT pg_sleep(0.3);
SELECT job_id, attempt FROM pgqueue.queue_pop('work');
-- the fourth failure uses up max_attempts: aborted (dead letter)
SELECT pgqueue.queue_fail('work', :job, 'gave up');
SELECT state, attempt, failures, last_error, run_at, lease_until
  FROM pgqueue.jobs WHERE queue = 'work' AND job_id = :job;
SELECT job_id FROM pgqueue.queue_pop('work');
SELECT pgqueue.queue_fail('work', :job, 'again');
\echo :LAST_ERROR_SQLSTATE

-- retry_in overrides the backoff; '0' makes the job available at once
SELECT pgqueue.queue_push('work', '{"retry_in": true}') AS job \gset
SELECT job_id, attempt FROM pgqueue.queue_pop('work');
SELECT pgqueue.queue_fail('work', :job, 'rate limited', retry_in => '1 hour');
SELECT state, failures, run_at - updated_at AS retry_in
  FROM pgqueue.jobs WHERE queue = 'work' AND job_id = :job;
-- a failed job is not claimed before its retry time
SELECT job_id FROM pgqueue.queue_pop('work');
-- queue_retry (see 04_repair) makes it due now
SELECT pgqueue.queue_retry('work', :job);
SELECT job_id, attempt FROM pgqueue.queue_pop('work');
SELECT pgqueue.queue_fail('work', :job, 'try again now', retry_in => '0');
SELECT state, failures, run_at - updated_at AS retry_in
  FROM pgqueue.jobs WHERE queue = 'work' AND job_id = :job;
SELECT job_id, attempt FROM pgqueue.queue_pop('work');
-- with the attempt as fencing token
SELECT pgqueue.queue_fail('work', :job, 'stale worker', attempt => 1);
\echo :LAST_ERROR_SQLSTATE
SELECT pgqueue.queue_fail('work', :job, 'current worker', retry_in => '0', attempt => 3);
SELECT pgqueue.queue_fail('work', :job, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pgqueue.queue_fail('work', :job, 'x', retry_in => '-1 second');
SELECT pgqueue.queue_fail('work', 999, 'x');
-- once the attempt has failed, its lease is gone: a second fail is refused
SELECT pgqueue.queue_fail('work', :job, 'not leased');
\echo :LAST_ERROR_SQLSTATE

--
-- queue_extend: renew a lease from now (heartbeat); returns the new end.
--
SELECT pgqueue.queue_purge('work');
SELECT pgqueue.queue_push('work', '{"long": "running"}') AS job \gset
SELECT job_id, attempt FROM pgqueue.queue_pop('work', lease => '10 seconds');
SELECT pgqueue.queue_extend('work', :job, '10 minutes')
	   BETWEEN now() + interval '599 seconds' AND now() + interval '601 seconds' AS extended_10min;
SELECT state, attempt, lease_until > now() + interval '599 seconds' AS leased_10min
  FROM pgqueue.jobs WHERE queue = 'work' AND job_id = :job;
-- without a lease: the queue's default lease (30 seconds)
SELECT pgqueue.queue_extend('work', :job)
	   BETWEEN now() + interval '29 seconds' AND now() + interval '31 seconds' AS extended_30s;
SELECT pgqueue.queue_extend('work', :job, '1 minute', attempt => 1) > now() AS extended;
SELECT pgqueue.queue_extend('work', :job, '1 minute', attempt => 2);
\echo :LAST_ERROR_SQLSTATE
SELECT pgqueue.queue_extend('work', :job, '0');
SELECT pgqueue.queue_extend('work', :job, '-5 minutes');
-- extending does not count as an attempt
SELECT state, attempt, failures FROM pgqueue.jobs WHERE queue = 'work' AND job_id = :job;
SELECT pgqueue.queue_ack('work', :job);
SELECT pgqueue.queue_extend('work', :job);
\echo :LAST_ERROR_SQLSTATE

--
-- queue_release: hand a job back, available at once, without counting a
-- failure; the next claim is the next attempt.
--
SELECT pgqueue.queue_push('work', '{"released": true}') AS job \gset
SELECT job_id, attempt FROM pgqueue.queue_pop('work');
SELECT pgqueue.queue_release('work', :job);
SELECT state, attempt, failures, lease_until, run_at <= now() AS due
  FROM pgqueue.jobs WHERE queue = 'work' AND job_id = :job;
SELECT pgqueue.queue_release('work', :job);
\echo :LAST_ERROR_SQLSTATE
SELECT pgqueue.queue_ack('work', :job);
\echo :LAST_ERROR_SQLSTATE
SELECT job_id, attempt FROM pgqueue.queue_pop('work');
SELECT pgqueue.queue_release('work', :job, attempt => 1);
SELECT pgqueue.queue_release('work', :job, attempt => 2);
SELECT job_id, attempt FROM pgqueue.queue_pop('work');
SELECT pgqueue.queue_ack('work', :job, attempt => 3);
SELECT state, attempt, failures FROM pgqueue.jobs WHERE queue = 'work' AND job_id = :job;

--
-- Pop, work and ack in one transaction: if it rolls back, the job is
-- available again at once, with no attempt counted.
--
SELECT pgqueue.queue_push('work', '{"tx": true}') AS job \gset
BEGIN;
SELECT job_id, attempt FROM pgqueue.queue_pop('work');
SELECT pgqueue.queue_ack('work', :job);
ROLLBACK;
SELECT state, attempt FROM pgqueue.jobs WHERE queue = 'work' AND job_id = :job;
BEGIN;
SELECT job_id, attempt FROM pgqueue.queue_pop('work');
SELECT pgqueue.queue_ack('work', :job);
COMMIT;
SELECT state, attempt FROM pgqueue.jobs WHERE queue = 'work' AND job_id = :job;

SELECT pgqueue.queue_drop('work', force => true);

--
-- Under REPEATABLE READ a pop claims jobs one status row each, by
-- statement (no claim records): every lane of a block whose lane index
-- holds of the default lane (priority 0, no tenant) only its marks, shared
-- among the tenants and the jobs without one, each job once.
--
SELECT pgqueue.queue_create('lanes');
SELECT cardinality(pgqueue.queue_push_batch('lanes',
		(SELECT array_agg(jsonb_build_object('i', i)) FROM generate_series(1, 12) i),
		tenants => (SELECT array_agg(CASE i % 3 WHEN 0 THEN NULL ELSE 't' || i % 3 END)
					  FROM generate_series(1, 12) i)));
SELECT cardinality(pgqueue.queue_push_batch('lanes',
		(SELECT array_agg(jsonb_build_object('i', i)) FROM generate_series(13, 16) i),
		priorities => ARRAY[3, 3, 0, 0]));
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT job_id, priority, tenant FROM pgqueue.queue_pop('lanes', 6) ORDER BY job_id;
COMMIT;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT job_id, priority, tenant FROM pgqueue.queue_pop('lanes', 20) ORDER BY job_id;
COMMIT;
SELECT state, count(*) FROM pgqueue.jobs WHERE queue = 'lanes' GROUP BY state;
SELECT pgqueue.queue_drop('lanes', force => true);

--
-- A push marks the first job of the default lane that it puts into a
-- block, unless the block's lane index shows the lane already (a mark that
-- another transaction committed): one job a transaction, only the first is
-- marked; a mark that rolled back shows nothing, and the next push marks.
--
SELECT pgqueue.queue_create('marks');
BEGIN;
SELECT pgqueue.queue_push('marks', '{"rolled": "back"}') > 0 AS pushed;
ROLLBACK;
SELECT pgqueue.queue_push('marks', '{"n": 1}') > 0 AS pushed;
SELECT pgqueue.queue_push('marks', '{"n": 2}') > 0 AS pushed;
SELECT pgqueue.queue_push('marks', '{"n": 3}', priority => 1) > 0 AS pushed;
SELECT pgqueue.queue_push_batch('marks', ARRAY['{"n": 4}', '{"n": 5}']::jsonb[]);
SELECT payload, lane_mark FROM pgqueue_data.job_store
 WHERE queue_id = (SELECT queue_id FROM pgqueue.queue WHERE name = 'marks') ORDER BY job_id;
SELECT payload, priority FROM pgqueue.queue_pop('marks', 10);
SELECT pgqueue.queue_drop('marks', force => true);
