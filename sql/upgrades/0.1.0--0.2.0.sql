/*
 * 0.1.0--0.2.0.sql: the changes to the tables and the moves of objects
 * from 0.1.0 to 0.2.0.  The Makefile appends every part that holds
 * replaceable objects (functions, views, grants), which replaces them
 * with their 0.2.0 definitions.
 */

\echo Use "ALTER EXTENSION pgqueue UPDATE" to load this file. \quit

/*
 * Internal functions move to a schema of their own, keeping their
 * dependents (views, constraints); the parts then redefine them.
 */
CREATE SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._weights_valid(jsonb) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._cache_invalidate() SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._block_lock(integer, integer, boolean) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._wake(text, timestamptz, bigint) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._counters(text) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._state("char", timestamptz, timestamptz) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._queue_id(text) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._rel(text, integer, integer) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._fault(text) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._block_tables(integer, integer, bigint, bigint, text, boolean) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._block_inherit(integer, integer) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._block_create(integer, integer) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._block_drop(integer, integer) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._worker_poke() SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._block_revive(integer, integer) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._set_paused(text, boolean) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._key_ready(text, bigint) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._take(text) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._flow_count(integer, text) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._key_blocked(integer, text, bigint) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._block_stats(integer, integer) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._block_busy(integer, integer) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._retry_allowed(integer, bigint[]) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._transition(integer, bigint[], text, text[], text) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._check_one(text, bigint, text[], text) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._bulk_ids(text, text, text, timestamptz, timestamptz, text[]) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._archive_rel(integer, date) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._archive_table(integer) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._unseen(xid, pg_snapshot) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._wait_writers(regclass[], integer) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._changed_tids(regclass, pg_lsn) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._block_keep(integer, integer, timestamptz, double precision) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._compact_step(integer) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._archive_expire(integer) SET SCHEMA pgqueue_internal;
ALTER FUNCTION pgqueue._maintain_queue(integer) SET SCHEMA pgqueue_internal;

/* replaced by functions that take claim records into account */
DROP FUNCTION pgqueue._unclaimed(bigint);
DROP FUNCTION pgqueue._expire_leases(pgqueue.block, integer);
DROP FUNCTION pgqueue._compact_carry(pgqueue.block, text, text, pg_snapshot, pg_lsn);

/* options beyond the bounds of 0.2.0 are brought within them */
UPDATE pgqueue.queue SET
	default_lease = least(default_lease, interval '1 year'),
	backoff_base = least(backoff_base, interval '1 year'),
	backoff_cap = least(backoff_cap, interval '1 year'),
	retention = least(retention, interval '100 years'),
	archive_retention = least(archive_retention, interval '100 years'),
	push_rate = least(push_rate, 1e9),
	tenant_push_rate = least(tenant_push_rate, 1e9),
	pop_rate = least(pop_rate, 1e9),
	tenant_pop_rate = least(tenant_pop_rate, 1e9);
ALTER TABLE pgqueue.queue
	ADD CONSTRAINT queue_intervals_bounded CHECK (default_lease <= '1 year' AND backoff_cap <= '1 year'
												  AND retention <= '100 years'
												  AND archive_retention <= '100 years'),
	ADD CONSTRAINT queue_rates_bounded CHECK (push_rate <= 1e9 AND tenant_push_rate <= 1e9
											  AND pop_rate <= 1e9 AND tenant_pop_rate <= 1e9);

/* queues made before 0.2.0 belong to the extension's owner */
ALTER TABLE pgqueue.queue ADD COLUMN owner name;
UPDATE pgqueue.queue SET owner = (SELECT r.rolname FROM pg_catalog.pg_extension e
								   JOIN pg_catalog.pg_roles r ON r.oid = e.extowner
								  WHERE e.extname = 'pgqueue');
ALTER TABLE pgqueue.queue ALTER COLUMN owner SET NOT NULL;

CREATE TABLE pgqueue.queue_acl (
	queue_id integer NOT NULL REFERENCES pgqueue.queue ON DELETE CASCADE,
	grantee name NOT NULL,
	privilege text NOT NULL
		CONSTRAINT queue_acl_privilege_valid CHECK (privilege IN ('push', 'consume', 'admin')),
	PRIMARY KEY (queue_id, grantee, privilege)
);
SELECT pg_catalog.pg_extension_config_dump('pgqueue.queue_acl', '');

/*
 * Claim records: a pop that claims never-claimed jobs writes one
 * record for them (seq 0, kind 'c'): the lane (priority, tenant) and the
 * id range [lo, hi] it took; every job of that lane in the range that had
 * no status row is claimed by it, at attempt 1, leased until lease_until.
 * What happens to those jobs next is appended as seq 1, 2, ... with a
 * compare-and-append on (claim_id, seq): 'd' acked (ids; NULL: all that
 * were left), 'x' left the claim for status rows of their own (failed,
 * released, extended, expired, aborted).  claim_id is the lowest job id
 * of the claim.
 */
CREATE TABLE pgqueue_data.claim_store (
	queue_id integer NOT NULL,
	claim_id bigint NOT NULL,
	seq integer NOT NULL,
	kind "char" NOT NULL,
	priority integer,
	tenant text,
	lo bigint,
	hi bigint,
	n integer NOT NULL,
	ids bigint[],
	at timestamptz NOT NULL,
	lease_until timestamptz
);

/*
 * lane_mark: a push marks the first job of the default lane (priority 0, no
 * tenant) that it puts into a block where no committed mark is yet, which
 * puts the job into the block's lane index (internal.sql, _block_tables).
 * The blocks of 0.1.0 keep a lane index of every job.
 */
ALTER TABLE pgqueue_data.job_store ADD COLUMN lane_mark boolean;

CREATE TABLE pgqueue.queue_maintenance (
	queue_id integer PRIMARY KEY REFERENCES pgqueue.queue ON DELETE CASCADE,
	failures integer NOT NULL,
	last_error text NOT NULL,
	last_error_at timestamptz NOT NULL,
	retry_at timestamptz NOT NULL
);
