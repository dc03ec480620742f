--
-- 04_repair: fixing jobs from psql
--
--   queue_retry (one job, and bulk by state / error text / time window)
--   queue_abort (one job with a reason, and bulk)
--
\set SHOW_CONTEXT never
SELECT pgqueue.queue_create('repair', max_attempts => 2, backoff_base => '1 hour',
							backoff_jitter => 0);
SELECT pgqueue.queue_push_batch('repair',
	ARRAY['{"j": 1}', '{"j": 2}', '{"j": 3}', '{"j": 4}', '{"j": 5}',
		  '{"j": 6}', '{"j": 7}', '{"j": 8}']::jsonb[]);
SELECT pgqueue.queue_push('repair', '{"j": 9}', run_at => now() + interval '1 day');
SELECT job_id FROM pgqueue.queue_pop('repair', 6);
SELECT pgqueue.queue_fail('repair', 1, 'connection refused');
SELECT pgqueue.queue_fail('repair', 2, 'Connection REFUSED by peer');
SELECT pgqueue.queue_fail('repair', 3, 'bad payload');
SELECT pgqueue.queue_fail('repair', 4, 'bad payload', retry_in => '0');
SELECT job_id, attempt FROM pgqueue.queue_pop('repair');
SELECT pgqueue.queue_fail('repair', 4, 'bad payload, again');
SELECT pgqueue.queue_ack('repair', 6);
-- 1-3 failed, 4 aborted, 5 executing, 6 succeeded, 7-8 available, 9 scheduled
SELECT job_id, state, attempt, failures, last_error
  FROM pgqueue.jobs WHERE queue = 'repair' ORDER BY job_id;

--
-- queue_retry(queue, job_id): make a failed, aborted or scheduled job
-- available now, with its failure count reset.  Returns false if the job
-- is already available.
--
SELECT pgqueue.queue_retry('repair', 1);
SELECT job_id, state, attempt, failures, last_error, run_at <= now() AS due
  FROM pgqueue.jobs WHERE queue = 'repair' AND job_id = 1;
SELECT pgqueue.queue_retry('repair', 1);
SELECT pgqueue.queue_retry('repair', 7);
-- jobs that are executing or succeeded cannot be retried
SELECT pgqueue.queue_retry('repair', 5);
\echo :LAST_ERROR_SQLSTATE
SELECT pgqueue.queue_retry('repair', 6);
SELECT pgqueue.queue_retry('repair', 999);
\echo :LAST_ERROR_SQLSTATE
SELECT pgqueue.queue_retry('repair', NULL::bigint);
SELECT pgqueue.queue_retry('nosuch', 1);
-- a scheduled job can be made due now
SELECT pgqueue.queue_retry('repair', 9);
SELECT job_id, state, run_at <= now() AS due FROM pgqueue.jobs WHERE queue = 'repair' AND job_id = 9;
-- the retried job is claimed again as its next attempt
SELECT job_id, attempt FROM pgqueue.queue_pop('repair');
SELECT pgqueue.queue_ack('repair', 1);

--
-- queue_retry(queue, state, error_like, since, until): bulk retry of the
-- jobs in one state whose last error matches (ILIKE) and whose last change
-- is in [since, until).  Returns how many.
--
-- the time window excludes everything ...
SELECT pgqueue.queue_retry('repair', 'failed', since => now() + interval '1 minute');
SELECT pgqueue.queue_retry('repair', 'failed', until => now() - interval '1 minute');
-- ... or matches
SELECT pgqueue.queue_retry('repair', 'failed', error_like => '%refused%',
						   since => now() - interval '1 minute', until => now() + interval '1 minute');
SELECT job_id, state, failures, last_error FROM pgqueue.jobs WHERE queue = 'repair' AND job_id IN (2, 3)
 ORDER BY job_id;
SELECT pgqueue.queue_retry('repair', 'failed', error_like => '%nothing like this%');
SELECT pgqueue.queue_retry('repair', 'failed');
SELECT pgqueue.queue_retry('repair', 'failed');
SELECT pgqueue.queue_retry('repair', 'executing');
\echo :LAST_ERROR_SQLSTATE
SELECT pgqueue.queue_retry('repair', NULL::text);
SELECT pgqueue.queue_retry('repair', 'failed', since => now(), until => now() - interval '1 second');
SELECT pgqueue.queue_retry('nosuch', 'failed');
SELECT state, count(*) FROM pgqueue.jobs WHERE queue = 'repair' GROUP BY state ORDER BY state;

--
-- Forced retry of aborted (dead letter) jobs, single and bulk.
--
SELECT pgqueue.queue_retry('repair', 4);
SELECT job_id, state, attempt, failures, last_error FROM pgqueue.jobs
 WHERE queue = 'repair' AND job_id = 4;
-- it gets a full set of attempts again
SELECT job_id, attempt FROM pgqueue.queue_pop('repair', 10);
SELECT pgqueue.queue_fail('repair', 4, 'still broken', retry_in => '0');
SELECT job_id, attempt FROM pgqueue.queue_pop('repair');
SELECT pgqueue.queue_fail('repair', 4, 'still broken');

--
-- queue_abort(queue, job_id, reason): move an unfinished job to aborted.
--
SELECT job_id, state FROM pgqueue.jobs WHERE queue = 'repair' AND state <> 'succeeded' ORDER BY job_id;
SELECT pgqueue.queue_abort('repair', 7, 'duplicate of order 6');
SELECT job_id, state, attempt, failures, last_error FROM pgqueue.jobs
 WHERE queue = 'repair' AND job_id = 7;
-- aborting an executing job revokes its lease: the worker's ack is refused
SELECT pgqueue.queue_abort('repair', 5, 'operator: stuck');
SELECT pgqueue.queue_ack('repair', 5);
\echo :LAST_ERROR_SQLSTATE
SELECT pgqueue.queue_fail('repair', 5, 'worker error after abort');
SELECT job_id, state, last_error FROM pgqueue.jobs WHERE queue = 'repair' AND job_id = 5;
-- only unfinished jobs can be aborted
SELECT pgqueue.queue_abort('repair', 6, 'too late');
\echo :LAST_ERROR_SQLSTATE
SELECT pgqueue.queue_abort('repair', 7, 'twice');
SELECT pgqueue.queue_abort('repair', 999, 'no such job');
\echo :LAST_ERROR_SQLSTATE
SELECT pgqueue.queue_abort('repair', 8, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pgqueue.queue_abort('nosuch', 1, 'x');

--
-- queue_abort(queue, state, reason, error_like, since, until): bulk abort.
--
SELECT pgqueue.queue_push_batch('repair', ARRAY['{"j": 10}', '{"j": 11}', '{"j": 12}']::jsonb[]);
SELECT job_id FROM pgqueue.queue_pop('repair', 2);
SELECT pgqueue.queue_fail('repair', 10, 'quota exceeded');
SELECT pgqueue.queue_fail('repair', 11, 'timeout');
SELECT job_id, state, last_error FROM pgqueue.jobs
 WHERE queue = 'repair' AND state IN ('available', 'failed', 'scheduled', 'executing')
 ORDER BY job_id;
SELECT pgqueue.queue_abort('repair', 'failed', 'quota will not come back', error_like => 'quota%');
SELECT pgqueue.queue_abort('repair', 'available', 'cleanup',
						   since => now() - interval '1 minute', until => now() + interval '1 minute');
SELECT pgqueue.queue_abort('repair', 'scheduled', 'nothing scheduled');
SELECT pgqueue.queue_abort('repair', 'succeeded', 'x');
\echo :LAST_ERROR_SQLSTATE
SELECT pgqueue.queue_abort('repair', 'failed', NULL);
SELECT job_id, state, last_error FROM pgqueue.jobs WHERE queue = 'repair' AND job_id >= 8
 ORDER BY job_id;

-- bulk forced retry of every aborted job
SELECT pgqueue.queue_retry('repair', 'aborted', error_like => 'operator%');
SELECT pgqueue.queue_retry('repair', 'aborted');
SELECT state, count(*) FROM pgqueue.jobs WHERE queue = 'repair' GROUP BY state ORDER BY state;

-- the whole story of job 4: failed, aborted, retried by hand, failed,
-- aborted, retried in bulk
SELECT seq, state, attempt, failures, error FROM pgqueue.job_history
 WHERE queue = 'repair' AND job_id = 4 ORDER BY seq;

SELECT pgqueue.queue_drop('repair', force => true);
