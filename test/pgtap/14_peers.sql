/*
 * 14_peers.sql: failures that other PostgreSQL queues shipped (issue 14,
 * "the peer failures as tests"), the cases that one session can replay:
 *
 *  case 4, same key twice in one claim (pg-boss #535: a batch fetch took
 *    two jobs of one singleton key, or failed on them): one key has a
 *    released job (claimed again by a status row) and a new job (in a
 *    range); a pop of 50 returns the released one only, without error,
 *    together with the jobs of the other keys; the new one comes after
 *    the ack;
 *  case 5, a concurrency slot released twice (solid_queue #761: a job with
 *    a concurrency limit of 1 ran 11 times at once): max_in_flight = 1,
 *    1000 rounds of lease expiry, re-claim and a stale ack of the expired
 *    attempt.  The count behind the cap is in shared memory and not shown,
 *    so each round reads it through the cap: the re-claim (a pop of 10)
 *    must return exactly one job (a count above 0 after the expiry returns
 *    none, one below 0 returns two or more), the pop after the stale ack
 *    none (a count below 1 returns one), and pgqueue.jobs must show
 *    exactly one job executing.  The expired job is claimed again until
 *    its attempts are used up (max_attempts 300), then the next job, so
 *    the rounds go through claim records, status rows and aborts.  The
 *    same count with two consumers, a claim committing while another pop
 *    reads the counts again: test/specs/peer_slot_recount.spec;
 *  case 7, a key blocked forever (graphile-worker #254: a job whose worker
 *    died kept its queue locked): a keyed job whose every attempt ends by
 *    lease expiry, without a queue_fail, is aborted by maintenance, and the
 *    next job of its key is claimed at once.
 *
 * Everything runs in autocommit mode: limits and keys settle when a
 * transaction commits, and maintenance does not expire the claims of a
 * transaction that is still running.  Case 5 is a procedure that commits
 * after each step.  The queues are dropped at the end.
 *
 * Mutations of the product, each built into a private install, made the
 * checks fail as listed:
 *  - pop.c: the range path without its key check (a job whose key is busy
 *    is taken anyway): case 4's pop of 50 returns jobs 1 and 14 of key k
 *    together, job 14 shows executing instead of blocked; case 7's first
 *    pop returns both jobs of its key;
 *  - finish.c pgq_claim_leave and expire.c expire_status without marking
 *    the flow counts stale (an expiry frees no slot): case 5 fails in
 *    round 1, the re-claim returns no job;
 *  - flow.c pgq_flow_pop_end giving back every reservation of the pop,
 *    claimed ones too (each claim's slot is released twice: at the end of
 *    the pop and when its transaction commits): case 5 fails in round 1,
 *    the re-claim returns 2 jobs and pgqueue.jobs shows 4 executing;
 *  - flow.c key_probe counting an aborted job as unfinished (its key stays
 *    blocked): case 7's pop after the abort returns nothing;
 *  - expire.c expire_sql never aborting (an expired lease of the last
 *    attempt makes the job available again): case 7 shows job 1 available
 *    and pops it again instead of job 2; case 5 never moves to job 2 and
 *    aborts nothing.
 */
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off

SELECT plan(16);

/* ------------------------------------------------------------------------
 * Case 4: same key twice in one claim (pg-boss #535)
 * ------------------------------------------------------------------------ */
SELECT pgqueue.queue_create('p14_key', block_size => 100) \g /dev/null
-- job 1 of key k, then jobs 2..11 of keys k1..k10 and jobs 12..13 without key
SELECT pgqueue.queue_push('p14_key', '{}', key => 'k') \g /dev/null
SELECT pgqueue.queue_push_batch('p14_key', array_fill('{}'::jsonb, ARRAY[12]),
								keys => array_cat(ARRAY(SELECT 'k' || i FROM generate_series(1, 10) i),
												  ARRAY[NULL, NULL]::text[])) \g /dev/null
SELECT results_eq($$SELECT job_id, attempt FROM pgqueue.queue_pop('p14_key', 1)$$,
				  $$VALUES (1::bigint, 1)$$, 'case 4: job 1 of key k is claimed');
-- the key's new job (14), pushed while job 1 is executing; then job 1 is
-- handed back, so that one pop meets it as a status row and 14 in a range
SELECT pgqueue.queue_push('p14_key', '{}', key => 'k') \g /dev/null
SELECT pgqueue.queue_release('p14_key', 1, attempt => 1) \g /dev/null
SELECT results_eq($$SELECT job_id, state FROM pgqueue.jobs
					 WHERE queue = 'p14_key' AND job_id IN (1, 14) ORDER BY job_id$$,
				  $$VALUES (1::bigint, 'available'::text), (14, 'blocked')$$,
				  'case 4: the released job 1 is available, the new job 14 of key k blocked');
CREATE TEMP TABLE p14_popped AS
	SELECT job_id, key, attempt FROM pgqueue.queue_pop('p14_key', 50);
SELECT results_eq($$SELECT job_id, attempt FROM p14_popped WHERE key = 'k'$$,
				  $$VALUES (1::bigint, 2)$$,
				  'case 4: a pop of 50 returns one job of key k, the released one');
SELECT results_eq($$SELECT array_agg(job_id ORDER BY job_id) FROM p14_popped WHERE key IS DISTINCT FROM 'k'$$,
				  $$VALUES (ARRAY(SELECT generate_series(2, 13)::bigint))$$,
				  'case 4: and every job of the other keys and without key');
SELECT results_eq($$SELECT state FROM pgqueue.jobs WHERE queue = 'p14_key' AND job_id = 14$$,
				  $$VALUES ('blocked'::text)$$, 'case 4: job 14 stays blocked behind job 1');
SELECT is_empty($$SELECT * FROM pgqueue.queue_pop('p14_key', 50)$$,
				'case 4: a further pop returns nothing while job 1 is executing');
SELECT pgqueue.queue_ack('p14_key', 1, attempt => 2) \g /dev/null
SELECT results_eq($$SELECT job_id, attempt FROM pgqueue.queue_pop('p14_key', 50)$$,
				  $$VALUES (14::bigint, 1)$$, 'case 4: after the ack, job 14 of key k comes out');

/* ------------------------------------------------------------------------
 * Case 5: a concurrency slot released twice (solid_queue #761)
 * ------------------------------------------------------------------------ */
SELECT pgqueue.queue_create('p14_slot', max_in_flight => 1, max_attempts => 300,
							block_size => 100) \g /dev/null
SELECT pgqueue.queue_push_batch('p14_slot', array_fill('{}'::jsonb, ARRAY[5])) \g /dev/null

CREATE TEMP TABLE p14_slot_result (done integer, first_bad text, jobs_used bigint[]);
CREATE PROCEDURE public.p14_slot_rounds(rounds integer)
LANGUAGE plpgsql AS $$
DECLARE
	done integer := 0;
	first_bad text;
	jobs_used bigint[];
	held bigint;			-- the job of the lease that is about to expire
	held_attempt integer;
	got integer;
	id bigint;
	att integer;
	expired bigint;
	stale_ok boolean;
	extra integer;
	executing bigint;
BEGIN
	SELECT min(job_id), min(attempt) INTO held, held_attempt
	  FROM pgqueue.queue_pop('p14_slot', 10, lease => '1 ms');
	COMMIT;
	jobs_used := ARRAY[held];
	FOR r IN 1..rounds LOOP
		PERFORM pg_sleep(0.002);
		expired := (pgqueue.maintain('p14_slot')->>'expired_leases')::bigint;
		COMMIT;
		-- the re-claim: the cap lets exactly one job out
		SELECT count(*), min(job_id), min(attempt) INTO got, id, att
		  FROM pgqueue.queue_pop('p14_slot', 10, lease => '1 ms');
		COMMIT;
		-- the stale ack of the expired attempt
		BEGIN
			PERFORM pgqueue.queue_ack('p14_slot', held, attempt => held_attempt);
			stale_ok := true;
		EXCEPTION WHEN SQLSTATE 'PQ001' THEN
			stale_ok := false;
		END;
		COMMIT;
		-- at the cap: nothing more comes out
		SELECT count(*) INTO extra FROM pgqueue.queue_pop('p14_slot', 10, lease => '1 ms');
		COMMIT;
		SELECT count(*) INTO executing
		  FROM pgqueue.jobs WHERE queue = 'p14_slot' AND state = 'executing';
		IF expired <> 1 OR got <> 1 OR stale_ok OR extra <> 0 OR executing <> 1 THEN
			first_bad := format('round %s: expired %s, re-claim returned %s, stale ack %s, '
								'pop at the cap returned %s, executing %s', r, expired, got,
								CASE WHEN stale_ok THEN 'accepted' ELSE 'refused' END,
								extra, executing);
			EXIT;
		END IF;
		IF id <> held THEN
			jobs_used := jobs_used || id;
		END IF;
		held := id;
		held_attempt := att;
		done := r;
	END LOOP;
	INSERT INTO p14_slot_result VALUES (done, first_bad, jobs_used);
END
$$;

CALL public.p14_slot_rounds(1000);
SELECT is((SELECT first_bad FROM p14_slot_result), NULL,
		  'case 5: in every round the cap let exactly one job out after the expiry, none after the stale ack, and pgqueue.jobs showed one executing');
SELECT is((SELECT done FROM p14_slot_result), 1000, 'case 5: 1000 rounds were run');
SELECT is((SELECT jobs_used FROM p14_slot_result), ARRAY[1, 2, 3, 4]::bigint[],
		  'case 5: jobs 1 to 4 were claimed in turn, each again until its attempts ran out');
SELECT results_eq($$SELECT state, count(*) FROM pgqueue.jobs WHERE queue = 'p14_slot'
					 GROUP BY state ORDER BY state$$,
				  $$VALUES ('aborted'::text, 3::bigint), ('available', 1), ('executing', 1)$$,
				  'case 5: three jobs aborted by expiry, one executing, one never claimed');
SELECT results_eq($$SELECT succeeded, aborted FROM pgqueue.stats WHERE queue = 'p14_slot'$$,
				  $$VALUES (0::bigint, 3::bigint)$$, 'case 5: no stale ack succeeded');
DROP PROCEDURE public.p14_slot_rounds(integer);

/* ------------------------------------------------------------------------
 * Case 7: a key blocked forever (graphile-worker #254)
 * ------------------------------------------------------------------------ */
SELECT pgqueue.queue_create('p14_block', max_attempts => 2, block_size => 100) \g /dev/null
SELECT pgqueue.queue_push_batch('p14_block', array_fill('{}'::jsonb, ARRAY[2]),
								keys => ARRAY['k', 'k']) \g /dev/null
SELECT results_eq($$SELECT job_id, attempt FROM pgqueue.queue_pop('p14_block', 10, lease => '10 ms')$$,
				  $$VALUES (1::bigint, 1)$$, 'case 7: job 1 of key k is claimed, job 2 waits');
SELECT pg_sleep(0.05) \g /dev/null
SELECT pgqueue.maintain('p14_block') \g /dev/null
SELECT results_eq($$SELECT job_id, attempt FROM pgqueue.queue_pop('p14_block', 10, lease => '10 ms')$$,
				  $$VALUES (1::bigint, 2)$$,
				  'case 7: its lease expired, job 1 is claimed again (its last attempt), job 2 still waits');
SELECT pg_sleep(0.05) \g /dev/null
SELECT pgqueue.maintain('p14_block') \g /dev/null
SELECT results_eq($$SELECT job_id, state, failures FROM pgqueue.jobs
					 WHERE queue = 'p14_block' ORDER BY job_id$$,
				  $$VALUES (1::bigint, 'aborted'::text, 2), (2, 'available', 0)$$,
				  'case 7: the second expiry aborts job 1 and unblocks job 2');
SELECT results_eq($$SELECT job_id, attempt FROM pgqueue.queue_pop('p14_block', 10)$$,
				  $$VALUES (2::bigint, 1)$$, 'case 7: job 2 of key k is claimed at once');

SELECT pgqueue.queue_drop(q, force => true)
  FROM unnest(ARRAY['p14_key', 'p14_slot', 'p14_block']) q \g /dev/null
SELECT * FROM finish();
