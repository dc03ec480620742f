/*
 * 12_privileges.sql: who may do what.  Each group role (producer,
 * consumer, monitor, admin) and a role with none, against every function
 * and view of schema pgqueue, the catalog tables and the internal schemas;
 * rights on single queues (queue_grant, queue_revoke); and the recipe of
 * examples/roles.sql, run as it is.
 */
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off

BEGIN;
SELECT plan(277);

CREATE ROLE pv_none;
CREATE ROLE pv_prod IN ROLE pgqueue_producer;
CREATE ROLE pv_prod2 IN ROLE pgqueue_producer;
CREATE ROLE pv_member IN ROLE pv_prod;
CREATE ROLE pv_cons IN ROLE pgqueue_consumer;
CREATE ROLE pv_cons2 IN ROLE pgqueue_consumer;
CREATE ROLE pv_mon IN ROLE pgqueue_monitor;
CREATE ROLE pv_admin IN ROLE pgqueue_admin;
CREATE ROLE pv_admin2 IN ROLE pgqueue_admin;
CREATE ROLE pv_owner IN ROLE pgqueue_producer, pgqueue_consumer, pgqueue_admin;

SELECT pgqueue.queue_create('pv_a', block_size => 100) \g /dev/null
SELECT pgqueue.queue_create('pv_b', block_size => 100) \g /dev/null

-- every function of schema pgqueue, the group that may call it, and a call
CREATE TEMP TABLE pv_calls (ord serial, fn regprocedure, grp text, call text);
INSERT INTO pv_calls (fn, grp, call) VALUES
	('pgqueue.queue_push(text,jsonb,text,integer,timestamptz,text)', 'producer',
	 $$SELECT pgqueue.queue_push('pv_a', '{}')$$),
	('pgqueue.queue_push_batch(text,jsonb[],text[],integer[],timestamptz,text[])', 'producer',
	 $$SELECT pgqueue.queue_push_batch('pv_a', ARRAY['{}']::jsonb[])$$),
	('pgqueue.queue_pop(text,integer,interval,interval)', 'consumer',
	 $$SELECT * FROM pgqueue.queue_pop('pv_a')$$),
	('pgqueue.queue_ack(text,bigint,integer)', 'consumer',
	 $$SELECT pgqueue.queue_ack('pv_a', 1)$$),
	('pgqueue.queue_ack(text,bigint[],integer[])', 'consumer',
	 $$SELECT pgqueue.queue_ack('pv_a', ARRAY[1]::bigint[])$$),
	('pgqueue.queue_fail(text,bigint,text,interval,integer)', 'consumer',
	 $$SELECT pgqueue.queue_fail('pv_a', 1, 'e')$$),
	('pgqueue.queue_extend(text,bigint,interval,integer)', 'consumer',
	 $$SELECT pgqueue.queue_extend('pv_a', 1)$$),
	('pgqueue.queue_release(text,bigint,integer)', 'consumer',
	 $$SELECT pgqueue.queue_release('pv_a', 1)$$),
	('pgqueue.queue_create(text,bigint,interval,integer,interval,interval,double precision,'
	 'boolean,interval,boolean,interval,double precision,integer,integer,bigint,bigint,'
	 'double precision,double precision,double precision,double precision,jsonb)', 'admin',
	 $$SELECT pgqueue.queue_create('pv_new')$$),
	('pgqueue.queue_alter(text,interval,integer,interval,interval,double precision,boolean,'
	 'interval,boolean,interval,double precision,integer,integer,bigint,bigint,'
	 'double precision,double precision,double precision,double precision,jsonb)', 'admin',
	 $$SELECT pgqueue.queue_alter('pv_a', max_attempts => 3)$$),
	('pgqueue.queue_set(text,text,text)', 'admin',
	 $$SELECT pgqueue.queue_set('pv_a', 'max_attempts', '3')$$),
	('pgqueue.queue_drop(text,boolean)', 'admin', $$SELECT pgqueue.queue_drop('pv_a')$$),
	('pgqueue.queue_pause(text)', 'admin', $$SELECT pgqueue.queue_pause('pv_a')$$),
	('pgqueue.queue_resume(text)', 'admin', $$SELECT pgqueue.queue_resume('pv_a')$$),
	('pgqueue.queue_purge(text)', 'admin', $$SELECT pgqueue.queue_purge('pv_a')$$),
	('pgqueue.queue_grant(text,name,text[])', 'admin',
	 $$SELECT pgqueue.queue_grant('pv_a', 'pv_none', '{push}')$$),
	('pgqueue.queue_revoke(text,name,text[])', 'admin',
	 $$SELECT pgqueue.queue_revoke('pv_a', 'pv_none')$$),
	('pgqueue.queue_retry(text,bigint)', 'admin', $$SELECT pgqueue.queue_retry('pv_a', 1)$$),
	('pgqueue.queue_retry(text,text,text,timestamptz,timestamptz)', 'admin',
	 $$SELECT pgqueue.queue_retry('pv_a', 'failed')$$),
	('pgqueue.queue_abort(text,bigint,text)', 'admin',
	 $$SELECT pgqueue.queue_abort('pv_a', 1, 'r')$$),
	('pgqueue.queue_abort(text,text,text,text,timestamptz,timestamptz)', 'admin',
	 $$SELECT pgqueue.queue_abort('pv_a', 'available', 'r')$$),
	('pgqueue.maintain(text)', 'admin', $$SELECT pgqueue.maintain('pv_a')$$);
GRANT SELECT ON pv_calls TO PUBLIC;

-- every view and catalog table of schema pgqueue; the monitor reads the views
CREATE TEMP TABLE pv_rels (ord serial, name text, kind text);
INSERT INTO pv_rels (name, kind) VALUES
	('queues', 'view'), ('jobs', 'view'), ('job_history', 'view'), ('blocks', 'view'),
	('stats', 'view'), ('maintenance', 'view'),
	('queue', 'table'), ('block', 'table'), ('archive', 'table'), ('queue_acl', 'table'),
	('queue_maintenance', 'table');
GRANT SELECT ON pv_rels TO PUBLIC;

-- the current role is refused every function, view and table outside its group
CREATE FUNCTION pg_temp.pv_refused(who text, allowed text)
RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
	c record;
BEGIN
	FOR c IN SELECT p.proname, k.fn, k.call FROM pg_temp.pv_calls k JOIN pg_proc p ON p.oid = k.fn
			  WHERE k.grp IS DISTINCT FROM allowed ORDER BY k.ord LOOP
		RETURN NEXT throws_ok(c.call, '42501', 'permission denied for function ' || c.proname,
							  format('%s: %s is refused', who, c.fn));
	END LOOP;
	FOR c IN SELECT r.name, r.kind FROM pg_temp.pv_rels r
			  WHERE r.kind = 'table' OR allowed IS DISTINCT FROM 'monitor' ORDER BY r.ord LOOP
		RETURN NEXT throws_ok('SELECT * FROM pgqueue.' || c.name, '42501',
							  format('permission denied for %s %s', c.kind, c.name),
							  format('%s: %s pgqueue.%s is refused', who, c.kind, c.name));
	END LOOP;
	RETURN NEXT throws_ok('SELECT * FROM pgqueue_data.job_store', '42501',
						  'permission denied for schema pgqueue_data',
						  who || ': the data tables are refused');
	RETURN NEXT throws_ok('SELECT pgqueue_internal._caller()', '42501',
						  'permission denied for schema pgqueue_internal',
						  who || ': the internal functions are refused');
END
$$;

-- SQLSTATE, message and detail of the error a statement raises
CREATE FUNCTION pg_temp.pv_error(sql text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	detail text;
BEGIN
	EXECUTE sql;
	RETURN 'no error';
EXCEPTION WHEN others THEN
	GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
	RETURN SQLSTATE || ': ' || SQLERRM || ' / ' || detail;
END
$$;

SELECT set_eq($$SELECT fn FROM pv_calls$$,
			  $$SELECT oid::regprocedure FROM pg_proc WHERE pronamespace = 'pgqueue'::regnamespace$$,
			  'the calls below cover every function of schema pgqueue');
SELECT set_eq($$SELECT name FROM pv_rels$$,
			  $$SELECT relname::text FROM pg_class
				 WHERE relnamespace = 'pgqueue'::regnamespace AND relkind IN ('r', 'v', 'm', 'p', 'f')$$,
			  'the reads below cover every view and table of schema pgqueue');

--
-- 1. A role with no group role may use nothing
--
SET ROLE pv_none;
SELECT * FROM pg_temp.pv_refused('no group role', NULL);
RESET ROLE;

--
-- 2. pgqueue_producer: push and push_batch, nothing else
--
SET ROLE pv_prod;
SELECT is(pgqueue.queue_push('pv_a', '{"n": 1}'), 1::bigint, 'producer: queue_push works');
SELECT is(pgqueue.queue_push_batch('pv_a', ARRAY['{"n": 2}', '{"n": 3}', '{"n": 4}',
												  '{"n": 5}']::jsonb[]),
		  ARRAY[2, 3, 4, 5]::bigint[], 'producer: queue_push_batch works');
SELECT * FROM pg_temp.pv_refused('producer', 'producer');
RESET ROLE;

--
-- 3. pgqueue_consumer: pop and the transitions out of a lease, nothing else
--
SET ROLE pv_cons;
SELECT results_eq($$SELECT job_id, attempt, payload FROM pgqueue.queue_pop('pv_a', 5)$$,
				  $$VALUES (1::bigint, 1, '{"n": 1}'::jsonb), (2, 1, '{"n": 2}'),
						   (3, 1, '{"n": 3}'), (4, 1, '{"n": 4}'), (5, 1, '{"n": 5}')$$,
				  'consumer: queue_pop works');
SELECT lives_ok($$SELECT pgqueue.queue_ack('pv_a', 1)$$, 'consumer: queue_ack works');
SELECT is(pgqueue.queue_ack('pv_a', ARRAY[2]::bigint[]), 1,
		  'consumer: queue_ack of an array works');
SELECT is(pgqueue.queue_fail('pv_a', 3, 'boom', retry_in => '1 hour'), 'failed',
		  'consumer: queue_fail works');
SELECT ok(pgqueue.queue_extend('pv_a', 4, '10 minutes') > now() + interval '9 minutes',
		  'consumer: queue_extend works');
SELECT lives_ok($$SELECT pgqueue.queue_release('pv_a', 5)$$, 'consumer: queue_release works');
SELECT * FROM pg_temp.pv_refused('consumer', 'consumer');
RESET ROLE;
SELECT results_eq($$SELECT job_id, state FROM pgqueue.jobs WHERE queue = 'pv_a' ORDER BY job_id$$,
				  $$VALUES (1::bigint, 'succeeded'), (2, 'succeeded'), (3, 'failed'),
						   (4, 'executing'), (5, 'available')$$,
				  'the consumer''s calls changed the jobs');

--
-- 4. pgqueue_monitor: the six views, nothing else
--
SET ROLE pv_mon;
SELECT results_eq($$SELECT job_id, state, payload FROM pgqueue.jobs
					 WHERE queue = 'pv_a' ORDER BY job_id$$,
				  $$VALUES (1::bigint, 'succeeded', '{"n": 1}'::jsonb),
						   (2, 'succeeded', '{"n": 2}'), (3, 'failed', '{"n": 3}'),
						   (4, 'executing', '{"n": 4}'), (5, 'available', '{"n": 5}')$$,
				  'monitor: reads pgqueue.jobs');
SELECT results_eq($$SELECT job_id, state, error FROM pgqueue.job_history
					 WHERE queue = 'pv_a' AND job_id = 3 ORDER BY seq$$,
				  $$VALUES (3::bigint, 'executing', NULL::text), (3, 'failed', 'boom')$$,
				  'monitor: reads pgqueue.job_history');
SELECT results_eq($$SELECT available, failed, executing, succeeded, blocks
					  FROM pgqueue.stats WHERE queue = 'pv_a'$$,
				  $$VALUES (1::bigint, 1::bigint, 1::bigint, 2::bigint, 1::bigint)$$,
				  'monitor: reads pgqueue.stats');
SELECT results_eq($$SELECT queue, paused, block_size, available FROM pgqueue.queues
					 ORDER BY queue$$,
				  $$VALUES ('pv_a', false, 100::bigint, 1::bigint), ('pv_b', false, 100, 0)$$,
				  'monitor: reads pgqueue.queues');
SELECT results_eq($$SELECT block_no, first_id, last_id, state, jobs, unfinished
					  FROM pgqueue.blocks WHERE queue = 'pv_a'$$,
				  $$VALUES (0, 1::bigint, 100::bigint, 'open', 5::bigint, 3::bigint)$$,
				  'monitor: reads pgqueue.blocks');
SELECT is_empty($$SELECT * FROM pgqueue.maintenance$$, 'monitor: reads pgqueue.maintenance');
SELECT throws_ok($$SELECT pgqueue_internal._state('a', now(), now())$$, '42501',
				 'permission denied for schema pgqueue_internal',
				 'monitor: the views'' helpers cannot be called directly');
SELECT throws_ok($$SELECT * FROM pgqueue_internal._counters('pv_a')$$, '42501',
				 'permission denied for schema pgqueue_internal',
				 'monitor: the counters cannot be read directly');
SELECT * FROM pg_temp.pv_refused('monitor', 'monitor');
RESET ROLE;

--
-- 5. pgqueue_admin: every admin function, nothing else
--
SET ROLE pv_admin;
SELECT lives_ok($$SELECT pgqueue.queue_create('pv_adm', block_size => 100)$$,
				'admin: queue_create works');
RESET ROLE;
SELECT is((SELECT owner FROM pgqueue.queue WHERE name = 'pv_adm'), 'pv_admin'::name,
		  'the role that created a queue owns it');
SELECT pgqueue.queue_push_batch('pv_adm', ARRAY['{}', '{}', '{}']::jsonb[]) \g /dev/null
SET ROLE pv_admin;
SELECT lives_ok($$SELECT pgqueue.queue_alter('pv_adm', max_attempts => 3)$$,
				'admin: queue_alter works');
SELECT lives_ok($$SELECT pgqueue.queue_set('pv_adm', 'default_lease', '1 minute')$$,
				'admin: queue_set works');
SELECT lives_ok($$SELECT pgqueue.queue_pause('pv_adm')$$, 'admin: queue_pause works');
SELECT lives_ok($$SELECT pgqueue.queue_abort('pv_adm', 1, 'stop')$$,
				'admin: queue_abort of one job works');
SELECT is(pgqueue.queue_abort('pv_adm', 'available', 'stop all'), 2::bigint,
		  'admin: queue_abort of many jobs works');
SELECT is(pgqueue.queue_retry('pv_adm', 1), true, 'admin: queue_retry of one job works');
SELECT is(pgqueue.queue_retry('pv_adm', 'aborted'), 2::bigint,
		  'admin: queue_retry of many jobs works');
SELECT lives_ok($$SELECT pgqueue.queue_resume('pv_adm')$$, 'admin: queue_resume works');
SELECT ok(pgqueue.maintain('pv_adm') ? 'expired_leases', 'admin: maintain of one queue works');
SELECT ok(pgqueue.maintain() ? 'expired_leases', 'admin: maintain of every queue works');
SELECT lives_ok($$SELECT pgqueue.queue_grant('pv_adm', 'pv_prod', '{push, consume}')$$,
				'admin: queue_grant works');
RESET ROLE;
SELECT results_eq($$SELECT paused, max_attempts, default_lease FROM pgqueue.queues
					 WHERE queue = 'pv_adm'$$,
				  $$VALUES (false, 3, interval '1 minute')$$,
				  'the admin''s calls changed the queue');
SELECT results_eq($$SELECT job_id, state FROM pgqueue.jobs WHERE queue = 'pv_adm' ORDER BY job_id$$,
				  $$VALUES (1::bigint, 'available'), (2, 'available'), (3, 'available')$$,
				  'the admin''s calls aborted and retried the jobs');
SELECT results_eq($$SELECT a.grantee, a.privilege FROM pgqueue.queue_acl a
					  JOIN pgqueue.queue q USING (queue_id)
					 WHERE q.name = 'pv_adm' ORDER BY privilege$$,
				  $$VALUES ('pv_prod'::name, 'consume'), ('pv_prod', 'push')$$,
				  'queue_grant recorded the rights');
SET ROLE pv_admin;
SELECT lives_ok($$SELECT pgqueue.queue_revoke('pv_adm', 'pv_prod', '{consume}')$$,
				'admin: queue_revoke works');
SELECT is(pgqueue.queue_purge('pv_adm'), 3::bigint, 'admin: queue_purge works');
SELECT lives_ok($$SELECT pgqueue.queue_drop('pv_adm')$$, 'admin: queue_drop works');
SELECT lives_ok($$SELECT pgqueue.queue_pause('pv_b')$$,
				'admin: queue_pause of another role''s queue without admin grants works');
SELECT lives_ok($$SELECT pgqueue.queue_resume('pv_b')$$,
				'admin: queue_resume of another role''s queue without admin grants works');
SELECT * FROM pg_temp.pv_refused('admin', 'admin');
RESET ROLE;
SELECT results_eq($$SELECT (SELECT count(*) FROM pgqueue.queue WHERE name = 'pv_adm'),
						   (SELECT count(*) FROM pgqueue.queue_acl a
							 WHERE NOT EXISTS (SELECT 1 FROM pgqueue.queue q
												WHERE q.queue_id = a.queue_id))$$,
				  $$VALUES (0::bigint, 0::bigint)$$,
				  'queue_drop by the admin dropped the queue and its grants');

--
-- 6. Rights on single queues
--

-- push: once granted, only to its grantees and the roles inheriting from them
SELECT pgqueue.queue_create('pv_p', block_size => 100) \g /dev/null
SELECT pgqueue.queue_grant('pv_p', 'pv_prod', '{push}') \g /dev/null
SET ROLE pv_prod2;
SELECT throws_ok(replace(call, 'pv_a', 'pv_p'), '42501', 'permission denied for queue "pv_p"',
				 format('push right granted to another role: %s is refused', fn))
  FROM pv_calls WHERE grp = 'producer' ORDER BY ord;
SELECT is(pg_temp.pv_error($$SELECT pgqueue.queue_push('pv_p', '{}')$$),
		  '42501: permission denied for queue "pv_p" / '
		  'Role "pv_prod2" does not have the push right on the queue.',
		  'the error names the role and the right it lacks');
SELECT is(pgqueue.queue_push('pv_b', '{}'), 1::bigint,
		  'a producer still pushes into a queue without push grants');
RESET ROLE;
SET ROLE pv_prod;
SELECT is(pgqueue.queue_push('pv_p', '{"by": "prod"}'), 1::bigint, 'the grantee pushes');
SELECT is(pgqueue.queue_push_batch('pv_p', ARRAY['{"by": "prod"}']::jsonb[]), ARRAY[2]::bigint[],
		  'the grantee pushes a batch');
RESET ROLE;
SET ROLE pv_member;
SELECT is(pgqueue.queue_push('pv_p', '{"by": "member"}'), 3::bigint,
		  'a role that inherits from the grantee pushes');
RESET ROLE;
GRANT pv_prod TO pv_prod2;
SET ROLE pv_prod2;
SELECT is(pgqueue.queue_push('pv_p', '{}'), 4::bigint,
		  'a role made a member of the grantee pushes at once');
RESET ROLE;
REVOKE pv_prod FROM pv_prod2;
SET ROLE pv_prod2;
SELECT throws_ok($$SELECT pgqueue.queue_push('pv_p', '{}')$$, '42501',
				 'permission denied for queue "pv_p"',
				 'a role no longer a member of the grantee is refused at once');
SELECT throws_ok($$SELECT pgqueue.queue_push_batch('pv_p', '{}'::jsonb[])$$, '42501',
				 'permission denied for queue "pv_p"', 'a batch of no jobs is refused too');
RESET ROLE;
CREATE ROLE pv_noinherit NOINHERIT IN ROLE pv_prod;
GRANT EXECUTE ON FUNCTION pgqueue.queue_push(text, jsonb, text, integer, timestamptz, text)
	TO pv_noinherit;
SET ROLE pv_noinherit;
SELECT throws_ok($$SELECT pgqueue.queue_push('pv_p', '{}')$$, '42501',
				 'permission denied for queue "pv_p"',
				 'a member of the grantee that does not inherit its privileges is refused');
RESET ROLE;
-- the caller is the current user: a SECURITY DEFINER function of the grantee pushes
CREATE FUNCTION pg_temp.pv_push_as_prod()
RETURNS bigint
LANGUAGE sql SECURITY DEFINER AS $$ SELECT pgqueue.queue_push('pv_p', '{}') $$;
ALTER FUNCTION pg_temp.pv_push_as_prod() OWNER TO pv_prod;
SET ROLE pv_prod2;
SELECT is(pg_temp.pv_push_as_prod(), 5::bigint,
		  'a SECURITY DEFINER function owned by the grantee pushes for another role');
RESET ROLE;
SET ROLE pv_cons2;
SELECT is((SELECT array_agg(job_id) FROM pgqueue.queue_pop('pv_p', 3)), ARRAY[1, 2, 3]::bigint[],
		  'a push grant leaves the consume right open');
RESET ROLE;
SELECT pgqueue.queue_grant('pv_p', 'pv_prod2', '{push}') \g /dev/null
SELECT pgqueue.queue_revoke('pv_p', 'pv_prod', '{push}') \g /dev/null
SET ROLE pv_prod;
SELECT throws_ok($$SELECT pgqueue.queue_push('pv_p', '{}')$$, '42501',
				 'permission denied for queue "pv_p"',
				 'a revoked grantee is refused while another role holds the grant');
RESET ROLE;
SET ROLE pv_prod2;
SELECT is(pgqueue.queue_push('pv_p', '{}'), 6::bigint, 'a role granted later pushes');
RESET ROLE;
SELECT pgqueue.queue_revoke('pv_p', 'pv_prod2') \g /dev/null
SET ROLE pv_prod;
SELECT is(pgqueue.queue_push('pv_p', '{}'), 7::bigint,
		  'revoking the last grant opens the right again');
RESET ROLE;

-- a grant to a role that was dropped still closes the right
CREATE ROLE pv_gone;
SELECT pgqueue.queue_grant('pv_b', 'pv_gone', '{push}') \g /dev/null
DROP ROLE pv_gone;
SET ROLE pv_prod;
SELECT throws_ok($$SELECT pgqueue.queue_push('pv_b', '{}')$$, '42501',
				 'permission denied for queue "pv_b"',
				 'a grant to a dropped role keeps the right closed');
RESET ROLE;
SELECT pgqueue.queue_revoke('pv_b', 'pv_gone') \g /dev/null

-- consume
SELECT pgqueue.queue_create('pv_c', block_size => 100) \g /dev/null
SELECT pgqueue.queue_push_batch('pv_c', ARRAY['{}', '{}', '{}']::jsonb[]) \g /dev/null
SELECT pgqueue.queue_grant('pv_c', 'pv_cons', '{consume}') \g /dev/null
SET ROLE pv_cons;
SELECT is((SELECT array_agg(job_id) FROM pgqueue.queue_pop('pv_c', 2)), ARRAY[1, 2]::bigint[],
		  'the consume grantee pops');
RESET ROLE;
SET ROLE pv_cons2;
SELECT throws_ok(replace(call, 'pv_a', 'pv_c'), '42501', 'permission denied for queue "pv_c"',
				 format('consume right granted to another role: %s is refused', fn))
  FROM pv_calls WHERE grp = 'consumer' ORDER BY ord;
SELECT is(pg_temp.pv_error($$SELECT pgqueue.queue_ack('pv_c', 1)$$),
		  '42501: permission denied for queue "pv_c" / '
		  'Role "pv_cons2" does not have the consume right on the queue.',
		  'the error names the consume right');
SELECT throws_ok($$SELECT * FROM pgqueue.queue_pop('pv_c', wait => '10 s')$$, '42501',
				 'permission denied for queue "pv_c"', 'a pop that would wait is refused');
SELECT throws_ok($$SELECT pgqueue.queue_ack('pv_c', '{}'::bigint[])$$, '42501',
				 'permission denied for queue "pv_c"', 'an ack of no jobs is refused too');
RESET ROLE;
SET ROLE pv_prod2;
SELECT is(pgqueue.queue_push('pv_c', '{}'), 4::bigint, 'a consume grant leaves push open');
RESET ROLE;
SET ROLE pv_cons;
SELECT lives_ok($$SELECT pgqueue.queue_ack('pv_c', 1)$$, 'the consume grantee acks');
SELECT is(pgqueue.queue_fail('pv_c', 2, 'boom', retry_in => '1 hour'), 'failed',
		  'the consume grantee fails a job');
RESET ROLE;
SELECT pgqueue.queue_revoke('pv_c', 'pv_cons', '{consume}') \g /dev/null
SET ROLE pv_cons2;
SELECT is((SELECT array_agg(job_id) FROM pgqueue.queue_pop('pv_c', 5)), ARRAY[3, 4]::bigint[],
		  'revoking the consume grant opens the right again');
RESET ROLE;

-- admin
SELECT pgqueue.queue_create('pv_d', block_size => 100) \g /dev/null
SELECT pgqueue.queue_push('pv_d', '{}') \g /dev/null
SELECT pgqueue.queue_grant('pv_d', 'pv_admin', '{admin}') \g /dev/null
SET ROLE pv_admin2;
SELECT throws_ok(replace(call, 'pv_a', 'pv_d'), '42501', 'permission denied for queue "pv_d"',
				 format('admin right granted to another role: %s is refused', fn))
  FROM pv_calls WHERE grp = 'admin' AND call LIKE '%pv_a%' ORDER BY ord;
SELECT is(pg_temp.pv_error($$SELECT pgqueue.queue_pause('pv_d')$$),
		  '42501: permission denied for queue "pv_d" / '
		  'Role "pv_admin2" does not have the admin right on the queue.',
		  'the error names the admin right');
SELECT lives_ok($$SELECT pgqueue.queue_pause('pv_b')$$,
				'an admin still pauses a queue without admin grants');
SELECT lives_ok($$SELECT pgqueue.maintain()$$,
				'maintain() of every queue needs no right on single queues');
RESET ROLE;
SET ROLE pv_admin;
SELECT lives_ok($$SELECT pgqueue.queue_pause('pv_d')$$, 'the admin grantee pauses the queue');
SELECT lives_ok($$SELECT pgqueue.queue_grant('pv_d', 'pv_admin2', '{push}')$$,
				'the admin grantee grants rights on the queue');
SELECT lives_ok($$SELECT pgqueue.queue_revoke('pv_d', 'pv_admin2', '{push}')$$,
				'the admin grantee revokes rights on the queue');
RESET ROLE;
SELECT pgqueue.queue_revoke('pv_d', 'pv_admin') \g /dev/null
SET ROLE pv_admin2;
SELECT lives_ok($$SELECT pgqueue.queue_resume('pv_d')$$,
				'revoking the admin grant opens the right again');
RESET ROLE;

-- the owner keeps every right
SET ROLE pv_owner;
SELECT pgqueue.queue_create('pv_o', block_size => 100) \g /dev/null
SELECT lives_ok($$SELECT pgqueue.queue_grant('pv_o', 'pv_prod', '{push}')$$,
				'the owner grants push on its queue');
SELECT lives_ok($$SELECT pgqueue.queue_grant('pv_o', 'pv_cons', '{consume}')$$,
				'the owner grants consume on its queue');
SELECT lives_ok($$SELECT pgqueue.queue_grant('pv_o', 'pv_admin', '{admin}')$$,
				'the owner grants admin on its queue');
SELECT is(pgqueue.queue_push('pv_o', '{}'), 1::bigint, 'the owner pushes after the grants');
SELECT is((SELECT array_agg(job_id) FROM pgqueue.queue_pop('pv_o')), ARRAY[1]::bigint[],
		  'the owner pops after the grants');
SELECT lives_ok($$SELECT pgqueue.queue_ack('pv_o', 1)$$, 'the owner acks after the grants');
SELECT lives_ok($$SELECT pgqueue.queue_pause('pv_o')$$, 'the owner pauses after the grants');
SELECT lives_ok($$SELECT pgqueue.queue_revoke('pv_o', 'pv_admin', '{admin}')$$,
				'the owner revokes after the grants');
SELECT lives_ok($$SELECT pgqueue.queue_grant('pv_o', 'pv_admin', '{admin}')$$,
				'the owner grants again');
RESET ROLE;
SET ROLE pv_prod2;
SELECT throws_ok($$SELECT pgqueue.queue_push('pv_o', '{}')$$, '42501',
				 'permission denied for queue "pv_o"', 'another producer is refused');
RESET ROLE;
SET ROLE pv_cons2;
SELECT throws_ok($$SELECT * FROM pgqueue.queue_pop('pv_o')$$, '42501',
				 'permission denied for queue "pv_o"', 'another consumer is refused');
RESET ROLE;
SET ROLE pv_admin2;
SELECT throws_ok($$SELECT pgqueue.queue_resume('pv_o')$$, '42501',
				 'permission denied for queue "pv_o"', 'another admin is refused');
RESET ROLE;
SET ROLE pv_admin;
SELECT lives_ok($$SELECT pgqueue.queue_resume('pv_o')$$,
				'the admin grantee of another role''s queue resumes it');
RESET ROLE;

-- bad arguments of queue_grant and queue_revoke
SELECT throws_ok($$SELECT pgqueue.queue_grant('pv_d', 'pv_prod', '{push, pull}')$$, '22023',
				 'unrecognized privilege "pull"', 'queue_grant of an unknown privilege');
SELECT throws_ok($$SELECT pgqueue.queue_grant('pv_d', 'pv_nobody', '{push}')$$, '42704',
				 'role "pv_nobody" does not exist', 'queue_grant to an unknown role');
SELECT throws_ok($$SELECT pgqueue.queue_grant('pv_d', NULL, '{push}')$$, '22004',
				 'role must not be null', 'queue_grant to a NULL role');
SELECT throws_ok($$SELECT pgqueue.queue_grant('pv_d', 'pv_prod', NULL)$$, '22004',
				 'privileges must not be null', 'queue_grant of NULL privileges');
SELECT throws_ok($$SELECT pgqueue.queue_grant('pv_d', 'pv_prod', '{push, NULL}')$$, '22004',
				 'privileges must not be null', 'queue_grant of a NULL privilege');
SELECT throws_ok($$SELECT pgqueue.queue_grant('pv_nope', 'pv_prod', '{push}')$$, '42704',
				 'queue "pv_nope" does not exist', 'queue_grant on an unknown queue');
SELECT throws_ok($$SELECT pgqueue.queue_revoke('pv_d', 'pv_prod', '{pull}')$$, '22023',
				 'unrecognized privilege "pull"', 'queue_revoke of an unknown privilege');
SELECT throws_ok($$SELECT pgqueue.queue_revoke('pv_d', NULL)$$, '22004',
				 'role must not be null', 'queue_revoke from a NULL role');
SELECT throws_ok($$SELECT pgqueue.queue_revoke('pv_d', 'pv_prod', NULL)$$, '22004',
				 'privileges must not be null', 'queue_revoke of NULL privileges');
SELECT is_empty($$SELECT * FROM pgqueue.queue_acl a JOIN pgqueue.queue q USING (queue_id)
				   WHERE q.name = 'pv_d'$$,
				'the refused grants left nothing behind');

--
-- 7. The recipe of examples/roles.sql, run as it is
--
\o /dev/null
\ir ../../examples/roles.sql
\o
SET ROLE app_producer;
SELECT is(pgqueue.queue_push('emails', '{"to": "a@example.com"}'), 1::bigint,
		  'recipe: app_producer pushes into emails');
RESET ROLE;
SET ROLE pv_prod;
SELECT throws_ok($$SELECT pgqueue.queue_push('emails', '{}')$$, '42501',
				 'permission denied for queue "emails"',
				 'recipe: other producers may not push into emails');
RESET ROLE;
SET ROLE app_consumer;
SELECT is((SELECT array_agg(payload) FROM pgqueue.queue_pop('emails')),
		  ARRAY['{"to": "a@example.com"}']::jsonb[], 'recipe: app_consumer pops from emails');
SELECT lives_ok($$SELECT pgqueue.queue_ack('emails', 1)$$, 'recipe: app_consumer acks');
RESET ROLE;
SET ROLE ops_monitor;
SELECT results_eq($$SELECT succeeded, available FROM pgqueue.stats WHERE queue = 'emails'$$,
				  $$VALUES (1::bigint, 0::bigint)$$, 'recipe: ops_monitor reads pgqueue.stats');
SELECT is((SELECT state FROM pgqueue.jobs WHERE queue = 'emails' AND job_id = 1), 'succeeded',
		  'recipe: ops_monitor reads pgqueue.jobs');
RESET ROLE;
SET ROLE ops_admin;
SELECT lives_ok($$SELECT pgqueue.queue_pause('emails')$$, 'recipe: ops_admin pauses emails');
SELECT lives_ok($$SELECT pgqueue.queue_resume('emails')$$, 'recipe: ops_admin resumes emails');
SELECT lives_ok($$SELECT pgqueue.queue_create('reports')$$, 'recipe: ops_admin creates a queue');
SELECT ok(pgqueue.maintain() ? 'expired_leases', 'recipe: ops_admin runs maintain');
SELECT lives_ok($$SELECT pgqueue.queue_drop('reports')$$, 'recipe: ops_admin drops its queue');
SELECT throws_ok($$SELECT pgqueue.queue_push('emails', '{}')$$, '42501',
				 'permission denied for function queue_push', 'recipe: ops_admin may not push');
RESET ROLE;
SET ROLE app_producer;
SELECT throws_ok($$SELECT * FROM pgqueue.queue_pop('emails')$$, '42501',
				 'permission denied for function queue_pop', 'recipe: app_producer may not pop');
RESET ROLE;
SET ROLE app_consumer;
SELECT throws_ok($$SELECT * FROM pgqueue.jobs$$, '42501', 'permission denied for view jobs',
				 'recipe: app_consumer may not read the views');
RESET ROLE;
SET ROLE ops_monitor;
SELECT throws_ok($$SELECT pgqueue.queue_retry('emails', 1)$$, '42501',
				 'permission denied for function queue_retry', 'recipe: ops_monitor may not retry');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
