/*
 * privileges.sql: the group roles and what each may use.
 *
 *   pgqueue_producer  queue_push, queue_push_batch
 *   pgqueue_consumer  queue_pop, queue_ack, queue_fail, queue_extend,
 *                     queue_release
 *   pgqueue_monitor   the views
 *   pgqueue_admin     every other function of schema pgqueue: queue
 *                     management, forced retry and abort, maintain, rights
 *
 * Roles belong to the cluster: they are created by the first database
 * that installs pgqueue and shared by the others.  The grants belong to
 * this database's objects and go with them; USAGE on schema pgqueue is
 * granted to PUBLIC (it gives nothing by itself), so that DROP EXTENSION
 * leaves no grant to a role behind.  Rights on single queues narrow these
 * further (queue_grant).
 */

DO $$
DECLARE
	r text;
BEGIN
	FOREACH r IN ARRAY ARRAY['pgqueue_producer', 'pgqueue_consumer', 'pgqueue_monitor',
							 'pgqueue_admin'] LOOP
		IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
			EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
		END IF;
	END LOOP;
END
$$;

/*
 * Functions are executable by PUBLIC when created: take that back from the
 * new ones (an upgrade keeps the grants made on the functions it replaces)
 */
DO $$
DECLARE
	f regprocedure;
BEGIN
	FOR f IN SELECT p.oid FROM pg_catalog.pg_proc p
			  WHERE p.pronamespace IN ('pgqueue'::regnamespace, 'pgqueue_internal'::regnamespace)
				AND p.proacl IS NULL LOOP
		EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
	END LOOP;
END
$$;

GRANT USAGE ON SCHEMA pgqueue TO PUBLIC;

GRANT EXECUTE ON FUNCTION
	pgqueue.queue_push(text, jsonb, text, integer, timestamptz, text),
	pgqueue.queue_push_batch(text, jsonb[], text[], integer[], timestamptz, text[])
	TO pgqueue_producer;

GRANT EXECUTE ON FUNCTION
	pgqueue.queue_pop(text, integer, interval, interval),
	pgqueue.queue_ack(text, bigint, integer),
	pgqueue.queue_ack(text, bigint[], integer[]),
	pgqueue.queue_fail(text, bigint, text, interval, integer),
	pgqueue.queue_extend(text, bigint, interval, integer),
	pgqueue.queue_release(text, bigint, integer)
	TO pgqueue_consumer;

GRANT SELECT ON pgqueue.queues, pgqueue.jobs, pgqueue.job_history, pgqueue.blocks,
	pgqueue.stats, pgqueue.maintenance
	TO pgqueue_monitor;
GRANT EXECUTE ON FUNCTION
	pgqueue_internal._state("char", timestamptz, timestamptz),
	pgqueue_internal._key_blocked(integer, text, bigint),
	pgqueue_internal._job_state(integer, bigint, integer, text),
	pgqueue_internal._job_claim_rows(integer, bigint, integer, text),
	pgqueue_internal._block_stats(integer, integer),
	pgqueue_internal._queue_stats(integer, integer[]),
	pgqueue_internal._counters(text)
	TO pgqueue_monitor;

GRANT EXECUTE ON FUNCTION
	pgqueue.queue_create(text, bigint, interval, integer, interval, interval, double precision,
						 boolean, interval, boolean, interval, double precision, integer,
						 integer, bigint, bigint, double precision, double precision,
						 double precision, double precision, jsonb),
	pgqueue.queue_alter(text, interval, integer, interval, interval, double precision, boolean,
						interval, boolean, interval, double precision, integer, integer, bigint,
						bigint, double precision, double precision, double precision,
						double precision, jsonb),
	pgqueue.queue_set(text, text, text),
	pgqueue.queue_drop(text, boolean),
	pgqueue.queue_pause(text),
	pgqueue.queue_resume(text),
	pgqueue.queue_purge(text),
	pgqueue.queue_grant(text, name, text[]),
	pgqueue.queue_revoke(text, name, text[]),
	pgqueue.queue_retry(text, bigint),
	pgqueue.queue_retry(text, text, text, timestamptz, timestamptz),
	pgqueue.queue_abort(text, bigint, text),
	pgqueue.queue_abort(text, text, text, text, timestamptz, timestamptz),
	pgqueue.maintain(text)
	TO pgqueue_admin;

/*
 * A GRANT in an extension script records the object's whole ACL as the
 * extension's initial privileges, so in an upgrade the grants users made
 * on pgqueue's objects would count as the extension's own and pg_dump would
 * leave them out.  Keep only the extension's grants there: its owner's and
 * those to PUBLIC and the group roles.
 */
UPDATE pg_catalog.pg_init_privs ip
   SET initprivs = ARRAY(
		SELECT a FROM unnest(ip.initprivs) a
		 CROSS JOIN LATERAL (SELECT e.grantee, e.grantor FROM pg_catalog.aclexplode(ARRAY[a]) e
							  LIMIT 1) g
		 WHERE g.grantee IN (0, g.grantor)
			OR g.grantee IN (SELECT r.oid FROM pg_catalog.pg_roles r
							  WHERE r.rolname IN ('pgqueue_producer', 'pgqueue_consumer',
												  'pgqueue_monitor', 'pgqueue_admin')))
 WHERE ip.privtype = 'e'
   AND (ip.classoid, ip.objoid) IN (SELECT d.classid, d.objid FROM pg_catalog.pg_depend d
									 WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass
									   AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension e
														  WHERE e.extname = 'pgqueue')
									   AND d.deptype = 'e');

/* the library and the SQL of another version refuse to work together */
SELECT pgqueue_internal._cache_invalidate();
