/*
 * tables.sql: catalog tables and storage templates of a new install
 * (install only: an upgrade changes these objects in its own script, in
 * sql/upgrades/)
 */

/*
 * The bounds of the options keep every computation with them in range
 * (timestamps, intervals); the README lists them.
 */
CREATE TABLE pgqueue.queue (
	queue_id integer PRIMARY KEY,
	name text NOT NULL UNIQUE
		CONSTRAINT queue_name_valid CHECK (name ~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,62}$'),
	block_size bigint NOT NULL DEFAULT 100000
		CONSTRAINT queue_block_size_range CHECK (block_size BETWEEN 100 AND 1000000000),
	default_lease interval NOT NULL DEFAULT '30 seconds'
		CONSTRAINT queue_default_lease_positive CHECK (default_lease > '0'),
	max_attempts integer NOT NULL DEFAULT 5
		CONSTRAINT queue_max_attempts_range CHECK (max_attempts BETWEEN 1 AND 1000),
	backoff_base interval NOT NULL DEFAULT '1 second'
		CONSTRAINT queue_backoff_base_nonnegative CHECK (backoff_base >= '0'),
	backoff_cap interval NOT NULL DEFAULT '1 hour'
		CONSTRAINT queue_backoff_cap_valid CHECK (backoff_cap >= backoff_base),
	backoff_jitter double precision NOT NULL DEFAULT 0.1
		CONSTRAINT queue_backoff_jitter_range CHECK (backoff_jitter BETWEEN 0 AND 1),
	retention interval NOT NULL DEFAULT '10 minutes'
		CONSTRAINT queue_retention_nonnegative CHECK (retention >= '0'),
	archive boolean NOT NULL DEFAULT true,
	archive_retention interval NOT NULL DEFAULT '7 days'
		CONSTRAINT queue_archive_retention_nonnegative CHECK (archive_retention >= '0'),
	compact_threshold double precision NOT NULL DEFAULT 0.8
		CONSTRAINT queue_compact_threshold_range CHECK (compact_threshold > 0 AND compact_threshold <= 1),
	paused boolean NOT NULL DEFAULT false,
	notify boolean NOT NULL DEFAULT false,
	/* flow control (see README); 0 means no limit */
	max_in_flight integer NOT NULL DEFAULT 0
		CONSTRAINT queue_max_in_flight_nonnegative CHECK (max_in_flight >= 0),
	tenant_max_in_flight integer NOT NULL DEFAULT 0
		CONSTRAINT queue_tenant_max_in_flight_nonnegative CHECK (tenant_max_in_flight >= 0),
	max_depth bigint NOT NULL DEFAULT 0
		CONSTRAINT queue_max_depth_nonnegative CHECK (max_depth >= 0),
	tenant_max_depth bigint NOT NULL DEFAULT 0
		CONSTRAINT queue_tenant_max_depth_nonnegative CHECK (tenant_max_depth >= 0),
	push_rate double precision NOT NULL DEFAULT 0
		CONSTRAINT queue_push_rate_nonnegative CHECK (push_rate >= 0 AND push_rate < 'infinity'),
	tenant_push_rate double precision NOT NULL DEFAULT 0
		CONSTRAINT queue_tenant_push_rate_nonnegative CHECK (tenant_push_rate >= 0 AND tenant_push_rate < 'infinity'),
	pop_rate double precision NOT NULL DEFAULT 0
		CONSTRAINT queue_pop_rate_nonnegative CHECK (pop_rate >= 0 AND pop_rate < 'infinity'),
	tenant_pop_rate double precision NOT NULL DEFAULT 0
		CONSTRAINT queue_tenant_pop_rate_nonnegative CHECK (tenant_pop_rate >= 0 AND tenant_pop_rate < 'infinity'),
	tenant_weights jsonb NOT NULL DEFAULT '{}'
		CONSTRAINT queue_tenant_weights_valid CHECK (pgqueue_internal._weights_valid(tenant_weights)),
	created_at timestamptz NOT NULL DEFAULT now(),
	/* 0.2.0: the role that created the queue; it has every right on it */
	owner name NOT NULL,
	CONSTRAINT queue_intervals_bounded CHECK (default_lease <= '1 year' AND backoff_cap <= '1 year'
											  AND retention <= '100 years'
											  AND archive_retention <= '100 years'),
	CONSTRAINT queue_rates_bounded CHECK (push_rate <= 1e9 AND tenant_push_rate <= 1e9
										  AND pop_rate <= 1e9 AND tenant_pop_rate <= 1e9)
);
CREATE SEQUENCE pgqueue.queue_id_seq AS integer OWNED BY pgqueue.queue.queue_id;

CREATE TABLE pgqueue.block (
	queue_id integer NOT NULL REFERENCES pgqueue.queue ON DELETE CASCADE,
	block_no integer NOT NULL,
	first_id bigint NOT NULL,
	last_id bigint NOT NULL,
	state text NOT NULL DEFAULT 'open'
		CONSTRAINT block_state_valid CHECK (state IN ('open', 'closed', 'done')),
	created_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (queue_id, block_no),
	CONSTRAINT block_range_valid CHECK (first_id <= last_id)
);

/* one archive table per queue and day of archiving */
CREATE TABLE pgqueue.archive (
	queue_id integer NOT NULL REFERENCES pgqueue.queue ON DELETE CASCADE,
	day date NOT NULL,
	PRIMARY KEY (queue_id, day)
);

/*
 * Rights on single queues (queue_grant, queue_revoke).  A right that was
 * never granted on a queue is open to every role that may call the
 * functions that use it; once granted, only its grantees (and roles that
 * inherit their privileges), the queue's owner and superusers have it.
 * Roles are kept by name, so that a dump restores them on any server; a
 * grant to a role that no longer exists grants nothing, but still keeps
 * the right from being open.
 */
CREATE TABLE pgqueue.queue_acl (
	queue_id integer NOT NULL REFERENCES pgqueue.queue ON DELETE CASCADE,
	grantee name NOT NULL,
	privilege text NOT NULL
		CONSTRAINT queue_acl_privilege_valid CHECK (privilege IN ('push', 'consume', 'admin')),
	PRIMARY KEY (queue_id, grantee, privilege)
);

/*
 * The maintenance failures of each queue: a row while its maintenance
 * fails, removed when it succeeds again
 */
CREATE TABLE pgqueue.queue_maintenance (
	queue_id integer PRIMARY KEY REFERENCES pgqueue.queue ON DELETE CASCADE,
	failures integer NOT NULL,
	last_error text NOT NULL,
	last_error_at timestamptz NOT NULL,
	retry_at timestamptz NOT NULL
);

SELECT pg_catalog.pg_extension_config_dump('pgqueue.queue', '');
SELECT pg_catalog.pg_extension_config_dump('pgqueue.archive', '');
SELECT pg_catalog.pg_extension_config_dump('pgqueue.queue_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('pgqueue.block', '');
SELECT pg_catalog.pg_extension_config_dump('pgqueue.queue_acl', '');

/*
 * lane_mark is true on the first job of the default lane (priority 0, no
 * tenant) that a push puts into a block where no committed mark is yet,
 * and null on the others: it puts the lane into the block's lane index
 * (_block_tables).
 */
CREATE TABLE pgqueue_data.job_store (
	queue_id integer NOT NULL,
	job_id bigint NOT NULL,
	key text,
	priority integer NOT NULL,
	run_at timestamptz,
	enqueued_at timestamptz NOT NULL,
	payload jsonb NOT NULL,
	tenant text,
	lane_mark boolean
);

/*
 * state: a = available, s = scheduled, e = executing (due_at is the lease
 * end), d = succeeded, f = failed (due_at is the retry time), x = aborted.
 * attempt counts claims and is the fencing token; fails counts the failed
 * attempts that max_attempts limits.  error carries the last error forward.
 */
CREATE TABLE pgqueue_data.status_store (
	queue_id integer NOT NULL,
	job_id bigint NOT NULL,
	seq integer NOT NULL,
	state "char" NOT NULL,
	attempt integer NOT NULL,
	fails integer NOT NULL,
	at timestamptz NOT NULL,
	due_at timestamptz,
	error text
);

/*
 * Claim records (0.2.0): a pop that claims never-claimed jobs writes one
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

/* archived status rows, each with its job's columns */
CREATE TABLE pgqueue_data.archive_store (
	queue_id integer NOT NULL,
	job_id bigint NOT NULL,
	seq integer NOT NULL,
	state "char" NOT NULL,
	attempt integer NOT NULL,
	fails integer NOT NULL,
	at timestamptz NOT NULL,
	due_at timestamptz,
	error text,
	key text,
	priority integer NOT NULL,
	enqueued_at timestamptz NOT NULL,
	payload jsonb NOT NULL,
	archived_at timestamptz NOT NULL,
	tenant text
);

CREATE TYPE pgqueue.job AS (
	job_id bigint,
	queue text,
	key text,
	payload jsonb,
	priority integer,
	attempt integer,
	enqueued_at timestamptz,
	lease_until timestamptz,
	tenant text
);
