--
-- 06_reinstall: dropping the extension and creating it again
--
-- Queue ids start over in a new catalog, and a restore (pg_restore of a
-- dump, which carries pgqueue.queue_id_seq) sets them as they were.  State
-- that a backend or the server keeps per queue id must not leak from a
-- dropped queue into a new queue with the same id: the new queue must
-- deliver all of its jobs.
\set SHOW_CONTEXT never
SELECT pgqueue.queue_create('before');
SELECT pgqueue.queue_push_batch('before',
	ARRAY['{"n": 1}', '{"n": 2}', '{"n": 3}', '{"n": 4}', '{"n": 5}']::jsonb[]);
SELECT count(*) AS popped FROM pgqueue.queue_pop('before', 10);
SELECT count(*) AS popped FROM pgqueue.queue_pop('before', 10);
SELECT queue_id AS before_id FROM pgqueue.queue WHERE name = 'before' \gset

-- with queues left, dropping needs CASCADE (their block tables depend on
-- the extension's tables)
SET client_min_messages = warning;
DROP EXTENSION pgqueue CASCADE;
RESET client_min_messages;
-- pgqueue_data is gone; the schema pgqueue is left, empty, as PostgreSQL
-- does for the schema named in an extension's control file
SELECT nspname FROM pg_namespace WHERE nspname IN ('pgqueue', 'pgqueue_data');
SELECT count(*) AS objects_left
  FROM (SELECT oid FROM pg_class WHERE relnamespace = 'pgqueue'::regnamespace
		UNION ALL SELECT oid FROM pg_proc WHERE pronamespace = 'pgqueue'::regnamespace
		UNION ALL SELECT oid FROM pg_type WHERE typnamespace = 'pgqueue'::regnamespace) o;
CREATE EXTENSION pgqueue;
SELECT count(*) AS queues FROM pgqueue.queues;

-- as after restoring an older dump: the new queue gets the id of the
-- dropped one
SELECT setval('pgqueue.queue_id_seq', :before_id, false) = :before_id AS id_reset;
SELECT pgqueue.queue_create('again');
SELECT queue_id = :before_id AS same_id FROM pgqueue.queue WHERE name = 'again';
SELECT pgqueue.queue_push_batch('again', ARRAY['{"a": 1}', '{"a": 2}', '{"a": 3}']::jsonb[]);
SELECT job_id, payload FROM pgqueue.queue_pop('again', 10);
SELECT queue, state, count(*) FROM pgqueue.jobs GROUP BY queue, state ORDER BY queue, state;

SELECT pgqueue.queue_drop('again', force => true);
