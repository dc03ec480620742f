-- demo/report.sql: what happened, as an operator sees it in psql
\echo == pgqueue.stats
SELECT * FROM pgqueue.stats;
\echo == pgqueue.blocks
SELECT queue, block_no, first_id, last_id, state, jobs, unfinished,
	   pg_size_pretty(bytes) AS size
  FROM pgqueue.blocks ORDER BY first_id;
\echo == live and archived history
SELECT archived, count(*) AS status_rows, count(DISTINCT job_id) AS jobs
  FROM pgqueue.job_history WHERE queue = 'emails' GROUP BY archived;
\echo == maintenance workers
SELECT backend_type, datname FROM pg_stat_activity WHERE backend_type LIKE 'pgqueue%';
\echo == jobs per tenant and state (tenants share every pop round-robin)
SELECT tenant, state, count(*) FROM pgqueue.jobs
 WHERE queue = 'emails' GROUP BY 1, 2 ORDER BY 1, 2;
\echo == dead letters by error
SELECT last_error, count(*) FROM pgqueue.jobs
 WHERE queue = 'emails' AND state = 'aborted' GROUP BY 1;
\echo == jobs whose lease expired when their consumer crashed
SELECT count(DISTINCT job_id) AS expired_leases FROM pgqueue.job_history
 WHERE queue = 'emails' AND error LIKE 'lease of attempt % expired%';
\echo == history of one dead letter (live or archived)
SELECT seq, state, attempt, failures, error FROM pgqueue.job_history
 WHERE queue = 'emails'
   AND job_id = (SELECT min(job_id) FROM pgqueue.jobs WHERE queue = 'emails' AND state = 'aborted')
 ORDER BY seq;
\echo == operator: forced retry of every dead letter, then one more drain
SELECT pgqueue.queue_retry('emails', state => 'aborted') AS retried;
\i drain.sql
SELECT available, executing, failed, succeeded, aborted FROM pgqueue.stats WHERE queue = 'emails';
