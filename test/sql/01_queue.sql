--
-- 01_queue: defining and managing queues
--
--   queue_create, pgqueue.queues, queue_alter, queue_pause, queue_resume,
--   queue_purge, queue_drop
--
-- Errors show their DETAIL and HINT; the SQLSTATE is echoed where it is
-- part of the interface.
\set SHOW_CONTEXT never

-- A queue with the default options, and one with every option given.
SELECT pgqueue.queue_create('emails');
SELECT pgqueue.queue_create('reports',
	block_size => 1000,
	default_lease => '5 minutes',
	max_attempts => 10,
	backoff_base => '10 seconds',
	backoff_cap => '30 minutes',
	backoff_jitter => 0);

-- pgqueue.queues: each queue's definition ...
SELECT queue, paused, block_size, default_lease, max_attempts,
	   backoff_base, backoff_cap, backoff_jitter, created_at <= now() AS created
  FROM pgqueue.queues ORDER BY queue;
-- ... and its live counts; a new queue is empty and has one block
SELECT queue, available, scheduled, executing, failed, succeeded, aborted,
	   oldest_waiting, blocks
  FROM pgqueue.queues ORDER BY queue;
SELECT queue, block_no, first_id, last_id, state, jobs
  FROM pgqueue.blocks ORDER BY queue, block_no;

-- Names: 1 to 63 characters of letters, digits, "_", ".", ":", "-",
-- not starting with punctuation.
SELECT pgqueue.queue_create('tenant-1:billing.v2');
SELECT pgqueue.queue_create('bad name');
\echo :LAST_ERROR_SQLSTATE
SELECT pgqueue.queue_create('');
SELECT pgqueue.queue_create('-leading-dash');
SELECT pgqueue.queue_create(repeat('x', 64));
SELECT pgqueue.queue_create(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pgqueue.queue_create('emails');
\echo :LAST_ERROR_SQLSTATE

-- Options out of range are rejected with the violated rule.
SELECT pgqueue.queue_create('bad', block_size => 50);
\echo :LAST_ERROR_SQLSTATE
SELECT pgqueue.queue_create('bad', default_lease => '0');
SELECT pgqueue.queue_create('bad', max_attempts => 0);
SELECT pgqueue.queue_create('bad', backoff_base => '2 hours');
SELECT pgqueue.queue_create('bad', backoff_jitter => 1.5);
SELECT pgqueue.queue_create('bad', max_attempts => NULL);
-- nothing of the failed attempts is left behind
SELECT queue FROM pgqueue.queues ORDER BY queue;

-- queue_alter changes options; NULL (omitted) leaves an option as it is.
SELECT pgqueue.queue_alter('emails', max_attempts => 3, backoff_jitter => 0.5);
SELECT pgqueue.queue_alter('emails', default_lease => '1 minute');
SELECT pgqueue.queue_alter('emails');
SELECT queue, default_lease, max_attempts, backoff_base, backoff_cap, backoff_jitter
  FROM pgqueue.queues WHERE queue = 'emails';
SELECT pgqueue.queue_alter('emails', max_attempts => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT pgqueue.queue_alter('emails', backoff_cap => '1 millisecond');
SELECT pgqueue.queue_alter('nosuch', max_attempts => 2);
\echo :LAST_ERROR_SQLSTATE
-- the failed alters changed nothing
SELECT queue, default_lease, max_attempts, backoff_base, backoff_cap, backoff_jitter
  FROM pgqueue.queues WHERE queue = 'emails';

-- queue_pause: pop returns nothing while paused; push still works.
SELECT pgqueue.queue_push('emails', '{"to": "a@example.com"}');
SELECT pgqueue.queue_pause('emails');
SELECT queue, paused FROM pgqueue.queues ORDER BY queue;
SELECT job_id FROM pgqueue.queue_pop('emails');
SELECT pgqueue.queue_push('emails', '{"to": "b@example.com"}');
SELECT queue, available, executing FROM pgqueue.queues WHERE queue = 'emails';
-- pausing twice is harmless
SELECT pgqueue.queue_pause('emails');
-- queue_resume: pop claims jobs again
SELECT pgqueue.queue_resume('emails');
SELECT queue, paused FROM pgqueue.queues WHERE queue = 'emails';
SELECT job_id, payload FROM pgqueue.queue_pop('emails', 10);
SELECT pgqueue.queue_pause('nosuch');
SELECT pgqueue.queue_resume('nosuch');

-- queue_purge discards every job whatever its state and returns how many.
SELECT pgqueue.queue_push_batch('emails', ARRAY['{"n": 3}', '{"n": 4}']::jsonb[]);
SELECT pgqueue.queue_push('emails', '{"n": 5}', run_at => now() + interval '1 day');
SELECT state, count(*) FROM pgqueue.jobs WHERE queue = 'emails' GROUP BY state ORDER BY state;
SELECT pgqueue.queue_purge('emails');
SELECT count(*) FROM pgqueue.jobs WHERE queue = 'emails';
SELECT queue, available, scheduled, executing, blocks FROM pgqueue.queues WHERE queue = 'emails';
-- ids are never reused: the next job gets a higher id than any purged one
SELECT pgqueue.queue_push('emails', '{"n": 6}') > 5 AS new_id_is_higher;
SELECT pgqueue.queue_purge('nosuch');

-- queue_drop refuses a queue with unfinished jobs ...
SELECT pgqueue.queue_drop('emails');
\echo :LAST_ERROR_SQLSTATE
-- ... a scheduled job counts as unfinished too ...
SELECT pgqueue.queue_push('reports', '{}', run_at => now() + interval '1 hour');
SELECT pgqueue.queue_drop('reports');
-- ... unless forced
SELECT pgqueue.queue_drop('reports', force => true);
-- a queue whose jobs are all finished is dropped without force
SELECT job_id FROM pgqueue.queue_pop('emails');
SELECT pgqueue.queue_ack('emails', job_id)
  FROM pgqueue.jobs WHERE queue = 'emails' AND state = 'executing';
SELECT pgqueue.queue_drop('emails');
SELECT pgqueue.queue_drop('emails');
\echo :LAST_ERROR_SQLSTATE
SELECT pgqueue.queue_drop('tenant-1:billing.v2', force => NULL);
SELECT pgqueue.queue_drop('tenant-1:billing.v2');

-- nothing is left: no queue, no block, no storage table, no sequence
SELECT count(*) AS queues FROM pgqueue.queues;
SELECT count(*) AS blocks FROM pgqueue.block;
SELECT count(*) AS data_relations FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'pgqueue_data' AND c.relname !~ '^(job|status|claim|archive)_store';

-- a dropped name can be used again
SELECT pgqueue.queue_create('emails');
SELECT queue, max_attempts, available, blocks FROM pgqueue.queues;
SELECT pgqueue.queue_drop('emails');
