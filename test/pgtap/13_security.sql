/*
 * 13_security.sql: what a caller can do to pgqueue with objects of its own
 * (issue 11, DESIGN.md section 3 item 9), and the bounds that keep every
 * computation of a queue in range.
 *
 *   b. every function of the extension pins search_path = pg_catalog,
 *      pgqueue, pg_temp (read from pg_proc.proconfig), so that a new
 *      function cannot forget it
 *   c. the only SECURITY DEFINER functions are the view helpers, and no
 *      function of the extension is executable by PUBLIC
 *   a. finding 1: a role with every group role of pgqueue fills pg_temp and
 *      public with shadowing domains, types, tables, views, functions,
 *      aggregates and operators whose code records that it ran and tries
 *      ALTER ROLE ... SUPERUSER; it then calls every function of schema
 *      pgqueue and reads every view, with pg_temp and public first in its
 *      search_path and with the default one.  Nothing of its own runs
 *      inside pgqueue and it does not become superuser.
 *   d. options beyond their bounds (finding 4) are refused with 22023 at
 *      queue_create, queue_alter and queue_set, and at the bounds a queue
 *      works; the call-time bounds of queue_pop, queue_extend and queue_fail
 *   e. item 7: the error text of queue_fail is kept to 2000 characters;
 *      _maintain_queue and _changed_tids answer clearly
 *
 * Against pgqueue 0.1.0 (search_path = pg_catalog, pgqueue: pg_temp is
 * then searched first for types) the domain trick of (a) makes the role
 * superuser: a pg_temp.text domain whose CHECK runs ALTER ROLE ...
 * SUPERUSER fires inside pgqueue.queue_create, which runs as the
 * extension's owner.
 *
 * (a) must come before any call of a pgqueue function in this session: a
 * PL/pgSQL function resolves the types of its variables when it is first
 * compiled in a session, and the library keeps its plans, so calls made
 * before the shadows exist would hide a function that resolves a name to
 * one of them.  The shadows stay for (d) and (e) (pgTAP's own functions
 * were compiled with them; evil() is no longer armed), which therefore
 * name pg_catalog's types where a shadow would take the name.
 */
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off

BEGIN;
SELECT plan(165);

CREATE TEMP VIEW sec_ext_functions AS
SELECT p.oid, p.oid::regprocedure::text AS signature, p.pronamespace::regnamespace::text AS schema,
	   p.prosecdef, p.proconfig, p.proacl, p.proowner
  FROM pg_proc p
  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
 WHERE d.refclassid = 'pg_extension'::regclass
   AND d.refobjid = (SELECT e.oid FROM pg_extension e WHERE e.extname = 'pgqueue');
GRANT SELECT ON sec_ext_functions TO PUBLIC;

/* ------------------------------------------------------------------------
 * b. every function pins its search_path
 * ------------------------------------------------------------------------ */

SELECT ok((SELECT count(*) FROM sec_ext_functions) >= 80,
		  'the functions of the extension are found through pg_depend');
SELECT is_empty($$SELECT p.oid::regprocedure::text FROM pg_proc p
				  WHERE p.pronamespace IN ('pgqueue'::regnamespace, 'pgqueue_internal'::regnamespace)
				 EXCEPT SELECT signature FROM sec_ext_functions$$,
				'every function in schemas pgqueue and pgqueue_internal belongs to the extension');
SELECT is_empty($$SELECT signature, proconfig FROM sec_ext_functions
				  WHERE NOT coalesce('search_path=pg_catalog, pgqueue, pg_temp' = ANY (proconfig), false)
				  ORDER BY signature$$,
				'every function of the extension has SET search_path = pg_catalog, pgqueue, pg_temp');

/* ------------------------------------------------------------------------
 * c. SECURITY DEFINER only where meant; nothing executable by PUBLIC
 * ------------------------------------------------------------------------ */

SELECT is_empty($$SELECT signature FROM sec_ext_functions WHERE schema = 'pgqueue' AND prosecdef$$,
				'no function of schema pgqueue is SECURITY DEFINER');
SELECT results_eq($$SELECT signature FROM sec_ext_functions WHERE prosecdef ORDER BY signature$$,
				  $$VALUES ('pgqueue_internal._block_stats(integer,integer)'),
						   ('pgqueue_internal._counters(text)'),
						   ('pgqueue_internal._job_claim_rows(integer,bigint,integer,text)'),
						   ('pgqueue_internal._job_state(integer,bigint,integer,text)'),
						   ('pgqueue_internal._key_blocked(integer,text,bigint)'),
						   ('pgqueue_internal._queue_stats(integer,integer[])')$$,
				  'the only SECURITY DEFINER functions are the helpers of the views');
SELECT is_empty($$SELECT signature, proacl FROM sec_ext_functions
				  WHERE proacl IS NULL
					 OR EXISTS (SELECT 1 FROM aclexplode(proacl) a WHERE a.grantee = 0)
				  ORDER BY signature$$,
				'no function of the extension is executable by PUBLIC');
SELECT results_eq($$SELECT f.signature, a.grantee::regrole::text, a.privilege_type
					  FROM sec_ext_functions f, aclexplode(f.proacl) a
					 WHERE f.schema = 'pgqueue_internal' AND a.grantee <> f.proowner
					 ORDER BY 1, 2$$,
				  $$VALUES ('pgqueue_internal._block_stats(integer,integer)', 'pgqueue_monitor', 'EXECUTE'),
						   ('pgqueue_internal._counters(text)', 'pgqueue_monitor', 'EXECUTE'),
						   ('pgqueue_internal._job_claim_rows(integer,bigint,integer,text)',
							'pgqueue_monitor', 'EXECUTE'),
						   ('pgqueue_internal._job_state(integer,bigint,integer,text)',
							'pgqueue_monitor', 'EXECUTE'),
						   ('pgqueue_internal._key_blocked(integer,text,bigint)', 'pgqueue_monitor', 'EXECUTE'),
						   ('pgqueue_internal._queue_stats(integer,integer[])', 'pgqueue_monitor', 'EXECUTE'),
						   ('pgqueue_internal._state("char",timestamp with time zone,timestamp with time zone)',
							'pgqueue_monitor', 'EXECUTE')$$,
				  'of the internal functions only the seven that the views call are granted, to pgqueue_monitor only');

/* ------------------------------------------------------------------------
 * a. finding 1: shadowing objects of an unprivileged role
 * ------------------------------------------------------------------------ */

CREATE ROLE pgq_sec_evil NOLOGIN;
GRANT pgqueue_producer, pgqueue_consumer, pgqueue_monitor, pgqueue_admin TO pgq_sec_evil;
GRANT CREATE ON SCHEMA public TO pgq_sec_evil;
-- the ids of the queues the role creates: the shadows name their tables
SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END AS sec_qid
  FROM pgqueue.queue_id_seq \gset

SET ROLE pgq_sec_evil;
SET pgq_sec.qid = :sec_qid;

SELECT throws_ok($$SELECT pgqueue_internal._maintain_queue(999)$$, '42501',
				 'permission denied for schema pgqueue_internal',
				 'the role may not call _maintain_queue');
SELECT throws_ok($$SELECT pgqueue_internal._changed_tids('pg_class'::regclass, '0/0')$$, '42501',
				 'permission denied for schema pgqueue_internal',
				 'the role may not call _changed_tids');

/*
 * The role's own tables and functions, made before any shadow exists.
 * evil() does nothing unless pgq_sec.armed is on (only while pgqueue is
 * called, so that pgTAP, which runs with the same pg_temp, is left alone);
 * then it tries to make the role superuser and records who ran it.  Its
 * own statements name every operator, since public.= calls evil() too.
 */
CREATE TABLE public.evil_log (
	n bigserial,
	who pg_catalog.name,
	escalated pg_catalog.bool,
	path pg_catalog.text
);
CREATE TABLE public.sec_maint (queue pg_catalog.text, result pg_catalog.jsonb);

CREATE FUNCTION public.evil(anyelement) RETURNS pg_catalog.bool
LANGUAGE plpgsql AS $$
DECLARE
	escalated pg_catalog.bool := false;
BEGIN
	IF NOT COALESCE(pg_catalog.current_setting('pgq_sec.armed', true), 'off')
		   OPERATOR(pg_catalog.=) 'on' THEN
		RETURN true;
	END IF;
	BEGIN
		EXECUTE 'ALTER ROLE pgq_sec_evil SUPERUSER';
		escalated := true;
	EXCEPTION WHEN insufficient_privilege THEN
		NULL;
	END;
	INSERT INTO public.evil_log (who, escalated, path)
	VALUES (CURRENT_USER, escalated, pg_catalog.current_setting('search_path'));
	RETURN true;
END
$$;

/*
 * sec_try: run one statement with the given search_path and evil armed;
 * 'ok', or the error, or what evil recorded meanwhile
 */
CREATE FUNCTION public.sec_try(path pg_catalog.text, stmt pg_catalog.text)
RETURNS pg_catalog.text
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
DECLARE
	before pg_catalog.int8 := (SELECT pg_catalog.max(l.n) FROM public.evil_log l);
	result pg_catalog.text := 'ok';
BEGIN
	BEGIN
		PERFORM pg_catalog.set_config('search_path', path, true);
		PERFORM pg_catalog.set_config('pgq_sec.armed', 'on', true);
		EXECUTE stmt;
		PERFORM pg_catalog.set_config('pgq_sec.armed', 'off', true);
		PERFORM pg_catalog.set_config('search_path', 'pg_catalog', true);
	EXCEPTION WHEN OTHERS THEN
		result := pg_catalog.format('error %s: %s', SQLSTATE, SQLERRM);
	END;
	IF EXISTS (SELECT 1 FROM public.evil_log l
				WHERE l.n OPERATOR(pg_catalog.>) COALESCE(before, 0)) THEN
		result := (SELECT pg_catalog.format('evil ran: %s', pg_catalog.string_agg(
						pg_catalog.format('as %s (escalated: %s, search_path %s)',
										  l.who, l.escalated, l.path), '; '))
					 FROM public.evil_log l WHERE l.n OPERATOR(pg_catalog.>) COALESCE(before, 0));
	END IF;
	RETURN result;
END
$$;

/*
 * The calls: every function of schema pgqueue and every view (the
 * internal functions that the role may execute, those the views call, are
 * out of its reach: it has no USAGE on schema pgqueue_internal); %1$L is
 * the queue.  The statements name no operator, type or function that the
 * shadows below could take over in the role's own statement: what runs of
 * the role's is then only what pgqueue runs.
 */
CREATE TABLE public.sec_calls (n pg_catalog.int4, target pg_catalog.text, tmpl pg_catalog.text);
INSERT INTO public.sec_calls VALUES
(1, 'pgqueue.queue_create(text,bigint,interval,integer,interval,interval,double precision,boolean,interval,boolean,interval,double precision,integer,integer,bigint,bigint,double precision,double precision,double precision,double precision,jsonb)',
 $s$SELECT pgqueue.queue_create(%1$L, block_size => 100, notify => true, max_attempts => 5)$s$),
(2, 'pgqueue.queue_alter(text,interval,integer,interval,interval,double precision,boolean,interval,boolean,interval,double precision,integer,integer,bigint,bigint,double precision,double precision,double precision,double precision,jsonb)',
 $s$SELECT pgqueue.queue_alter(%1$L, max_attempts => 4, retention => '1 hour', tenant_weights => '{"t": 2}')$s$),
(3, 'pgqueue.queue_set(text,text,text)',
 $s$SELECT pgqueue.queue_set(%1$L, 'default_lease', '1 minute')$s$),
(4, 'pgqueue.queue_grant(text,name,text[])',
 $s$SELECT pgqueue.queue_grant(%1$L, 'pgq_sec_evil', '{push,consume,admin}')$s$),
(5, 'pgqueue.queue_revoke(text,name,text[])',
 $s$SELECT pgqueue.queue_revoke(%1$L, 'pgq_sec_evil', '{admin}')$s$),
(6, 'pgqueue.queue_push(text,jsonb,text,integer,timestamp with time zone,text)',
 $s$SELECT pgqueue.queue_push(%1$L, '{"n": 1}')$s$),
(7, 'pgqueue.queue_push(text,jsonb,text,integer,timestamp with time zone,text)',
 $s$SELECT pgqueue.queue_push(%1$L, '{"n": 2}', key => 'k', priority => 1, run_at => '2000-01-01 00:00+00', tenant => 't')$s$),
(8, 'pgqueue.queue_push_batch(text,jsonb[],text[],integer[],timestamp with time zone,text[])',
 $s$SELECT pgqueue.queue_push_batch(%1$L, '{"{\"n\": 3}","{\"n\": 4}","{\"n\": 5}","{\"n\": 6}"}', keys => '{a,b,c,d}', priorities => '{1,1,1,1}', run_at => '2000-01-01 00:00+00', tenants => '{t,u,u,u}')$s$),
(9, 'pgqueue.queue_pop(text,integer,interval,interval)',
 $s$SELECT * FROM pgqueue.queue_pop(%1$L, 10, lease => '5 minutes', wait => '0')$s$),
(10, 'pgqueue.queues', $s$SELECT * FROM pgqueue.queues$s$),
(11, 'pgqueue.jobs', $s$SELECT * FROM pgqueue.jobs$s$),
(12, 'pgqueue.job_history', $s$SELECT * FROM pgqueue.job_history$s$),
(13, 'pgqueue.blocks', $s$SELECT * FROM pgqueue.blocks$s$),
(14, 'pgqueue.stats', $s$SELECT * FROM pgqueue.stats$s$),
(15, 'pgqueue.maintenance', $s$SELECT * FROM pgqueue.maintenance$s$),
(16, 'pgqueue.queue_extend(text,bigint,interval,integer)',
 $s$SELECT pgqueue.queue_extend(%1$L, 1, '10 minutes', 1)$s$),
(17, 'pgqueue.queue_ack(text,bigint,integer)', $s$SELECT pgqueue.queue_ack(%1$L, 1, 1)$s$),
(18, 'pgqueue.queue_ack(text,bigint[],integer[])',
 $s$SELECT pgqueue.queue_ack(%1$L, ARRAY[2, 3]::bigint[], ARRAY[1, 1])$s$),
(19, 'pgqueue.queue_fail(text,bigint,text,interval,integer)',
 $s$SELECT pgqueue.queue_fail(%1$L, 4, 'boom', retry_in => '1 hour', attempt => 1)$s$),
(20, 'pgqueue.queue_release(text,bigint,integer)', $s$SELECT pgqueue.queue_release(%1$L, 5, 1)$s$),
(21, 'pgqueue.queue_retry(text,bigint)', $s$SELECT pgqueue.queue_retry(%1$L, 4)$s$),
(22, 'pgqueue.queue_abort(text,bigint,text)', $s$SELECT pgqueue.queue_abort(%1$L, 6, 'stop')$s$),
(23, 'pgqueue.queue_retry(text,text,text,timestamp with time zone,timestamp with time zone)',
 $s$SELECT pgqueue.queue_retry(%1$L, 'aborted', error_like => 'st%%', since => '2000-01-01 00:00+00', until => '3000-01-01 00:00+00')$s$),
(24, 'pgqueue.queue_abort(text,text,text,text,timestamp with time zone,timestamp with time zone)',
 $s$SELECT pgqueue.queue_abort(%1$L, 'available', 'bulk', error_like => NULL, since => '2000-01-01 00:00+00', until => '3000-01-01 00:00+00')$s$),
(25, 'pgqueue.maintain(text)', $s$INSERT INTO public.sec_maint SELECT %1$L, pgqueue.maintain(%1$L)$s$),
(26, 'pgqueue.maintain(text)', $s$INSERT INTO public.sec_maint SELECT %1$L, pgqueue.maintain()$s$),
(27, 'pgqueue.queue_pause(text)', $s$SELECT pgqueue.queue_pause(%1$L)$s$),
(28, 'pgqueue.queue_resume(text)', $s$SELECT pgqueue.queue_resume(%1$L)$s$),
(29, 'pgqueue.queue_purge(text)', $s$SELECT pgqueue.queue_purge(%1$L)$s$),
(30, 'pgqueue.queue_drop(text,boolean)', $s$SELECT pgqueue.queue_drop(%1$L, true)$s$);

SELECT is_empty($$SELECT f.signature FROM sec_ext_functions f
				   WHERE f.schema = 'pgqueue' AND has_function_privilege('pgq_sec_evil', f.oid, 'EXECUTE')
				  EXCEPT SELECT target FROM public.sec_calls$$,
				'the calls below cover every function of schema pgqueue the role may execute');
SELECT is_empty($$SELECT c.oid::regclass::text FROM pg_class c
				   WHERE c.relnamespace IN ('pgqueue'::regnamespace, 'pgqueue_internal'::regnamespace,
											'pgqueue_data'::regnamespace)
					 AND has_table_privilege('pgq_sec_evil', c.oid, 'SELECT')
				  EXCEPT SELECT target FROM public.sec_calls$$,
				'the calls below read every view and table of pgqueue the role may read');

/*
 * Shadowing functions, aggregates and operators, in public (and the
 * functions in pg_temp too, where PostgreSQL never looks for them
 * unqualified).  The built-in ones give the built-in's answer after evil(),
 * so that whatever picks them up by mistake outside pgqueue still works.
 */
DO $$
DECLARE
	f record;
BEGIN
	-- every function name of pgqueue, with its argument types
	FOR f IN SELECT DISTINCT p.proname, pg_catalog.oidvectortypes(p.proargtypes) AS args
			   FROM pg_catalog.pg_proc p
			  WHERE p.pronamespace IN ('pgqueue'::pg_catalog.regnamespace,
									   'pgqueue_internal'::pg_catalog.regnamespace) LOOP
		EXECUTE pg_catalog.format('CREATE FUNCTION public.%I(%s) RETURNS pg_catalog.void'
								  ' LANGUAGE plpgsql AS %L',
								  f.proname, f.args, 'BEGIN PERFORM public.evil(1); END');
		EXECUTE pg_catalog.format('CREATE FUNCTION pg_temp.%I(%s) RETURNS pg_catalog.void'
								  ' LANGUAGE plpgsql AS %L',
								  f.proname, f.args, 'BEGIN PERFORM public.evil(1); END');
	END LOOP;
	-- binary operators on the types pgqueue works with
	FOR f IN SELECT o.oid, o.oprname, o.oprleft::pg_catalog.regtype AS l,
					o.oprright::pg_catalog.regtype AS r, o.oprresult::pg_catalog.regtype AS res
			   FROM pg_catalog.pg_operator o
			  WHERE o.oprkind = 'b'
				AND o.oprname IN ('=', '<>', '<', '>', '<=', '>=', '||', '+', '-', '*', '/', '~',
								  '~~', '~~*', '->', '->>', '@>', '<@', '&&', '?')
				AND o.oprleft IN ('text'::pg_catalog.regtype, 'int8'::pg_catalog.regtype,
								  'int4'::pg_catalog.regtype, 'int2'::pg_catalog.regtype,
								  '"char"'::pg_catalog.regtype, 'name'::pg_catalog.regtype,
								  'timestamptz'::pg_catalog.regtype,
								  'interval'::pg_catalog.regtype, 'jsonb'::pg_catalog.regtype,
								  'float8'::pg_catalog.regtype, 'bool'::pg_catalog.regtype,
								  'oid'::pg_catalog.regtype, 'tid'::pg_catalog.regtype,
								  'pg_lsn'::pg_catalog.regtype, 'numeric'::pg_catalog.regtype)
				AND o.oprright IN ('text'::pg_catalog.regtype, 'int8'::pg_catalog.regtype,
								   'int4'::pg_catalog.regtype, 'int2'::pg_catalog.regtype,
								   '"char"'::pg_catalog.regtype, 'name'::pg_catalog.regtype,
								   'timestamptz'::pg_catalog.regtype,
								   'interval'::pg_catalog.regtype, 'jsonb'::pg_catalog.regtype,
								   'float8'::pg_catalog.regtype, 'bool'::pg_catalog.regtype,
								   'oid'::pg_catalog.regtype, 'tid'::pg_catalog.regtype,
								   'pg_lsn'::pg_catalog.regtype, 'numeric'::pg_catalog.regtype,
								   'text[]'::pg_catalog.regtype) LOOP
		EXECUTE pg_catalog.format('CREATE FUNCTION public.%I(%s, %s) RETURNS %s LANGUAGE sql AS %L',
								  'evil_op_' OPERATOR(pg_catalog.||) f.oid, f.l, f.r, f.res,
								  pg_catalog.format('SELECT public.evil(1); SELECT $1 OPERATOR(pg_catalog.%s) $2',
													f.oprname));
		EXECUTE pg_catalog.format('CREATE OPERATOR public.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = public.%I)',
								  f.oprname, f.l, f.r, 'evil_op_' OPERATOR(pg_catalog.||) f.oid);
	END LOOP;
END
$$;
CREATE OPERATOR pg_temp.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.evil_op_98);
CREATE OPERATOR pg_temp.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = public.evil_op_410);

-- built-in functions and aggregates, in forms that PL/pgSQL and SQL allow
CREATE FUNCTION public.format(pg_catalog.text) RETURNS pg_catalog.text LANGUAGE sql
AS 'SELECT public.evil(1); SELECT pg_catalog.format($1)';
CREATE FUNCTION public.format(pg_catalog.text, pg_catalog.text) RETURNS pg_catalog.text LANGUAGE sql
AS 'SELECT public.evil(1); SELECT pg_catalog.format($1, $2)';
CREATE FUNCTION public.format(pg_catalog.text, pg_catalog.text, pg_catalog.text)
RETURNS pg_catalog.text LANGUAGE sql
AS 'SELECT public.evil(1); SELECT pg_catalog.format($1, $2, $3)';
CREATE FUNCTION public.unnest(anyarray) RETURNS SETOF anyelement LANGUAGE sql
AS 'SELECT public.evil(1); SELECT pg_catalog.unnest($1)';
CREATE FUNCTION public."coalesce"(anyelement, anyelement) RETURNS anyelement LANGUAGE sql
AS 'SELECT public.evil(1); SELECT COALESCE($1, $2)';
CREATE FUNCTION public.jsonb_build_object(pg_catalog.text, anyelement) RETURNS pg_catalog.jsonb
LANGUAGE sql AS 'SELECT public.evil(1); SELECT pg_catalog.jsonb_build_object($1, $2)';
CREATE FUNCTION public.now() RETURNS pg_catalog.timestamptz LANGUAGE sql
AS 'SELECT public.evil(1); SELECT pg_catalog.now()';
CREATE FUNCTION public.clock_timestamp() RETURNS pg_catalog.timestamptz LANGUAGE sql
AS 'SELECT public.evil(1); SELECT pg_catalog.clock_timestamp()';
CREATE FUNCTION public.nextval(pg_catalog.regclass) RETURNS pg_catalog.int8 LANGUAGE sql
AS 'SELECT public.evil(1); SELECT pg_catalog.nextval($1)';
CREATE FUNCTION public.set_config(pg_catalog.text, pg_catalog.text, pg_catalog.bool)
RETURNS pg_catalog.text LANGUAGE sql
AS 'SELECT public.evil(1); SELECT pg_catalog.set_config($1, $2, $3)';
CREATE FUNCTION public.current_setting(pg_catalog.text) RETURNS pg_catalog.text LANGUAGE sql
AS 'SELECT public.evil(1); SELECT pg_catalog.current_setting($1)';
CREATE FUNCTION public.length(pg_catalog.text) RETURNS pg_catalog.int4 LANGUAGE sql
AS 'SELECT public.evil(1); SELECT pg_catalog.length($1)';
CREATE FUNCTION public.array_to_string(anyarray, pg_catalog.text) RETURNS pg_catalog.text
LANGUAGE sql AS 'SELECT public.evil(1); SELECT pg_catalog.array_to_string($1, $2)';
CREATE FUNCTION public.cardinality(anyarray) RETURNS pg_catalog.int4 LANGUAGE sql
AS 'SELECT public.evil(1); SELECT pg_catalog.cardinality($1)';
CREATE FUNCTION public.jsonb_object_keys(pg_catalog.jsonb) RETURNS SETOF pg_catalog.text
LANGUAGE sql AS 'SELECT public.evil(1); SELECT pg_catalog.jsonb_object_keys($1)';
CREATE FUNCTION public.jsonb_strip_nulls(pg_catalog.jsonb) RETURNS pg_catalog.jsonb LANGUAGE sql
AS 'SELECT public.evil(1); SELECT pg_catalog.jsonb_strip_nulls($1)';
CREATE FUNCTION public.pg_total_relation_size(pg_catalog.regclass) RETURNS pg_catalog.int8
LANGUAGE sql AS 'SELECT public.evil(1); SELECT pg_catalog.pg_total_relation_size($1)';
CREATE FUNCTION public.power(pg_catalog.float8, pg_catalog.float8) RETURNS pg_catalog.float8
LANGUAGE sql AS 'SELECT public.evil(1); SELECT pg_catalog.power($1, $2)';
CREATE FUNCTION public.pg_notify(pg_catalog.text, pg_catalog.text) RETURNS pg_catalog.void
LANGUAGE sql AS 'SELECT public.evil(1); SELECT pg_catalog.pg_notify($1, $2)';
CREATE FUNCTION public.to_char(pg_catalog.date, pg_catalog.text) RETURNS pg_catalog.text
LANGUAGE sql AS 'SELECT public.evil(1); SELECT pg_catalog.to_char($1, $2)';

CREATE FUNCTION public.evil_count(pg_catalog.int8) RETURNS pg_catalog.int8 LANGUAGE sql
AS 'SELECT public.evil(1); SELECT $1 OPERATOR(pg_catalog.+) 1';
CREATE FUNCTION public.evil_count_any(pg_catalog.int8, anyelement) RETURNS pg_catalog.int8
LANGUAGE sql AS 'SELECT public.evil(1); SELECT $1 OPERATOR(pg_catalog.+) 1';
CREATE FUNCTION public.evil_array_agg(anyarray, anyelement) RETURNS anyarray LANGUAGE sql
AS 'SELECT public.evil(1); SELECT pg_catalog.array_append($1, $2)';
CREATE FUNCTION public.evil_string_agg(pg_catalog.text, pg_catalog.text, pg_catalog.text)
RETURNS pg_catalog.text LANGUAGE sql
AS 'SELECT public.evil(1); SELECT pg_catalog.concat_ws($3, $1, $2)';
CREATE FUNCTION public.evil_bool_and(pg_catalog.bool, pg_catalog.bool) RETURNS pg_catalog.bool
LANGUAGE sql AS 'SELECT public.evil(1); SELECT $1 AND $2';
CREATE FUNCTION public.evil_sum(pg_catalog.int8, pg_catalog.int8) RETURNS pg_catalog.int8
LANGUAGE sql AS 'SELECT public.evil(1); SELECT COALESCE($1 OPERATOR(pg_catalog.+) $2, $2)';
CREATE FUNCTION public.evil_max(pg_catalog.int8, pg_catalog.int8) RETURNS pg_catalog.int8
LANGUAGE sql AS 'SELECT public.evil(1); SELECT GREATEST($1, $2)';
CREATE FUNCTION public.evil_min(pg_catalog.int8, pg_catalog.int8) RETURNS pg_catalog.int8
LANGUAGE sql AS 'SELECT public.evil(1); SELECT LEAST($1, $2)';
CREATE AGGREGATE public.count(*) (SFUNC = public.evil_count, STYPE = pg_catalog.int8, INITCOND = '0');
CREATE AGGREGATE public.count(anyelement) (SFUNC = public.evil_count_any, STYPE = pg_catalog.int8,
										   INITCOND = '0');
CREATE AGGREGATE public.array_agg(anyelement) (SFUNC = public.evil_array_agg, STYPE = anyarray,
											   INITCOND = '{}');
CREATE AGGREGATE public.string_agg(pg_catalog.text, pg_catalog.text) (SFUNC = public.evil_string_agg,
																	  STYPE = pg_catalog.text);
CREATE AGGREGATE public.bool_and(pg_catalog.bool) (SFUNC = public.evil_bool_and,
												   STYPE = pg_catalog.bool);
CREATE AGGREGATE public.sum(pg_catalog.int8) (SFUNC = public.evil_sum, STYPE = pg_catalog.int8);
CREATE AGGREGATE public.max(pg_catalog.int8) (SFUNC = public.evil_max, STYPE = pg_catalog.int8);
CREATE AGGREGATE public.min(pg_catalog.int8) (SFUNC = public.evil_min, STYPE = pg_catalog.int8);

/*
 * Tables and views (and so types) named like pgqueue's relations and
 * types, and like the tables and sequences of the role's queues: reading
 * one runs evil()
 */
DO $$
DECLARE
	n pg_catalog.text;
BEGIN
	FOR n IN SELECT c.relname::pg_catalog.text FROM pg_catalog.pg_class c
			  WHERE c.relnamespace IN ('pgqueue'::pg_catalog.regnamespace,
									   'pgqueue_data'::pg_catalog.regnamespace)
				AND c.relkind IN ('r', 'v', 'S', 'c', 'p')
			 UNION SELECT t.typname::pg_catalog.text FROM pg_catalog.pg_type t
			  WHERE t.typnamespace = 'pgqueue'::pg_catalog.regnamespace AND t.typtype = 'c'
			 UNION SELECT pg_catalog.format('%s_%s_%s', k, q, b)
			   FROM pg_catalog.unnest(ARRAY['j', 's']) k,
					pg_catalog.generate_series(pg_catalog.current_setting('pgq_sec.qid')::int, pg_catalog.current_setting('pgq_sec.qid')::int + 2) q,
					pg_catalog.unnest(ARRAY['0', '1', '2', 'c1', 'c2']) b
			 UNION SELECT 'seq_' OPERATOR(pg_catalog.||) q
			   FROM pg_catalog.generate_series(pg_catalog.current_setting('pgq_sec.qid')::int, pg_catalog.current_setting('pgq_sec.qid')::int + 2) q
			 UNION SELECT pg_catalog.format('a_%s_%s', q, pg_catalog.to_char(pg_catalog.now(), 'YYYYMMDD'))
			   FROM pg_catalog.generate_series(pg_catalog.current_setting('pgq_sec.qid')::int, pg_catalog.current_setting('pgq_sec.qid')::int + 2) q
	LOOP
		EXECUTE pg_catalog.format('CREATE VIEW pg_temp.%I AS SELECT 1 AS x WHERE public.evil(1)', n);
		EXECUTE pg_catalog.format('CREATE VIEW public.%I AS SELECT 1 AS x WHERE public.evil(1)', n);
	END LOOP;
END
$$;

/*
 * Domains named like the types pgqueue's statements use, in pg_temp and in
 * public: a value cast to one runs evil() (this is the attack of the
 * issue; some of the names are keywords that PostgreSQL always reads as the
 * built-in type, it allows the domains all the same)
 */
DO $$
DECLARE
	t record;
BEGIN
	FOR t IN SELECT * FROM (VALUES ('jsonb', 'jsonb'), ('json', 'json'), ('text', 'text'),
								   ('varchar', 'varchar'), ('name', 'name'), ('char', 'char'),
								   ('int8', 'int8'), ('int4', 'int4'), ('int2', 'int2'),
								   ('bigint', 'int8'), ('integer', 'int4'), ('smallint', 'int2'),
								   ('numeric', 'numeric'), ('float8', 'float8'),
								   ('float4', 'float4'), ('regclass', 'regclass'),
								   ('regnamespace', 'regnamespace'), ('regrole', 'regrole'),
								   ('oid', 'oid'), ('tid', 'tid'), ('xid', 'xid'),
								   ('xid8', 'xid8'), ('pg_lsn', 'pg_lsn'),
								   ('pg_snapshot', 'pg_snapshot'), ('interval', 'interval'),
								   ('timestamptz', 'timestamptz'), ('timestamp', 'timestamp'),
								   ('date', 'date'), ('boolean', 'bool'), ('bool', 'bool'),
								   ('bytea', 'bytea')) v(shadow, base) LOOP
		EXECUTE pg_catalog.format('CREATE DOMAIN pg_temp.%I AS pg_catalog.%I CHECK (public.evil(VALUE))',
								  t.shadow, t.base);
		EXECUTE pg_catalog.format('CREATE DOMAIN public.%I AS pg_catalog.%I CHECK (public.evil(VALUE))',
								  t.shadow, t.base);
	END LOOP;
END
$$;

SELECT is((SELECT count(*) FROM pg_type t
			WHERE t.typnamespace IN (pg_my_temp_schema(), 'public'::regnamespace) AND t.typtype = 'd'
			  AND t.typname IN ('jsonb', 'text', 'int8', 'int4', 'bigint', 'integer', 'regclass',
								'float8', 'interval', 'timestamptz', 'boolean', 'name', 'char')),
		  26::bigint, 'the shadowing domains are in place, in pg_temp and public');

/*
 * Every call, with pg_temp and public before pgqueue and pg_catalog in the
 * search_path, then (a second queue) with the default search_path, where
 * pg_temp comes first for types and tables
 */
SELECT format('SELECT is(public.sec_try(%L, %L), %L, %L);', p.path, format(c.tmpl, p.queue),
			  'ok', format('%s: %s', p.label, c.tmpl))
  FROM public.sec_calls c
 CROSS JOIN (VALUES (1, 'pg_temp, public, pgqueue, pg_catalog', 'sec_a',
					 'search_path pg_temp, public first'),
					(2, '"$user", public', 'sec_b', 'default search_path')) p(n, path, queue, label)
 ORDER BY p.n, c.n \gexec

SELECT results_eq($$SELECT queue, result->'errors' FROM public.sec_maint ORDER BY queue, result->'errors'$$,
				  $$VALUES ('sec_a', '[]'::pg_catalog.jsonb), ('sec_a', '[]'), ('sec_b', '[]'), ('sec_b', '[]')$$,
				  'maintain under the shadows had no error');

RESET ROLE;
SELECT is_empty($$SELECT who, escalated, path FROM public.evil_log$$,
				'nothing of the role''s ran inside pgqueue during the calls');
SELECT is((SELECT rolsuper FROM pg_roles WHERE rolname = 'pgq_sec_evil'), false,
		  'the role is not superuser after the calls');

/* The issue's statements as they are: at top level, in the role's session */
SET ROLE pgq_sec_evil;
SET search_path = pg_temp, public, pgqueue, pg_catalog;
SET pgq_sec.armed = on;
SELECT pgqueue.queue_create('sec_c') \g /dev/null
SELECT pgqueue.queue_push('sec_c', '{"x":1}') \g /dev/null
SELECT * FROM pgqueue.queue_pop('sec_c') \g /dev/null
SELECT pgqueue.queue_ack('sec_c', 1) \g /dev/null
SELECT * FROM pgqueue.jobs \g /dev/null
SELECT pgqueue.maintain() \g /dev/null
SELECT pgqueue.queue_drop('sec_c') \g /dev/null
RESET pgq_sec.armed;
RESET search_path;

RESET ROLE;
SELECT is_empty($$SELECT who, escalated, path FROM public.evil_log$$,
				'nothing of the role''s ran inside pgqueue during the statements at top level');
SELECT is((SELECT rolsuper FROM pg_roles WHERE rolname = 'pgq_sec_evil'), false,
		  'the role is not superuser at the end');
SELECT is_empty($$SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid
				   WHERE m.member = 'pgq_sec_evil'::pg_catalog.regrole
				  EXCEPT VALUES ('pgqueue_producer'), ('pgqueue_consumer'), ('pgqueue_monitor'),
								('pgqueue_admin')$$,
				'the role is a member of no other role');


/* ------------------------------------------------------------------------
 * d. bounds of the options (finding 4)
 * ------------------------------------------------------------------------ */

-- queue_create: far beyond and just beyond each bound
SELECT throws_ok(format('SELECT pgqueue.queue_create(%L, %s => %L)', 'b', o, v), '22023',
				 'invalid option for queue "b"', format('queue_create with %s => %L', o, v))
  FROM (VALUES (1, 'default_lease', '300000 years'), (2, 'default_lease', '1 year 1 second'),
			   (3, 'backoff_base', '300000 years'), (4, 'backoff_cap', '300000 years'),
			   (5, 'backoff_cap', '1 year 1 second'),
			   (6, 'retention', '300000 years'), (7, 'retention', '100 years 1 second'),
			   (8, 'archive_retention', '300000 years'),
			   (9, 'archive_retention', '100 years 1 second'),
			   (10, 'push_rate', '1000000001'), (11, 'tenant_push_rate', '1000000001'),
			   (12, 'pop_rate', '1000000001'), (13, 'tenant_pop_rate', '1000000001')) t(n, o, v)
 ORDER BY n;
SELECT throws_ok($$SELECT pgqueue.queue_create('b', backoff_base => '1 year 1 second',
											   backoff_cap => '1 year 1 second')$$,
				 '22023', 'invalid option for queue "b"',
				 'queue_create with backoff_base and backoff_cap of 1 year 1 second');
SELECT is_empty($$SELECT * FROM pgqueue.queue WHERE name = 'b'$$,
				'the refused queue_create calls left no queue');

-- at the bounds a queue is created
SELECT lives_ok($$SELECT pgqueue.queue_create('b', block_size => 100, default_lease => '1 year',
											  backoff_base => '1 year', backoff_cap => '1 year',
											  retention => '100 years',
											  archive_retention => '100 years',
											  push_rate => 1e9, tenant_push_rate => 1e9,
											  pop_rate => 1e9, tenant_pop_rate => 1e9)$$,
				'queue_create with every interval and rate option at its bound');

CREATE TEMP VIEW sec_b_options AS
SELECT default_lease, backoff_base, backoff_cap, retention, archive_retention,
	   push_rate, tenant_push_rate, pop_rate, tenant_pop_rate
  FROM pgqueue.queue WHERE name = 'b';

-- queue_alter and queue_set: beyond each bound
SELECT throws_ok(format('SELECT pgqueue.queue_alter(%L, %s => %L)', 'b', o, v), '22023',
				 'invalid option for queue "b"', format('queue_alter with %s => %L', o, v))
  FROM (VALUES (1, 'default_lease', '300000 years'), (2, 'default_lease', '1 year 1 second'),
			   (3, 'backoff_base', '300000 years'), (4, 'backoff_base', '1 year 1 second'),
			   (5, 'backoff_cap', '300000 years'), (6, 'backoff_cap', '1 year 1 second'),
			   (7, 'retention', '300000 years'), (8, 'retention', '100 years 1 second'),
			   (9, 'archive_retention', '300000 years'),
			   (10, 'archive_retention', '100 years 1 second'),
			   (11, 'push_rate', '1000000001'), (12, 'pop_rate', '1000000001')) t(n, o, v)
 ORDER BY n;
SELECT throws_ok(format('SELECT pgqueue.queue_set(%L, %L, %L)', 'b', o, v), '22023',
				 'invalid option for queue "b"', format('queue_set of %s to %L', o, v))
  FROM (VALUES (1, 'default_lease', '300000 years'), (2, 'default_lease', '1 year 1 second'),
			   (3, 'backoff_base', '300000 years'), (4, 'backoff_base', '1 year 1 second'),
			   (5, 'backoff_cap', '300000 years'), (6, 'backoff_cap', '1 year 1 second'),
			   (7, 'retention', '300000 years'), (8, 'retention', '100 years 1 second'),
			   (9, 'archive_retention', '300000 years'),
			   (10, 'archive_retention', '100 years 1 second'),
			   (11, 'tenant_push_rate', '1000000001'),
			   (12, 'tenant_pop_rate', '1000000001')) t(n, o, v)
 ORDER BY n;
SELECT results_eq($$SELECT * FROM sec_b_options$$,
				  $$VALUES ('1 year'::interval, '1 year'::interval, '1 year'::interval,
							'100 years'::interval, '100 years'::interval,
							1e9::pg_catalog.float8, 1e9::pg_catalog.float8, 1e9::pg_catalog.float8, 1e9::pg_catalog.float8)$$,
				  'the refused queue_alter and queue_set calls changed nothing');

-- queue_alter and queue_set: at the bounds
SELECT lives_ok($$SELECT pgqueue.queue_alter('b', default_lease => '30 seconds',
											 backoff_base => '0', backoff_cap => '0',
											 retention => '0', archive_retention => '0',
											 push_rate => 0, pop_rate => 0)$$,
				'queue_alter to the lower bounds');
SELECT lives_ok($$SELECT pgqueue.queue_alter('b', default_lease => '1 year',
											 backoff_cap => '1 year', backoff_base => '1 year',
											 retention => '100 years',
											 archive_retention => '100 years',
											 push_rate => 1e9, pop_rate => 1e9)$$,
				'queue_alter to the upper bounds');
SELECT lives_ok(format('SELECT pgqueue.queue_set(%L, %L, %L)', 'b', o, v),
				format('queue_set of %s to %L', o, v))
  FROM (VALUES (1, 'default_lease', '1 year'), (2, 'backoff_cap', '1 year'),
			   (3, 'backoff_base', '1 year'), (4, 'retention', '100 years'),
			   (5, 'archive_retention', '100 years'), (6, 'tenant_push_rate', '1e9'),
			   (7, 'tenant_pop_rate', '1e9')) t(n, o, v)
 ORDER BY n;
SELECT results_eq($$SELECT * FROM sec_b_options$$,
				  $$VALUES ('1 year'::interval, '1 year'::interval, '1 year'::interval,
							'100 years'::interval, '100 years'::interval,
							1e9::pg_catalog.float8, 1e9::pg_catalog.float8, 1e9::pg_catalog.float8, 1e9::pg_catalog.float8)$$,
				  'queue "b" has every interval and rate option at its upper bound');

-- call-time bounds
SELECT is(pgqueue.queue_push_batch('b', ARRAY['{"b": 1}', '{"b": 2}', '{"b": 3}', '{"b": 4}']::pg_catalog.jsonb[]),
		  ARRAY[1, 2, 3, 4]::bigint[], 'push into the queue at the bounds');
SELECT throws_ok($$SELECT * FROM pgqueue.queue_pop('b', 1, lease => '1 year 1 second')$$, '22023',
				 'lease must be at most 1 year', 'queue_pop with a lease of 1 year 1 second');
SELECT throws_ok($$SELECT * FROM pgqueue.queue_pop('b', 1, lease => '300000 years')$$, '22023',
				 'lease must be at most 1 year', 'queue_pop with a lease of 300000 years');
SELECT throws_ok($$SELECT * FROM pgqueue.queue_pop('b', 1, wait => '1 day 1 second')$$, '22023',
				 'wait must be at most 1 day', 'queue_pop with a wait of 1 day 1 second');
SELECT throws_ok($$SELECT * FROM pgqueue.queue_pop('b', 1, wait => '300000 years')$$, '22023',
				 'wait must be at most 1 day', 'queue_pop with a wait of 300000 years');
SELECT results_eq($$SELECT job_id, lease_until BETWEEN now() + interval '1 year' - interval '1 minute'
											  AND now() + interval '1 year' + interval '1 minute'
					  FROM pgqueue.queue_pop('b', 1)$$,
				  $$VALUES (1::bigint, true)$$,
				  'queue_pop with the default lease of 1 year');
SELECT results_eq($$SELECT job_id FROM pgqueue.queue_pop('b', 1, lease => '1 year')$$,
				  $$VALUES (2::bigint)$$, 'queue_pop with a lease of exactly 1 year');
SET LOCAL statement_timeout = '60s';
SELECT results_eq($$SELECT job_id FROM pgqueue.queue_pop('b', 1, lease => '1 minute', wait => '1 day')$$,
				  $$VALUES (3::bigint)$$,
				  'queue_pop with a wait of exactly 1 day returns an available job at once');
RESET statement_timeout;
SELECT throws_ok($$SELECT pgqueue.queue_extend('b', 1, '1 year 1 second')$$, '22023',
				 'lease must be at most 1 year', 'queue_extend with a lease of 1 year 1 second');
SELECT throws_ok($$SELECT pgqueue.queue_extend('b', 1, '300000 years')$$, '22023',
				 'lease must be at most 1 year', 'queue_extend with a lease of 300000 years');
SELECT ok(pgqueue.queue_extend('b', 3, '1 year') BETWEEN now() + interval '1 year' - interval '1 minute'
												   AND now() + interval '1 year' + interval '1 minute',
		  'queue_extend with a lease of exactly 1 year');
SELECT ok(pgqueue.queue_extend('b', 1) BETWEEN now() + interval '1 year' - interval '1 minute'
											AND now() + interval '1 year' + interval '1 minute',
		  'queue_extend with the default lease of 1 year');
SELECT throws_ok($$SELECT pgqueue.queue_fail('b', 1, 'e', retry_in => '1 year 1 second')$$, '22023',
				 'retry_in must be at most 1 year', 'queue_fail with retry_in of 1 year 1 second');
SELECT throws_ok($$SELECT pgqueue.queue_fail('b', 1, 'e', retry_in => '300000 years')$$, '22023',
				 'retry_in must be at most 1 year', 'queue_fail with retry_in of 300000 years');
SELECT is(pgqueue.queue_fail('b', 1, 'e', retry_in => '1 year'), 'failed',
		  'queue_fail with retry_in of exactly 1 year');
SELECT is(pgqueue.queue_fail('b', 2, 'e'), 'failed',
		  'queue_fail with the backoff at its bounds (1 year)');
SELECT lives_ok($$SELECT pgqueue.queue_ack('b', 3)$$, 'queue_ack in the queue at the bounds');
SELECT results_eq($$SELECT job_id, state, run_at > now() + interval '300 days'
					  FROM pgqueue.jobs WHERE queue = 'b' ORDER BY job_id$$,
				  $$VALUES (1::bigint, 'failed', true), (2, 'failed', true),
						   (3, 'succeeded', NULL), (4, 'available', false)$$,
				  'the failed jobs retry in about a year');
SELECT is(pgqueue.maintain('b')->'errors', '[]'::pg_catalog.jsonb,
		  'maintain of the queue at the bounds has no error');
SELECT is(pgqueue.maintain()->'errors', '[]'::pg_catalog.jsonb, 'maintain of every queue has no error');
SELECT is_empty($$SELECT * FROM pgqueue.maintenance$$, 'no queue is recorded as failing maintenance');

/* ------------------------------------------------------------------------
 * e. item 7: error text bounded, clear messages of internal functions
 * ------------------------------------------------------------------------ */

SELECT pgqueue.queue_create('e', max_attempts => 3) \g /dev/null
SELECT is(pgqueue.queue_push('e', '{"e": 1}'), 1::bigint, 'push a job to fail');
SELECT is((SELECT job_id FROM pgqueue.queue_pop('e')), 1::bigint, 'pop it');
SELECT is(pgqueue.queue_fail('e', 1, repeat('x', 100000), retry_in => '0'), 'failed',
		  'queue_fail with an error of 100000 characters');
SELECT is((SELECT length(last_error) FROM pgqueue.jobs WHERE queue = 'e' AND job_id = 1), 2000,
		  'pgqueue.jobs shows the first 2000 characters of the error');
SELECT is((SELECT job_id FROM pgqueue.queue_pop('e')), 1::bigint, 'pop it again');
SELECT is(pgqueue.queue_fail('e', 1, repeat('é', 100000), retry_in => '0'), 'failed',
		  'queue_fail with an error of 100000 two-byte characters');
SELECT results_eq($$SELECT length(last_error), last_error = repeat('é', 2000)
					  FROM pgqueue.jobs WHERE queue = 'e' AND job_id = 1$$,
				  $$VALUES (2000, true)$$,
				  'a multibyte error is cut after 2000 characters, not inside a character');
SELECT is((SELECT job_id FROM pgqueue.queue_pop('e')), 1::bigint, 'pop it a third time');
SELECT lives_ok($$SELECT pgqueue.queue_ack('e', 1)$$, 'and ack it');
SELECT results_eq($$SELECT seq, state, length(error) FROM pgqueue.job_history
					 WHERE queue = 'e' AND job_id = 1 ORDER BY seq$$,
				  $$VALUES (1, 'executing', NULL::integer), (2, 'failed', 2000), (3, 'executing', 2000),
						   (4, 'failed', 2000), (5, 'executing', 2000), (6, 'succeeded', 2000)$$,
				  'no status row of the job holds more than 2000 characters of error');
SELECT is(pgqueue.queue_push('e', '{"e": 2}'), 2::bigint, 'push a job to abort');
SELECT lives_ok($$SELECT pgqueue.queue_abort('e', 2, repeat('r', 100000))$$,
				'queue_abort with a reason of 100000 characters');

SELECT is((SELECT length(last_error) FROM pgqueue.jobs WHERE queue = 'e' AND job_id = 2), 2000,
		  'an abort reason is kept to 2000 characters too');
SELECT throws_ok($$SELECT pgqueue_internal._maintain_queue(999)$$, '42704',
				 'queue with id 999 does not exist', '_maintain_queue of an unknown queue id');
SELECT throws_ok($$SELECT pgqueue_internal._changed_tids('pg_class'::pg_catalog.regclass, '0/0')$$, '42809',
				 '"pg_class" is not a table of pgqueue', '_changed_tids of a table outside pgqueue_data');

SELECT * FROM finish();
ROLLBACK;
