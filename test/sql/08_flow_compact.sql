--
-- 08_flow_compact: ordering keys and tenants survive compaction
--
--   Keyed jobs whose blocks are compacted keep their ids, keys and tenants;
--   a failed job moved into a compacted block still blocks the later jobs of
--   its key (in the open block), and they come out in push order once it
--   succeeds.  maintain() is called by hand (pgqueue.worker = off).
\set SHOW_CONTEXT never

SELECT pgqueue.queue_create('fk', block_size => 100, retention => '0',
							backoff_jitter => 0);

-- 250 jobs, three blocks: key 'k' || (i % 5) on every job, two tenants
SELECT array_length(pgqueue.queue_push_batch('fk',
		   array_agg(jsonb_build_object('n', i) ORDER BY i),
		   keys => array_agg('k' || i % 5 ORDER BY i),
		   tenants => array_agg(CASE WHEN i % 2 = 0 THEN 'even' ELSE 'odd' END ORDER BY i)),
		   1) AS pushed
  FROM generate_series(1, 250) i;

-- pops of 10, each acked in its own transaction (an ack frees the next
-- job of its key when it commits), recording the order of delivery; job 3
-- (key k3) fails for an hour when it first comes
CREATE TEMP TABLE delivered (seq serial, job_id bigint);
CREATE PROCEDURE pg_temp.drain(rounds integer)
LANGUAGE plpgsql AS $$
DECLARE
	j record;
BEGIN
	FOR i IN 1 .. rounds LOOP
		FOR j IN SELECT * FROM pgqueue.queue_pop('fk', 10) LOOP
			INSERT INTO delivered (job_id) VALUES (j.job_id);
			IF j.job_id = 3 AND j.attempt = 1 THEN
				PERFORM pgqueue.queue_fail('fk', 3, 'later', retry_in => '1 hour');
			ELSE
				PERFORM pgqueue.queue_ack('fk', j.job_id);
			END IF;
		END LOOP;
		COMMIT;
	END LOOP;
END
$$;
CALL pg_temp.drain(300);
-- the other keys drained, one job of a key at a time in push order; k3
-- stays blocked behind job 3
SELECT (SELECT count(*) FROM delivered) AS delivered,
	   bool_and(d.ok) AS each_key_in_push_order
  FROM (SELECT array_agg(job_id ORDER BY seq) = array_agg(job_id ORDER BY job_id) AS ok
		  FROM delivered GROUP BY job_id % 5) d;
SELECT state, key, count(*), min(job_id), max(job_id)
  FROM pgqueue.jobs WHERE queue = 'fk' AND state <> 'succeeded'
 GROUP BY state, key ORDER BY state, key;

-- close the full blocks and compact them: the failed job 3 and the blocked
-- k3 jobs of blocks 0 and 1 move into a compacted block
SELECT pgqueue.maintain('fk') IS NOT NULL AS maintained;
SELECT pgqueue.maintain('fk') IS NOT NULL AS maintained;
SELECT block_no < 0 AS compacted, state, jobs, unfinished
  FROM pgqueue.blocks WHERE queue = 'fk' ORDER BY first_id;

-- ids, keys, tenants and states survived
SELECT state, key, count(*), min(job_id), max(job_id),
	   count(*) FILTER (WHERE tenant = CASE WHEN job_id % 2 = 0 THEN 'even' ELSE 'odd' END)
		 AS right_tenant
  FROM pgqueue.jobs WHERE queue = 'fk' AND state <> 'succeeded'
 GROUP BY state, key ORDER BY state, key;

-- still blocked behind job 3
SELECT count(*) AS popped FROM pgqueue.queue_pop('fk', 10);

-- job 3 is retried now and succeeds: then k3's jobs come out one at a time,
-- in push order, across the compacted and the open block
SELECT pgqueue.queue_retry('fk', 3);
TRUNCATE delivered;
CALL pg_temp.drain(300);
SELECT count(*) AS delivered,
	   bool_and(job_id % 5 = 3) AS all_k3,
	   array_agg(job_id ORDER BY seq) = array_agg(job_id ORDER BY job_id) AS in_push_order
  FROM delivered;
SELECT count(*) AS unfinished FROM pgqueue.jobs WHERE queue = 'fk' AND state <> 'succeeded';

SELECT pgqueue.queue_drop('fk', force => true);
