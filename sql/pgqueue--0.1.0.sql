/* pgqueue--0.1.0.sql: catalog, block storage, SQL interface and views */

\echo Use "CREATE EXTENSION pgqueue" to load this file. \quit

/*
 * Storage layout
 *
 * Every queue owns a sequence (pgqueue_data.seq_<queue_id>) and a set of
 * blocks.  A block covers a fixed, contiguous range of job ids and is a pair
 * of plain tables in schema pgqueue_data:
 *
 *   j_<queue_id>_<block_no>  jobs, insert-only
 *   s_<queue_id>_<block_no>  status, append-only; (job_id, seq) is unique and
 *                            every transition is a compare-and-append of
 *                            seq + 1 with ON CONFLICT DO NOTHING
 *
 * The block tables inherit from pgqueue_data.job_store and status_store only
 * so that the inspection views can read all of them; push, pop and ack work
 * on the block tables directly and never lock the parents.  CHECK
 * constraints on queue_id and the id range let constraint exclusion skip
 * blocks in lookups by job id.
 */

CREATE SCHEMA pgqueue_data;

/*
 * _weights_valid: tenant_weights is an object mapping tenant names to
 * integer weights from 1 to 1000
 */
CREATE FUNCTION pgqueue._weights_valid(w jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog
AS $$
SELECT jsonb_typeof(w) = 'object'
   AND NOT EXISTS (SELECT 1 FROM jsonb_each(w) e
					WHERE jsonb_typeof(e.value) <> 'number'
					   OR e.value::numeric NOT BETWEEN 1 AND 1000
					   OR e.value::numeric <> trunc(e.value::numeric)
					   OR octet_length(e.key) NOT BETWEEN 1 AND 63)
$$;

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
		CONSTRAINT queue_tenant_weights_valid CHECK (pgqueue._weights_valid(tenant_weights)),
	created_at timestamptz NOT NULL DEFAULT now()
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

SELECT pg_catalog.pg_extension_config_dump('pgqueue.queue', '');
SELECT pg_catalog.pg_extension_config_dump('pgqueue.archive', '');
SELECT pg_catalog.pg_extension_config_dump('pgqueue.queue_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('pgqueue.block', '');

CREATE TABLE pgqueue_data.job_store (
	queue_id integer NOT NULL,
	job_id bigint NOT NULL,
	key text,
	priority integer NOT NULL,
	run_at timestamptz,
	enqueued_at timestamptz NOT NULL,
	payload jsonb NOT NULL,
	tenant text
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

/* ------------------------------------------------------------------------
 * Internal helpers
 * ------------------------------------------------------------------------ */

/* _cache_invalidate: tell every backend to reload its queue and block cache */
CREATE FUNCTION pgqueue._cache_invalidate()
RETURNS void
LANGUAGE c STRICT
AS 'MODULE_PATHNAME', 'pgq_cache_invalidate';

/*
 * _block_lock: take a block's lock in exclusive mode until the end of the
 * transaction.  Pushes hold it in a weaker mode while their transaction is
 * open, so holding it fences off pushes that have not committed yet.  With
 * nowait, returns false instead of waiting.
 */
CREATE FUNCTION pgqueue._block_lock(queue_id integer, block_no integer, nowait boolean)
RETURNS boolean
LANGUAGE c STRICT
AS 'MODULE_PATHNAME', 'pgq_block_lock';

/*
 * _wake: jobs of the queue become claimable at due (wake waiting pops at
 * commit) and aborted jobs to count; for the SQL-level functions
 */
CREATE FUNCTION pgqueue._wake(queue text, due timestamptz, aborted bigint)
RETURNS void
LANGUAGE c
AS 'MODULE_PATHNAME', 'pgq_wake';

/* _counters: a queue's shared counters since server start (NULL: no shmem) */
CREATE FUNCTION pgqueue._counters(queue text, OUT pushed bigint, OUT popped bigint,
								  OUT acked bigint, OUT failed bigint, OUT aborted bigint,
								  OUT waiters integer)
RETURNS record
LANGUAGE c STRICT
AS 'MODULE_PATHNAME', 'pgq_counters';

/* _state: the user-facing state of a job from its latest status row */
CREATE FUNCTION pgqueue._state(state "char", due_at timestamptz, now timestamptz)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
	SELECT CASE
		WHEN state IS NULL THEN 'available'
		WHEN state = 'e' THEN 'executing'
		WHEN state = 'd' THEN 'succeeded'
		WHEN state = 'x' THEN 'aborted'
		WHEN due_at > now THEN CASE WHEN state = 'f' THEN 'failed' ELSE 'scheduled' END
		ELSE 'available'
	END
$$;

/* _queue_id: resolve a queue name, raising undefined_object if unknown */
CREATE FUNCTION pgqueue._queue_id(queue text)
RETURNS integer
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgqueue
AS $$
DECLARE
	qid integer;
BEGIN
	IF queue IS NULL THEN
		RAISE EXCEPTION 'queue name must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT q.queue_id INTO qid FROM pgqueue.queue q WHERE q.name = queue;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'queue "%" does not exist', queue
			USING ERRCODE = 'undefined_object';
	END IF;
	RETURN qid;
END
$$;

/*
 * _rel: qualified name of a block table; kind is 'j' (jobs) or 's' (status).
 * Blocks made by compaction have negative numbers, written c<n> in names.
 */
CREATE FUNCTION pgqueue._rel(kind text, queue_id integer, block_no integer)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
	SELECT format('pgqueue_data.%I', kind || '_' || queue_id || '_' ||
				  CASE WHEN block_no < 0 THEN 'c' || -block_no ELSE block_no::text END)
$$;

/* _fault: fail the way pgqueue.fault_injection says at a named step (tests) */
CREATE FUNCTION pgqueue._fault(step text)
RETURNS void
LANGUAGE c STRICT
AS 'MODULE_PATHNAME', 'pgq_fault';

/*
 * _block_tables: create the jobs and status tables of a block covering ids
 * lo to hi, and its catalog row.  Creating a table that inherits from
 * job_store or status_store locks them (ShareUpdateExclusiveLock) until
 * commit, against every other such creation; with inherit false, the
 * tables are created alone, for _block_inherit to attach at the end of a
 * long transaction (compaction).
 */
CREATE FUNCTION pgqueue._block_tables(queue_id integer, block_no integer, lo bigint, hi bigint,
									  state text, inherit boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue
AS $$
DECLARE
	j text := pgqueue._rel('j', queue_id, block_no);
	s text := pgqueue._rel('s', queue_id, block_no);
BEGIN
	EXECUTE format('CREATE TABLE %s (%sCHECK (queue_id = %s), CHECK (job_id BETWEEN %s AND %s),'
				   ' PRIMARY KEY (job_id))%s',
				   j, CASE WHEN inherit THEN '' ELSE 'LIKE pgqueue_data.job_store, ' END,
				   queue_id, lo, hi,
				   CASE WHEN inherit THEN ' INHERITS (pgqueue_data.job_store)' ELSE '' END);
	/* pop reads per priority and tenant ('': none) in id order */
	EXECUTE format('CREATE INDEX ON %s (priority, (coalesce(tenant, '''')), job_id)', j);
	EXECUTE format('CREATE INDEX ON %s (key, job_id) WHERE key IS NOT NULL', j);
	EXECUTE format('CREATE TABLE %s (%sCHECK (queue_id = %s), CHECK (job_id BETWEEN %s AND %s),'
				   ' PRIMARY KEY (job_id, seq))%s',
				   s, CASE WHEN inherit THEN '' ELSE 'LIKE pgqueue_data.status_store, ' END,
				   queue_id, lo, hi,
				   CASE WHEN inherit THEN ' INHERITS (pgqueue_data.status_store)' ELSE '' END);
	/* pop's claim of due retried, released and scheduled jobs, by id */
	EXECUTE format('CREATE INDEX ON %s (job_id, due_at) WHERE state IN (''a'', ''s'', ''f'')', s);
	EXECUTE format('CREATE INDEX ON %s (due_at) WHERE state = ''e''', s);
	INSERT INTO pgqueue.block (queue_id, block_no, first_id, last_id, state)
	VALUES (_block_tables.queue_id, _block_tables.block_no, lo, hi, _block_tables.state);
	PERFORM pgqueue._cache_invalidate();
END
$$;

/* _block_inherit: attach the tables of a block made with inherit false */
CREATE FUNCTION pgqueue._block_inherit(queue_id integer, block_no integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue
AS $$
BEGIN
	EXECUTE format('ALTER TABLE %s INHERIT pgqueue_data.job_store',
				   pgqueue._rel('j', queue_id, block_no));
	EXECUTE format('ALTER TABLE %s INHERIT pgqueue_data.status_store',
				   pgqueue._rel('s', queue_id, block_no));
END
$$;

/*
 * _block_create: create block block_no of a queue if it does not exist yet.
 * Serialized per block by its lock; called by push when an id crosses into
 * a new block, by maintenance ahead of that, and by queue_create.
 */
CREATE FUNCTION pgqueue._block_create(queue_id integer, block_no integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue
AS $$
DECLARE
	bs bigint;
BEGIN
	PERFORM pgqueue._block_lock(queue_id, block_no, false);
	IF EXISTS (SELECT 1 FROM pgqueue.block b
			   WHERE b.queue_id = _block_create.queue_id
				 AND b.block_no = _block_create.block_no) THEN
		RETURN;
	END IF;
	SELECT q.block_size INTO STRICT bs FROM pgqueue.queue q
	 WHERE q.queue_id = _block_create.queue_id;
	PERFORM pgqueue._block_tables(queue_id, block_no, block_no::bigint * bs + 1,
								  (block_no::bigint + 1) * bs, 'open', true);
END
$$;

/* _block_drop: drop the tables and catalog row of one block */
CREATE FUNCTION pgqueue._block_drop(queue_id integer, block_no integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue
AS $$
BEGIN
	EXECUTE format('DROP TABLE IF EXISTS %s, %s',
				   pgqueue._rel('j', queue_id, block_no),
				   pgqueue._rel('s', queue_id, block_no));
	DELETE FROM pgqueue.block b
	 WHERE b.queue_id = _block_drop.queue_id AND b.block_no = _block_drop.block_no;
	PERFORM pgqueue._cache_invalidate();
END
$$;

/* _worker_poke: have this database's maintenance worker started soon */
CREATE FUNCTION pgqueue._worker_poke()
RETURNS void
LANGUAGE c
AS 'MODULE_PATHNAME', 'pgq_worker_poke';

/* _block_revive: a done block got a job back; pop must look at it again */
CREATE FUNCTION pgqueue._block_revive(queue_id integer, block_no integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue
AS $$
BEGIN
	UPDATE pgqueue.block b SET state = 'closed'
	 WHERE b.queue_id = _block_revive.queue_id AND b.block_no = _block_revive.block_no
	   AND b.state = 'done';
	PERFORM pgqueue._cache_invalidate();
END
$$;

/* ------------------------------------------------------------------------
 * Queue management
 * ------------------------------------------------------------------------ */

/* queue_create: define a queue and create its sequence and first block */
CREATE FUNCTION pgqueue.queue_create(
	queue text,
	block_size bigint DEFAULT 100000,
	default_lease interval DEFAULT '30 seconds',
	max_attempts integer DEFAULT 5,
	backoff_base interval DEFAULT '1 second',
	backoff_cap interval DEFAULT '1 hour',
	backoff_jitter double precision DEFAULT 0.1,
	notify boolean DEFAULT false,
	retention interval DEFAULT '10 minutes',
	archive boolean DEFAULT true,
	archive_retention interval DEFAULT '7 days',
	compact_threshold double precision DEFAULT 0.8,
	max_in_flight integer DEFAULT 0,
	tenant_max_in_flight integer DEFAULT 0,
	max_depth bigint DEFAULT 0,
	tenant_max_depth bigint DEFAULT 0,
	push_rate double precision DEFAULT 0,
	tenant_push_rate double precision DEFAULT 0,
	pop_rate double precision DEFAULT 0,
	tenant_pop_rate double precision DEFAULT 0,
	tenant_weights jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pgqueue
AS $$
DECLARE
	qid integer;
BEGIN
	IF queue IS NULL OR block_size IS NULL OR default_lease IS NULL
		OR max_attempts IS NULL OR backoff_base IS NULL OR backoff_cap IS NULL
		OR backoff_jitter IS NULL OR notify IS NULL OR retention IS NULL OR archive IS NULL
		OR archive_retention IS NULL OR compact_threshold IS NULL
		OR max_in_flight IS NULL OR tenant_max_in_flight IS NULL OR max_depth IS NULL
		OR tenant_max_depth IS NULL OR push_rate IS NULL OR tenant_push_rate IS NULL
		OR pop_rate IS NULL OR tenant_pop_rate IS NULL OR tenant_weights IS NULL THEN
		RAISE EXCEPTION 'queue_create arguments must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF queue !~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,62}$' THEN
		RAISE EXCEPTION 'invalid queue name "%"', queue
			USING ERRCODE = 'invalid_name',
				  DETAIL = 'A queue name has 1 to 63 characters: letters, digits, "_", ".", ":" and "-", not starting with a punctuation mark.';
	END IF;
	IF EXISTS (SELECT 1 FROM pgqueue.queue q WHERE q.name = queue) THEN
		RAISE EXCEPTION 'queue "%" already exists', queue
			USING ERRCODE = 'duplicate_object';
	END IF;

	qid := nextval('pgqueue.queue_id_seq');
	BEGIN
		INSERT INTO pgqueue.queue (queue_id, name, block_size, default_lease, max_attempts,
								   backoff_base, backoff_cap, backoff_jitter, notify,
								   retention, archive, archive_retention, compact_threshold,
								   max_in_flight, tenant_max_in_flight, max_depth,
								   tenant_max_depth, push_rate, tenant_push_rate, pop_rate,
								   tenant_pop_rate, tenant_weights)
		VALUES (qid, queue, block_size, default_lease, max_attempts,
				backoff_base, backoff_cap, backoff_jitter, notify,
				retention, archive, archive_retention, compact_threshold,
				max_in_flight, tenant_max_in_flight, max_depth,
				tenant_max_depth, push_rate, tenant_push_rate, pop_rate,
				tenant_pop_rate, tenant_weights);
	EXCEPTION WHEN check_violation THEN
		RAISE EXCEPTION 'invalid option for queue "%"', queue
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = SQLERRM,
				  HINT = 'block_size is 100 to 1000000000, default_lease is positive, max_attempts is 1 to 1000, backoff_base <= backoff_cap, backoff_jitter is 0 to 1, retentions are not negative, compact_threshold is above 0 and at most 1, limits and rates are not negative (0: no limit), tenant_weights maps tenants to integers 1 to 1000.';
	WHEN unique_violation THEN
		RAISE EXCEPTION 'queue "%" already exists', queue
			USING ERRCODE = 'duplicate_object';
	END;
	EXECUTE format('CREATE SEQUENCE pgqueue_data.%I AS bigint CACHE 1', 'seq_' || qid);
	PERFORM pgqueue._block_create(qid, 0);
	PERFORM pgqueue._worker_poke();
END
$$;

/* queue_alter: change the options of a queue; NULL leaves an option as it is */
CREATE FUNCTION pgqueue.queue_alter(
	queue text,
	default_lease interval DEFAULT NULL,
	max_attempts integer DEFAULT NULL,
	backoff_base interval DEFAULT NULL,
	backoff_cap interval DEFAULT NULL,
	backoff_jitter double precision DEFAULT NULL,
	notify boolean DEFAULT NULL,
	retention interval DEFAULT NULL,
	archive boolean DEFAULT NULL,
	archive_retention interval DEFAULT NULL,
	compact_threshold double precision DEFAULT NULL,
	max_in_flight integer DEFAULT NULL,
	tenant_max_in_flight integer DEFAULT NULL,
	max_depth bigint DEFAULT NULL,
	tenant_max_depth bigint DEFAULT NULL,
	push_rate double precision DEFAULT NULL,
	tenant_push_rate double precision DEFAULT NULL,
	pop_rate double precision DEFAULT NULL,
	tenant_pop_rate double precision DEFAULT NULL,
	tenant_weights jsonb DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pgqueue
AS $$
DECLARE
	qid integer := pgqueue._queue_id(queue);
BEGIN
	BEGIN
		UPDATE pgqueue.queue q SET
			default_lease = coalesce(queue_alter.default_lease, q.default_lease),
			max_attempts = coalesce(queue_alter.max_attempts, q.max_attempts),
			backoff_base = coalesce(queue_alter.backoff_base, q.backoff_base),
			backoff_cap = coalesce(queue_alter.backoff_cap, q.backoff_cap),
			backoff_jitter = coalesce(queue_alter.backoff_jitter, q.backoff_jitter),
			notify = coalesce(queue_alter.notify, q.notify),
			retention = coalesce(queue_alter.retention, q.retention),
			archive = coalesce(queue_alter.archive, q.archive),
			archive_retention = coalesce(queue_alter.archive_retention, q.archive_retention),
			compact_threshold = coalesce(queue_alter.compact_threshold, q.compact_threshold),
			max_in_flight = coalesce(queue_alter.max_in_flight, q.max_in_flight),
			tenant_max_in_flight = coalesce(queue_alter.tenant_max_in_flight, q.tenant_max_in_flight),
			max_depth = coalesce(queue_alter.max_depth, q.max_depth),
			tenant_max_depth = coalesce(queue_alter.tenant_max_depth, q.tenant_max_depth),
			push_rate = coalesce(queue_alter.push_rate, q.push_rate),
			tenant_push_rate = coalesce(queue_alter.tenant_push_rate, q.tenant_push_rate),
			pop_rate = coalesce(queue_alter.pop_rate, q.pop_rate),
			tenant_pop_rate = coalesce(queue_alter.tenant_pop_rate, q.tenant_pop_rate),
			tenant_weights = coalesce(queue_alter.tenant_weights, q.tenant_weights)
		WHERE q.queue_id = qid;
	EXCEPTION WHEN check_violation THEN
		RAISE EXCEPTION 'invalid option for queue "%"', queue
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = SQLERRM,
				  HINT = 'default_lease is positive, max_attempts is 1 to 1000, backoff_base <= backoff_cap, backoff_jitter is 0 to 1, retentions are not negative, compact_threshold is above 0 and at most 1, limits and rates are not negative (0: no limit), tenant_weights maps tenants to integers 1 to 1000.';
	END;
	PERFORM pgqueue._cache_invalidate();
	/* counts are kept only while limits are set: read them again */
	PERFORM pgqueue._wake(queue, NULL, 0);
END
$$;

/* queue_drop: drop a queue; refuses one with unfinished jobs unless forced */
CREATE FUNCTION pgqueue.queue_drop(queue text, force boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pgqueue
AS $$
DECLARE
	qid integer := pgqueue._queue_id(queue);
	live bigint;
	b record;
BEGIN
	IF force IS NULL THEN
		RAISE EXCEPTION 'force must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM 1 FROM pgqueue.queue q WHERE q.queue_id = qid FOR UPDATE;
	IF NOT force THEN
		SELECT coalesce(sum(st.unfinished), 0) INTO live
		  FROM pgqueue.block bl, pgqueue._block_stats(bl.queue_id, bl.block_no) st
		 WHERE bl.queue_id = qid AND bl.state <> 'done';
		IF live > 0 THEN
			RAISE EXCEPTION 'queue "%" is not empty', queue
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  DETAIL = format('It has %s unfinished job%s.', live,
									  CASE WHEN live = 1 THEN '' ELSE 's' END),
					  HINT = 'Use queue_drop(queue, force => true) to drop it anyway.';
		END IF;
	END IF;
	FOR b IN SELECT * FROM pgqueue.block bl WHERE bl.queue_id = qid LOOP
		PERFORM pgqueue._block_drop(b.queue_id, b.block_no);
	END LOOP;
	FOR b IN SELECT * FROM pgqueue.archive a WHERE a.queue_id = qid LOOP
		EXECUTE format('DROP TABLE %s', pgqueue._archive_rel(b.queue_id, b.day));
	END LOOP;
	EXECUTE format('DROP SEQUENCE pgqueue_data.%I', 'seq_' || qid);
	DELETE FROM pgqueue.queue q WHERE q.queue_id = qid;
	PERFORM pgqueue._cache_invalidate();
END
$$;

/* _set_paused: shared body of queue_pause and queue_resume */
CREATE FUNCTION pgqueue._set_paused(queue text, paused boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue
AS $$
BEGIN
	UPDATE pgqueue.queue q SET paused = _set_paused.paused
	 WHERE q.queue_id = pgqueue._queue_id(queue);
	PERFORM pgqueue._cache_invalidate();
	IF NOT paused THEN
		PERFORM pgqueue._wake(queue, clock_timestamp(), 0);
	END IF;
END
$$;

/* queue_pause: pop returns nothing until queue_resume; push still works */
CREATE FUNCTION pgqueue.queue_pause(queue text)
RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pgqueue
AS $$ SELECT pgqueue._set_paused(queue, true) $$;

/* queue_resume: let pop claim jobs of a paused queue again */
CREATE FUNCTION pgqueue.queue_resume(queue text)
RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pgqueue
AS $$ SELECT pgqueue._set_paused(queue, false) $$;

/*
 * queue_purge: discard every job of a queue, whatever its state.  The blocks
 * are dropped and a new block starts at the next id, so ids are never reused.
 * Returns the number of jobs discarded.
 */
CREATE FUNCTION pgqueue.queue_purge(queue text)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pgqueue
AS $$
DECLARE
	qid integer := pgqueue._queue_id(queue);
	b record;
	n bigint;
	total bigint := 0;
	next_id bigint;
	bs bigint;
BEGIN
	SELECT q.block_size INTO bs FROM pgqueue.queue q WHERE q.queue_id = qid FOR UPDATE;
	FOR b IN SELECT * FROM pgqueue.block bl WHERE bl.queue_id = qid LOOP
		EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', pgqueue._rel('j', b.queue_id, b.block_no));
		EXECUTE format('SELECT count(*) FROM %s', pgqueue._rel('j', b.queue_id, b.block_no)) INTO n;
		total := total + n;
		PERFORM pgqueue._block_drop(b.queue_id, b.block_no);
	END LOOP;
	EXECUTE format('SELECT nextval(%L)', 'pgqueue_data.seq_' || qid) INTO next_id;
	PERFORM pgqueue._block_create(qid, ((next_id - 1) / bs)::integer);
	/* the flow-control counts must be read again */
	PERFORM pgqueue._wake(queue, NULL, 0);
	RETURN total;
END
$$;

/* ------------------------------------------------------------------------
 * Hot paths (C)
 * ------------------------------------------------------------------------ */

/*
 * _key_ready and _take: flow-control tests of queue_pop's claim statements
 * (flow.c), for those statements only.  Costed high so that they run after
 * a candidate's other conditions (a probe of an index costs about 10).
 */
CREATE FUNCTION pgqueue._key_ready(key text, job_id bigint)
RETURNS boolean
LANGUAGE c STRICT VOLATILE COST 100000
AS 'MODULE_PATHNAME', 'pgq_key_ready';
CREATE FUNCTION pgqueue._take(tenant text)
RETURNS boolean
LANGUAGE c VOLATILE COST 1000000
AS 'MODULE_PATHNAME', 'pgq_tenant_take';
REVOKE ALL ON FUNCTION pgqueue._key_ready(text, bigint), pgqueue._take(text) FROM PUBLIC;

/*
 * _unclaimed: the never-claimed test of queue_pop's claim statements (pop.c),
 * for those statements only
 */
CREATE FUNCTION pgqueue._unclaimed(job_id bigint)
RETURNS boolean
LANGUAGE c STRICT VOLATILE
AS 'MODULE_PATHNAME', 'pgq_unclaimed';
REVOKE ALL ON FUNCTION pgqueue._unclaimed(bigint) FROM PUBLIC;

/*
 * _flow_count: a queue's unfinished and executing jobs, of one tenant if
 * given; flow control reads them when its counts in shared memory are not
 * known
 */
CREATE FUNCTION pgqueue._flow_count(queue_id integer, tenant text,
									OUT depth bigint, OUT inflight bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue
AS $$
DECLARE
	b pgqueue.block;
	d bigint;
	f bigint;
BEGIN
	depth := 0;
	inflight := 0;
	FOR b IN SELECT * FROM pgqueue.block bl
			  WHERE bl.queue_id = _flow_count.queue_id AND bl.state <> 'done' LOOP
		EXECUTE format($q$
			SELECT count(*) FILTER (WHERE l.state IS NULL OR l.state NOT IN ('d', 'x')),
				   count(*) FILTER (WHERE l.state = 'e')
			  FROM %1$s j
			  LEFT JOIN LATERAL (SELECT s.state FROM %2$s s WHERE s.job_id = j.job_id
								  ORDER BY s.seq DESC LIMIT 1) l ON true
			 WHERE $1::text IS NULL OR j.tenant = $1$q$,
			pgqueue._rel('j', b.queue_id, b.block_no), pgqueue._rel('s', b.queue_id, b.block_no))
		INTO d, f USING tenant;
		depth := depth + d;
		inflight := inflight + f;
	END LOOP;
END
$$;

/*
 * The hot functions in C run statements that are planned once per block
 * and kept (SPI plan cache).  A generic plan made while a block's tables
 * were small must not read them sequentially once they have grown, before
 * the next ANALYZE: pop and the transitions out of a lease run with
 * enable_seqscan off, so every plan reads by index.  All of them run
 * without JIT: their statements touch a few rows, and compiling them
 * (which high cost estimates would trigger on every call) takes far
 * longer than running them.
 */

/* queue_push: add one job; returns its id */
CREATE FUNCTION pgqueue.queue_push(
	queue text,
	payload jsonb,
	key text DEFAULT NULL,
	priority integer DEFAULT 0,
	run_at timestamptz DEFAULT NULL,
	tenant text DEFAULT NULL)
RETURNS bigint
LANGUAGE c SECURITY DEFINER
SET search_path = pg_catalog, pgqueue
SET jit = off
AS 'MODULE_PATHNAME', 'pgq_push';

/* queue_push_batch: add many jobs in one call; returns their ids in order */
CREATE FUNCTION pgqueue.queue_push_batch(
	queue text,
	payloads jsonb[],
	keys text[] DEFAULT NULL,
	priorities integer[] DEFAULT NULL,
	run_at timestamptz DEFAULT NULL,
	tenants text[] DEFAULT NULL)
RETURNS bigint[]
LANGUAGE c SECURITY DEFINER
SET search_path = pg_catalog, pgqueue
SET jit = off
AS 'MODULE_PATHNAME', 'pgq_push_batch';

/* queue_pop: claim up to n available jobs, each under a lease */
CREATE FUNCTION pgqueue.queue_pop(
	queue text,
	n integer DEFAULT 1,
	lease interval DEFAULT NULL,
	wait interval DEFAULT '0')
RETURNS SETOF pgqueue.job
LANGUAGE c SECURITY DEFINER
SET search_path = pg_catalog, pgqueue
SET enable_seqscan = off
SET jit = off
AS 'MODULE_PATHNAME', 'pgq_pop';

/* queue_ack: mark a leased job succeeded */
CREATE FUNCTION pgqueue.queue_ack(queue text, job_id bigint, attempt integer DEFAULT NULL)
RETURNS void
LANGUAGE c SECURITY DEFINER
SET search_path = pg_catalog, pgqueue
SET enable_seqscan = off
SET jit = off
AS 'MODULE_PATHNAME', 'pgq_ack';

/* queue_ack: mark many leased jobs succeeded, all or none; returns the count */
CREATE FUNCTION pgqueue.queue_ack(queue text, job_ids bigint[], attempts integer[] DEFAULT NULL)
RETURNS integer
LANGUAGE c SECURITY DEFINER
SET search_path = pg_catalog, pgqueue
SET enable_seqscan = off
SET jit = off
AS 'MODULE_PATHNAME', 'pgq_ack_array';

/* queue_fail: record a failed attempt; returns the new state, failed or aborted */
CREATE FUNCTION pgqueue.queue_fail(
	queue text,
	job_id bigint,
	error text,
	retry_in interval DEFAULT NULL,
	attempt integer DEFAULT NULL)
RETURNS text
LANGUAGE c SECURITY DEFINER
SET search_path = pg_catalog, pgqueue
SET enable_seqscan = off
SET jit = off
AS 'MODULE_PATHNAME', 'pgq_fail';

/* queue_extend: renew the lease of a job (heartbeat); returns the new lease end */
CREATE FUNCTION pgqueue.queue_extend(
	queue text,
	job_id bigint,
	lease interval DEFAULT NULL,
	attempt integer DEFAULT NULL)
RETURNS timestamptz
LANGUAGE c SECURITY DEFINER
SET search_path = pg_catalog, pgqueue
SET enable_seqscan = off
SET jit = off
AS 'MODULE_PATHNAME', 'pgq_extend';

/* queue_release: hand a leased job back without counting a failure */
CREATE FUNCTION pgqueue.queue_release(queue text, job_id bigint, attempt integer DEFAULT NULL)
RETURNS void
LANGUAGE c SECURITY DEFINER
SET search_path = pg_catalog, pgqueue
SET enable_seqscan = off
SET jit = off
AS 'MODULE_PATHNAME', 'pgq_release';

/* ------------------------------------------------------------------------
 * Inspection views
 * ------------------------------------------------------------------------ */

/*
 * _key_blocked: whether a job of a queue waits behind its ordering key:
 * another job of the key with a lower id is unfinished, or one is executing
 */
CREATE FUNCTION pgqueue._key_blocked(queue_id integer, key text, job_id bigint)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog
AS $$
SELECT EXISTS (
	SELECT 1 FROM pgqueue_data.job_store o
	  LEFT JOIN LATERAL (SELECT st.state FROM pgqueue_data.status_store st
						  WHERE st.job_id = o.job_id AND st.queue_id = o.queue_id
						  ORDER BY st.seq DESC LIMIT 1) l ON true
	 WHERE o.queue_id = $1 AND o.key = $2 AND o.job_id <> $3
	   AND ((o.job_id < $3 AND (l.state IS NULL OR l.state NOT IN ('d', 'x')))
			OR l.state = 'e'))
$$;

/* jobs: every live job with its current state (latest status row) */
CREATE VIEW pgqueue.jobs AS
SELECT q.name AS queue,
	   j.job_id,
	   CASE WHEN j.key IS NOT NULL
				 AND pgqueue._state(s.state, s.due_at, clock_timestamp()) = 'available'
				 AND pgqueue._key_blocked(j.queue_id, j.key, j.job_id) THEN 'blocked'
			ELSE pgqueue._state(s.state, s.due_at, clock_timestamp()) END AS state,
	   j.key,
	   j.tenant,
	   j.priority,
	   coalesce(s.attempt, 0) AS attempt,
	   coalesce(s.fails, 0) AS failures,
	   s.error AS last_error,
	   j.payload,
	   j.enqueued_at,
	   CASE WHEN s.state IN ('a', 's', 'f') THEN s.due_at
			WHEN s.state IS NULL THEN coalesce(j.run_at, j.enqueued_at) END AS run_at,
	   CASE WHEN s.state = 'e' THEN s.due_at END AS lease_until,
	   coalesce(s.at, j.enqueued_at) AS updated_at
  FROM pgqueue_data.job_store j
  JOIN pgqueue.queue q ON q.queue_id = j.queue_id
  LEFT JOIN (SELECT DISTINCT ON (st.job_id, st.queue_id) st.*
			   FROM pgqueue_data.status_store st
			  ORDER BY st.job_id, st.queue_id, st.seq DESC) s
	ON s.job_id = j.job_id AND s.queue_id = j.queue_id;

/* job_history: every status transition of every job, live and archived */
CREATE VIEW pgqueue.job_history AS
SELECT q.name AS queue,
	   s.job_id,
	   s.seq,
	   CASE s.state WHEN 'a' THEN 'available' WHEN 's' THEN 'scheduled'
		   WHEN 'e' THEN 'executing' WHEN 'd' THEN 'succeeded'
		   WHEN 'f' THEN 'failed' WHEN 'x' THEN 'aborted' END AS state,
	   s.attempt,
	   s.fails AS failures,
	   s.at,
	   CASE WHEN s.state = 'e' THEN s.due_at END AS lease_until,
	   CASE WHEN s.state IN ('a', 's', 'f') THEN s.due_at END AS run_at,
	   s.error,
	   false AS archived
  FROM pgqueue_data.status_store s
  JOIN pgqueue.queue q ON q.queue_id = s.queue_id
UNION ALL
SELECT q.name, a.job_id, a.seq,
	   CASE a.state WHEN 'a' THEN 'available' WHEN 's' THEN 'scheduled'
		   WHEN 'e' THEN 'executing' WHEN 'd' THEN 'succeeded'
		   WHEN 'f' THEN 'failed' WHEN 'x' THEN 'aborted' END,
	   a.attempt, a.fails, a.at,
	   CASE WHEN a.state = 'e' THEN a.due_at END,
	   CASE WHEN a.state IN ('a', 's', 'f') THEN a.due_at END,
	   a.error,
	   true
  FROM pgqueue_data.archive_store a
  JOIN pgqueue.queue q ON q.queue_id = a.queue_id;

/* _block_stats: job counts and size of one block */
CREATE FUNCTION pgqueue._block_stats(queue_id integer, block_no integer,
									 OUT jobs bigint, OUT unfinished bigint, OUT bytes bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgqueue
AS $$
DECLARE
	j text := pgqueue._rel('j', queue_id, block_no);
	s text := pgqueue._rel('s', queue_id, block_no);
BEGIN
	/* finished: the latest status is terminal (a retry can follow an abort) */
	EXECUTE format('SELECT count(*), count(*) FILTER (WHERE NOT EXISTS'
				   ' (SELECT 1 FROM %1$s s WHERE s.job_id = j.job_id AND s.state IN (''d'', ''x'')'
				   '   AND NOT EXISTS (SELECT 1 FROM %1$s n WHERE n.job_id = s.job_id AND n.seq > s.seq)))'
				   ' FROM %2$s j', s, j) INTO jobs, unfinished;
	bytes := pg_total_relation_size(j::regclass) + pg_total_relation_size(s::regclass);
END
$$;

/*
 * _block_busy: whether a block holds an unfinished job.  It looks from the
 * newest job down, where a queue drained in order keeps its unfinished
 * jobs, and stops at the first one, so that maintenance does not count a
 * whole backlog every round.
 */
CREATE FUNCTION pgqueue._block_busy(queue_id integer, block_no integer)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgqueue
AS $$
DECLARE
	found_id bigint;
BEGIN
	/* OFFSET 0 keeps the test a probe per job, not an anti-join of all */
	EXECUTE format('SELECT j.job_id FROM %2$s j WHERE NOT EXISTS'
				   ' (SELECT 1 FROM %1$s s WHERE s.job_id = j.job_id AND s.state IN (''d'', ''x'')'
				   '   AND NOT EXISTS (SELECT 1 FROM %1$s n WHERE n.job_id = s.job_id AND n.seq > s.seq)'
				   '  OFFSET 0)'
				   ' ORDER BY j.job_id DESC LIMIT 1',
				   pgqueue._rel('s', queue_id, block_no), pgqueue._rel('j', queue_id, block_no))
		INTO found_id;
	RETURN found_id IS NOT NULL;
END
$$;

/* blocks: each block with its id range, state, counts and size */
CREATE VIEW pgqueue.blocks AS
SELECT q.name AS queue, b.block_no, b.first_id, b.last_id, b.state,
	   st.jobs, st.unfinished, st.bytes, b.created_at
  FROM pgqueue.block b
  JOIN pgqueue.queue q ON q.queue_id = b.queue_id
  CROSS JOIN LATERAL pgqueue._block_stats(b.queue_id, b.block_no) st;

/*
 * stats: depth per state, jobs in flight, the age of the oldest waiting job,
 * and counters of committed work since the server started (NULL without
 * shared_preload_libraries): pushed, popped, acked, failed attempts, aborted
 * jobs, and pops waiting now
 */
CREATE VIEW pgqueue.stats AS
SELECT q.name AS queue,
	   count(j.job_id) FILTER (WHERE j.state = 'available') AS available,
	   count(j.job_id) FILTER (WHERE j.state = 'blocked') AS blocked,
	   count(j.job_id) FILTER (WHERE j.state = 'scheduled') AS scheduled,
	   count(j.job_id) FILTER (WHERE j.state = 'executing') AS executing,
	   count(j.job_id) FILTER (WHERE j.state = 'failed') AS failed,
	   count(j.job_id) FILTER (WHERE j.state = 'succeeded') AS succeeded,
	   count(j.job_id) FILTER (WHERE j.state = 'aborted') AS aborted,
	   clock_timestamp() - min(j.run_at) FILTER (WHERE j.state = 'available') AS oldest_waiting,
	   (SELECT count(*) FROM pgqueue.block b WHERE b.queue_id = q.queue_id) AS blocks,
	   min(c.pushed) AS pushed,
	   min(c.popped) AS popped,
	   min(c.acked) AS acked,
	   min(c.failed) AS failed_attempts,
	   min(c.aborted) AS aborted_jobs,
	   min(c.waiters) AS waiters
  FROM pgqueue.queue q
  LEFT JOIN pgqueue.jobs j ON j.queue = q.name
  CROSS JOIN LATERAL pgqueue._counters(q.name) c
 GROUP BY q.queue_id, q.name;

/* queues: each queue's definition with its live counts */
CREATE VIEW pgqueue.queues AS
SELECT q.name AS queue, q.paused, q.block_size, q.default_lease, q.max_attempts,
	   q.backoff_base, q.backoff_cap, q.backoff_jitter, q.notify, q.created_at,
	   q.max_in_flight, q.tenant_max_in_flight, q.max_depth, q.tenant_max_depth,
	   q.push_rate, q.tenant_push_rate, q.pop_rate, q.tenant_pop_rate, q.tenant_weights,
	   s.available, s.blocked, s.scheduled, s.executing, s.failed, s.succeeded, s.aborted,
	   s.oldest_waiting, s.blocks
  FROM pgqueue.queue q
  JOIN pgqueue.stats s ON s.queue = q.name;

/* ------------------------------------------------------------------------
 * Repair: forced retry and abort
 * ------------------------------------------------------------------------ */

/*
 * _retry_allowed: the ids (of jobs of one queue) that a forced retry may
 * move: a job with an ordering key only while no other job of its key is
 * executing, so that at most one job of a key is ever in flight.  The
 * key's jobs are locked first, so no claim of one can slip in until this
 * transaction ends.
 */
CREATE FUNCTION pgqueue._retry_allowed(qid integer, ids bigint[])
RETURNS bigint[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue
AS $$
BEGIN
	PERFORM 1 FROM pgqueue_data.job_store o
	 WHERE o.queue_id = qid
	   AND o.key IN (SELECT j.key FROM pgqueue_data.job_store j
					  WHERE j.queue_id = qid AND j.job_id = ANY (ids) AND j.key IS NOT NULL)
	   FOR UPDATE OF o;
	RETURN ARRAY(
		SELECT i.id FROM unnest(ids) AS i(id)
		 WHERE NOT EXISTS (
			SELECT 1 FROM pgqueue_data.job_store j
			  JOIN pgqueue_data.job_store o
				ON o.queue_id = j.queue_id AND o.key = j.key AND o.job_id <> j.job_id
			 CROSS JOIN LATERAL (SELECT st.state FROM pgqueue_data.status_store st
								  WHERE st.job_id = o.job_id AND st.queue_id = o.queue_id
								  ORDER BY st.seq DESC LIMIT 1) l
			 WHERE j.queue_id = qid AND j.job_id = i.id AND l.state = 'e'));
END
$$;

/*
 * _transition: append one operator transition to the latest status of the
 * given jobs of one queue (compare-and-append, so a job that changed since it
 * was read is left alone).  op is 'retry' (to available now, failures reset)
 * or 'abort' (to aborted with reason).  Only jobs whose current state is in
 * from_states move.  Returns the ids that moved.
 */
CREATE FUNCTION pgqueue._transition(qid integer, ids bigint[], op text, from_states text[], reason text)
RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue
AS $$
DECLARE
	b record;
	now_ts timestamptz := clock_timestamp();
	moved bigint[];
BEGIN
	IF op = 'retry' THEN
		ids := pgqueue._retry_allowed(qid, ids);
	END IF;
	FOR b IN SELECT * FROM pgqueue.block bl WHERE bl.queue_id = qid
			  ORDER BY bl.first_id FOR UPDATE LOOP
		EXECUTE format($q$
			WITH l AS (
				SELECT j.job_id, s.seq, s.state, s.attempt, s.fails, s.due_at, s.error
				  FROM %1$s j
				  LEFT JOIN LATERAL (SELECT * FROM %2$s st WHERE st.job_id = j.job_id
									  ORDER BY st.seq DESC LIMIT 1) s ON true
				 WHERE j.job_id = ANY ($1)),
			i AS (
				INSERT INTO %2$s (queue_id, job_id, seq, state, attempt, fails, at, due_at, error)
				SELECT $2, l.job_id, coalesce(l.seq, 0) + 1,
					   CASE WHEN $3 = 'retry' THEN 'a' ELSE 'x' END,
					   coalesce(l.attempt, 0),
					   CASE WHEN $3 = 'retry' THEN 0 ELSE coalesce(l.fails, 0) END,
					   $4,
					   CASE WHEN $3 = 'retry' THEN $4 END,
					   CASE WHEN $3 = 'retry' THEN l.error ELSE $5 END
				  FROM l
				 WHERE pgqueue._state(l.state, l.due_at, $4) = ANY ($6)
				ON CONFLICT DO NOTHING
				RETURNING job_id)
			SELECT array_agg(job_id) FROM i$q$,
			pgqueue._rel('j', b.queue_id, b.block_no),
			pgqueue._rel('s', b.queue_id, b.block_no))
		INTO moved
		USING ids, qid, op, now_ts, reason, from_states;
		IF moved IS NOT NULL THEN
			IF op = 'retry' AND b.state = 'done' THEN
				PERFORM pgqueue._block_revive(b.queue_id, b.block_no);
			END IF;
			PERFORM pgqueue._wake((SELECT q.name FROM pgqueue.queue q WHERE q.queue_id = qid),
								  CASE WHEN op = 'retry' THEN now_ts END,
								  CASE WHEN op = 'abort' THEN cardinality(moved) ELSE 0 END);
			RETURN QUERY SELECT unnest(moved);
		END IF;
	END LOOP;
END
$$;

/* _check_one: the shared checks of the single-job forms of retry and abort */
CREATE FUNCTION pgqueue._check_one(queue text, job_id bigint, allowed text[], verb text)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue
AS $$
DECLARE
	qid integer := pgqueue._queue_id(queue);
	cur text;
BEGIN
	IF job_id IS NULL THEN
		RAISE EXCEPTION 'job_id must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT j.state INTO cur FROM pgqueue.jobs j
	 WHERE j.queue = _check_one.queue AND j.job_id = _check_one.job_id;
	IF NOT FOUND THEN
		/*
		 * A lookup that waited for a compaction to commit was planned with
		 * the blocks before it; a new statement sees the moved job.
		 */
		SELECT j.state INTO cur FROM pgqueue.jobs j
		 WHERE j.queue = _check_one.queue AND j.job_id = _check_one.job_id;
	END IF;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'job % does not exist in queue "%"', job_id, queue
			USING ERRCODE = 'PQ002';
	END IF;
	IF NOT cur = ANY (allowed) THEN
		RAISE EXCEPTION 'cannot % job %: it is %', verb, job_id, cur
			USING ERRCODE = 'PQ003',
				  DETAIL = format('Only jobs that are %s can be %s.',
								  array_to_string(allowed, ', '),
								  CASE verb WHEN 'retry' THEN 'retried' ELSE 'aborted' END);
	END IF;
	RETURN qid;
END
$$;

/*
 * queue_retry: make one failed, aborted or scheduled job available now, with
 * its failure count reset.  Returns false if the job was already available.
 */
CREATE FUNCTION pgqueue.queue_retry(queue text, job_id bigint)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pgqueue
AS $$
DECLARE
	qid integer := pgqueue._check_one(queue, job_id,
									   ARRAY['available', 'blocked', 'failed', 'aborted', 'scheduled'], 'retry');
BEGIN
	IF (SELECT j.state FROM pgqueue.jobs j
		 WHERE j.queue = queue_retry.queue AND j.job_id = queue_retry.job_id)
	   IN ('available', 'blocked') THEN
		RETURN false;
	END IF;
	IF cardinality(pgqueue._retry_allowed(qid, ARRAY[job_id])) = 0 THEN
		RAISE EXCEPTION 'cannot retry job %: another job of its key is executing', job_id
			USING ERRCODE = 'PQ003',
				  DETAIL = 'At most one job of an ordering key is in flight.',
				  HINT = 'Retry it when that job has finished.';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pgqueue._transition(qid, ARRAY[job_id], 'retry',
													 ARRAY['failed', 'aborted', 'scheduled'], NULL)) THEN
		RAISE EXCEPTION 'could not retry job %: it changed concurrently', job_id
			USING ERRCODE = 'serialization_failure', HINT = 'Try again.';
	END IF;
	RETURN true;
END
$$;

/* _bulk_ids: ids of a queue's jobs matching a state, error pattern and time window */
CREATE FUNCTION pgqueue._bulk_ids(queue text, state text, error_like text,
								  since timestamptz, until timestamptz, allowed text[])
RETURNS bigint[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgqueue
AS $$
BEGIN
	PERFORM pgqueue._queue_id(queue);
	IF state IS NULL THEN
		RAISE EXCEPTION 'state must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF NOT state = ANY (allowed) THEN
		RAISE EXCEPTION 'invalid state filter "%"', state
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('The state must be one of %s.', array_to_string(allowed, ', '));
	END IF;
	IF since IS NOT NULL AND until IS NOT NULL AND since > until THEN
		RAISE EXCEPTION 'invalid time window: since is after until'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	RETURN ARRAY(
		SELECT j.job_id FROM pgqueue.jobs j
		 WHERE j.queue = _bulk_ids.queue
		   AND j.state = _bulk_ids.state
		   AND (error_like IS NULL OR j.last_error ILIKE error_like)
		   AND (since IS NULL OR j.updated_at >= since)
		   AND (until IS NULL OR j.updated_at < until)
		 ORDER BY j.job_id);
END
$$;

/*
 * queue_retry (bulk): retry every job of a queue in the given state (failed,
 * aborted or scheduled) whose last error matches error_like (ILIKE) and whose
 * last change falls in [since, until).  Returns the number retried.
 */
CREATE FUNCTION pgqueue.queue_retry(
	queue text,
	state text,
	error_like text DEFAULT NULL,
	since timestamptz DEFAULT NULL,
	until timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pgqueue
AS $$
DECLARE
	allowed text[] := ARRAY['failed', 'aborted', 'scheduled'];
	ids bigint[] := pgqueue._bulk_ids(queue, state, error_like, since, until, allowed);
BEGIN
	RETURN (SELECT count(*) FROM pgqueue._transition(pgqueue._queue_id(queue), ids, 'retry',
													 ARRAY[state], NULL));
END
$$;

/*
 * queue_abort: move one unfinished job to aborted (dead letter) with a
 * reason.  A lease held on it is revoked: its ack will fail with lease lost.
 */
CREATE FUNCTION pgqueue.queue_abort(queue text, job_id bigint, reason text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pgqueue
AS $$
DECLARE
	allowed text[] := ARRAY['available', 'blocked', 'scheduled', 'executing', 'failed'];
	qid integer;
BEGIN
	IF reason IS NULL THEN
		RAISE EXCEPTION 'reason must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	qid := pgqueue._check_one(queue, job_id, allowed, 'abort');
	IF NOT EXISTS (SELECT 1 FROM pgqueue._transition(qid, ARRAY[job_id], 'abort', allowed, reason)) THEN
		RAISE EXCEPTION 'could not abort job %: it changed concurrently', job_id
			USING ERRCODE = 'serialization_failure', HINT = 'Try again.';
	END IF;
END
$$;

/* queue_abort (bulk): abort every matching unfinished job; returns the count */
CREATE FUNCTION pgqueue.queue_abort(
	queue text,
	state text,
	reason text,
	error_like text DEFAULT NULL,
	since timestamptz DEFAULT NULL,
	until timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pgqueue
AS $$
DECLARE
	allowed text[] := ARRAY['available', 'blocked', 'scheduled', 'executing', 'failed'];
	ids bigint[];
BEGIN
	IF reason IS NULL THEN
		RAISE EXCEPTION 'reason must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	ids := pgqueue._bulk_ids(queue, state, error_like, since, until, allowed);
	/* a blocked job is available as far as its status goes */
	RETURN (SELECT count(*) FROM pgqueue._transition(pgqueue._queue_id(queue), ids, 'abort',
													 ARRAY[CASE state WHEN 'blocked' THEN 'available'
																	  ELSE state END],
													 reason));
END
$$;

/* ------------------------------------------------------------------------
 * Maintenance
 * ------------------------------------------------------------------------ */

/*
 * _expire_leases: end the expired leases of one block.  Each counts as a
 * failed attempt: the job becomes available at once, or aborted when its
 * attempts are used up.  Returns the number expired.
 */
CREATE FUNCTION pgqueue._expire_leases(b pgqueue.block, max_attempts integer)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue
AS $$
DECLARE
	n bigint;
	aborted bigint;
	now_ts timestamptz := clock_timestamp();
BEGIN
	EXECUTE format($q$
		WITH i AS (
			INSERT INTO %1$s (queue_id, job_id, seq, state, attempt, fails, at, due_at, error)
			SELECT s.queue_id, s.job_id, s.seq + 1,
				   CASE WHEN s.fails + 1 >= $2 THEN 'x' ELSE 'a' END,
				   s.attempt, s.fails + 1, $1,
				   CASE WHEN s.fails + 1 >= $2 THEN NULL ELSE $1 END,
				   format('lease of attempt %%s expired at %%s', s.attempt, s.due_at)
			  FROM %1$s s
			 WHERE s.state = 'e' AND s.due_at < $1
			   AND NOT EXISTS (SELECT 1 FROM %1$s n WHERE n.job_id = s.job_id AND n.seq > s.seq)
			ON CONFLICT DO NOTHING
			RETURNING state)
		SELECT count(*), count(*) FILTER (WHERE state = 'x') FROM i$q$,
		pgqueue._rel('s', b.queue_id, b.block_no))
	INTO n, aborted
	USING now_ts, max_attempts;
	IF n > 0 THEN
		PERFORM pgqueue._wake((SELECT q.name FROM pgqueue.queue q WHERE q.queue_id = b.queue_id),
							  CASE WHEN n > aborted THEN now_ts END, aborted);
	END IF;
	RETURN n;
END
$$;

/* _archive_rel: qualified name of a queue's archive table for one day */
CREATE FUNCTION pgqueue._archive_rel(queue_id integer, day date)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$ SELECT format('pgqueue_data.%I', 'a_' || queue_id || '_' || to_char(day, 'YYYYMMDD')) $$;

/* _archive_table: today's archive table of a queue, created if needed */
CREATE FUNCTION pgqueue._archive_table(queue_id integer)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue
AS $$
DECLARE
	today date := clock_timestamp()::date;
	a text := pgqueue._archive_rel(queue_id, today);
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pgqueue.archive ar
				   WHERE ar.queue_id = _archive_table.queue_id AND ar.day = today) THEN
		EXECUTE format('CREATE TABLE %s (CHECK (queue_id = %s), PRIMARY KEY (job_id, seq))'
					   ' INHERITS (pgqueue_data.archive_store)', a, queue_id);
		INSERT INTO pgqueue.archive (queue_id, day) VALUES (_archive_table.queue_id, today);
	END IF;
	RETURN a;
END
$$;

/*
 * _unseen: whether a row (by its xmin) was written by a transaction snap did
 * not see, other than this one; a subtransaction counts as its top-level
 * transaction.  For compaction, with a snap taken in the same transaction.
 */
CREATE FUNCTION pgqueue._unseen(x xid, snap pg_snapshot)
RETURNS boolean
LANGUAGE c STRICT STABLE
AS 'MODULE_PATHNAME', 'pgq_unseen';

/*
 * _wait_writers: wait until every other transaction that holds a lock to
 * write into one of rels now has ended; false if some has not after
 * timeout_ms.  Polls, takes no lock; for compaction.
 */
CREATE FUNCTION pgqueue._wait_writers(rels regclass[], timeout_ms integer)
RETURNS boolean
LANGUAGE c STRICT
AS 'MODULE_PATHNAME', 'pgq_wait_writers';

/*
 * _changed_tids: the tids of the rows on the pages of table rel whose LSN is
 * past since (every row inserted after WAL position since is among them);
 * for compaction
 */
CREATE FUNCTION pgqueue._changed_tids(rel regclass, since pg_lsn)
RETURNS tid[]
LANGUAGE c STRICT
AS 'MODULE_PATHNAME', 'pgq_changed_tids';

/*
 * _block_keep: how many jobs a block has, and how many compaction would
 * keep live: unfinished, or finished after cutoff (within the retention).
 * Counting the kept ones stops once there are clearly too many for the
 * block to qualify at threshold (keep is then 2 more than the most it
 * could keep: 1 more could still pass the float division of the test),
 * looking from the newest job down, where a queue drained in order keeps
 * them: a block of backlog costs a fifth of a full count at the default
 * threshold, not a count of every job.
 */
CREATE FUNCTION pgqueue._block_keep(queue_id integer, block_no integer, cutoff timestamptz,
									threshold double precision,
									OUT total bigint, OUT keep bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue
AS $$
DECLARE
	j text := pgqueue._rel('j', queue_id, block_no);
	s text := pgqueue._rel('s', queue_id, block_no);
BEGIN
	EXECUTE format('SELECT count(*) FROM %s', j) INTO total;
	EXECUTE format($q$
		SELECT count(*) FROM (
		  SELECT 1 FROM %1$s j
		  LEFT JOIN LATERAL (SELECT s.state, s.at FROM %2$s s WHERE s.job_id = j.job_id
							  ORDER BY s.seq DESC LIMIT 1) l ON true
		  WHERE l.state IS NULL OR l.state NOT IN ('d', 'x') OR l.at > $1
		  ORDER BY j.job_id DESC LIMIT $2) k$q$, j, s)
	INTO keep USING cutoff, floor(total * (1 - threshold))::bigint + 2;
END
$$;

/*
 * _compact_carry: for a compaction, carry over to its new block (tables nj,
 * ns) the rows of block b on pages changed after WAL position since that
 * were written by transactions snap did not see: such status rows, the jobs
 * they belong to and jobs pushed late.  Rows already there are skipped.
 * Returns the number of jobs added.  The rows are read by tid: the
 * planner, which takes each tid for a random page read, would rather scan
 * a whole table for a few thousand of them, though they lie on a few pages.
 */
CREATE FUNCTION pgqueue._compact_carry(b pgqueue.block, nj text, ns text, snap pg_snapshot,
									   since pg_lsn)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue
SET enable_seqscan = off
AS $$
DECLARE
	j text := pgqueue._rel('j', b.queue_id, b.block_no);
	s text := pgqueue._rel('s', b.queue_id, b.block_no);
	jt tid[] := pgqueue._changed_tids(j::regclass, since);
	st tid[] := pgqueue._changed_tids(s::regclass, since);
	n bigint;
BEGIN
	EXECUTE format($q$
		WITH d AS (
			SELECT s.* FROM %2$s s
			 WHERE s.ctid = ANY ($3) AND pgqueue._unseen(s.xmin, $1)),
		ids AS (
			SELECT d.job_id FROM d
			UNION
			SELECT j.job_id FROM %1$s j
			 WHERE j.ctid = ANY ($2) AND pgqueue._unseen(j.xmin, $1)),
		dj AS (
			INSERT INTO %3$s
			SELECT j.queue_id, j.job_id, j.key, j.priority, j.run_at, j.enqueued_at, j.payload,
				   j.tenant
			  FROM %1$s j
			 WHERE j.job_id = ANY (ARRAY(SELECT ids.job_id FROM ids))
			ON CONFLICT DO NOTHING
			RETURNING 1),
		ds AS (
			INSERT INTO %4$s SELECT * FROM d ON CONFLICT DO NOTHING)
		SELECT count(*) FROM dj$q$,
		j, s, nj, ns)
	INTO n USING snap, jt, st;
	RETURN n;
END
$$;

/*
 * _compact_step: one unit of compaction for a queue, in the caller's
 * transaction.  Finds the first contiguous run of closed blocks whose jobs
 * are mostly done with (finished longer ago than the queue's retention: at
 * least compact_threshold of them), moves the others (unfinished or
 * recently finished) with their latest status into one new block keeping
 * their ids, archives (or discards) all other status rows with their jobs,
 * and drops the old tables.  A run with nothing to keep is archived and
 * dropped without a new block.  The copying happens before the run is
 * fenced; under the fence only the rows on pages changed since the step
 * began are looked at.  The whole step is one transaction: a crash
 * anywhere leaves the blocks as they were.  Waits a bounded time for
 * writers and takes its locks with a short lock_timeout, and gives up
 * ('busy') rather than stall pushes and pops.  Needs READ COMMITTED (a
 * snapshot per statement).
 * Returns what it did, or NULL when nothing qualifies.
 */
CREATE FUNCTION pgqueue._compact_step(queue_id integer)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue
AS $$
DECLARE
	q pgqueue.queue;
	b pgqueue.block;
	run pgqueue.block[] := '{}';
	rels regclass[] := '{}';
	run_keep bigint := 0;
	run_jobs bigint := 0;
	run_bytes bigint := 0;
	keep bigint;
	total bigint;
	bytes bigint;
	budget bigint := pg_size_bytes(current_setting('shared_buffers')) / 4;
	cutoff timestamptz := clock_timestamp();
	new_no integer;
	nj text;
	ns text;
	a text;
	moved bigint := 0;
	archived bigint := 0;
	n bigint;
	saved_timeout text;
	since pg_lsn;
	snap pg_snapshot;
	caught_up pg_snapshot;
BEGIN
	IF current_setting('transaction_isolation') <> 'read committed' THEN
		RAISE EXCEPTION 'compaction requires the READ COMMITTED isolation level'
			USING ERRCODE = 'feature_not_supported';
	END IF;
	SELECT * INTO q FROM pgqueue.queue qu WHERE qu.queue_id = _compact_step.queue_id;
	cutoff := cutoff - q.retention;

	/*
	 * The first qualifying run of adjacent closed blocks, among the 8 oldest
	 * closed blocks that may qualify (a block created after the cutoff holds
	 * no job that finished before it).  The fence reads every page of the
	 * run's tables, and dropping them takes time too: a run has at most 4
	 * blocks, and more than one only while their tables fit in a quarter of
	 * shared_buffers, so that the fence finds them there.  What is seen
	 * here only chooses the run: the copy below decides what to keep.
	 */
	FOR b IN SELECT * FROM pgqueue.block bl
			  WHERE bl.queue_id = _compact_step.queue_id AND bl.state <> 'open'
				AND bl.created_at <= cutoff
			  ORDER BY bl.first_id LIMIT 8 LOOP
		bytes := pg_relation_size(pgqueue._rel('j', b.queue_id, b.block_no)::regclass)
			+ pg_relation_size(pgqueue._rel('s', b.queue_id, b.block_no)::regclass);
		EXIT WHEN cardinality(run) > 0
			AND (run[cardinality(run)].last_id + 1 <> b.first_id
				 OR cardinality(run) = 4 OR run_bytes + bytes > budget);
		SELECT k.total, k.keep INTO total, keep
		  FROM pgqueue._block_keep(b.queue_id, b.block_no, cutoff, q.compact_threshold) k;
		IF (total = 0 OR (total - keep)::float8 / total >= q.compact_threshold)
			AND NOT (keep = total AND b.block_no < 0) THEN
			run := run || b;
			run_keep := run_keep + keep;
			run_jobs := run_jobs + total;
			run_bytes := run_bytes + bytes;
		ELSIF cardinality(run) > 0 THEN
			EXIT;
		END IF;
	END LOOP;
	IF cardinality(run) = 0 OR (cardinality(run) = 1 AND run_keep = run_jobs AND run_jobs > 0) THEN
		RETURN NULL;
	END IF;
	FOR i IN 1 .. cardinality(run) LOOP
		rels := rels || pgqueue._rel('j', run[i].queue_id, run[i].block_no)::regclass
					 || pgqueue._rel('s', run[i].queue_id, run[i].block_no)::regclass;
	END LOOP;

	/*
	 * Copy before fencing.  Without blocking anyone: note the WAL position
	 * since, wait for the transactions that may write into the run now
	 * (they may have written before since), then take snap.  A row snap
	 * does not see was therefore inserted after since, on a page whose LSN
	 * is past since (every heap insert into a WAL-logged table stamps its
	 * page).  Then create the new block (not yet attached to the parent
	 * tables, whose lock a push that opens a block needs), copy the jobs to
	 * keep with their latest status and archive every other status row
	 * that snap sees; then carry over what snap did not see, on the pages
	 * changed since, as of the snapshot caught_up.  Last, fence the run
	 * (exclusive locks, taken with a short lock_timeout): no writer is
	 * left, and the rows caught_up did not see, on the pages changed since,
	 * are carried over.  The new block is then attached, or dropped if it
	 * got no job.  If the writers do not end in time or the locks cannot
	 * be had, the whole step rolls back: 'busy'.
	 */
	BEGIN
		since := pg_current_wal_insert_lsn();
		IF NOT pgqueue._wait_writers(rels, 1000) THEN
			RAISE EXCEPTION USING ERRCODE = 'lock_not_available';
		END IF;
		snap := pg_current_snapshot();
		IF q.archive THEN
			a := pgqueue._archive_table(q.queue_id);
		END IF;
		SELECT least(min(bl.block_no), 0) - 1 INTO new_no FROM pgqueue.block bl
		 WHERE bl.queue_id = q.queue_id;
		PERFORM pgqueue._block_tables(q.queue_id, new_no, run[1].first_id,
									  run[cardinality(run)].last_id, 'closed', false);
		nj := pgqueue._rel('j', q.queue_id, new_no);
		ns := pgqueue._rel('s', q.queue_id, new_no);
		PERFORM pgqueue._fault('compact_created');

		FOR i IN 1 .. cardinality(run) LOOP
			/* keep: unfinished, or finished within the retention */
			EXECUTE format($q$
				WITH k AS (
					SELECT j.*, l.seq
					  FROM %1$s j
					  LEFT JOIN LATERAL (SELECT s.seq, s.state, s.at FROM %2$s s
										  WHERE s.job_id = j.job_id
										  ORDER BY s.seq DESC LIMIT 1) l ON true
					 WHERE l.state IS NULL OR l.state NOT IN ('d', 'x') OR l.at > $1),
				kj AS (INSERT INTO %3$s SELECT queue_id, job_id, key, priority, run_at,
											   enqueued_at, payload, tenant FROM k),
				ks AS (INSERT INTO %4$s SELECT s.* FROM k JOIN %2$s s
										 ON s.job_id = k.job_id AND s.seq = k.seq)
				SELECT count(*) FROM k$q$,
				pgqueue._rel('j', run[i].queue_id, run[i].block_no),
				pgqueue._rel('s', run[i].queue_id, run[i].block_no), nj, ns)
			INTO n USING cutoff;
			moved := moved + n;
			PERFORM pgqueue._fault('compact_copied');

			/*
			 * archive every status row not moved, with its job's columns;
			 * rows snap did not see are carried over below
			 */
			IF q.archive THEN
				EXECUTE format($q$
					WITH x AS (
						INSERT INTO %3$s
						SELECT s.queue_id, s.job_id, s.seq, s.state, s.attempt, s.fails, s.at,
							   s.due_at, s.error, j.key, j.priority, j.enqueued_at, j.payload, $1,
							   j.tenant
						  FROM %2$s s JOIN %1$s j ON j.job_id = s.job_id
						 WHERE NOT pgqueue._unseen(s.xmin, $2)
						   AND NOT EXISTS (SELECT 1 FROM %4$s m
											WHERE m.job_id = s.job_id AND m.seq = s.seq)
						ON CONFLICT DO NOTHING
						RETURNING 1)
					SELECT count(*) FROM x$q$,
					pgqueue._rel('j', run[i].queue_id, run[i].block_no),
					pgqueue._rel('s', run[i].queue_id, run[i].block_no), a, ns)
				INTO n USING clock_timestamp(), snap;
				archived := archived + n;
			ELSE
				/* discarded: every status row but the latest of each moved job */
				EXECUTE format('SELECT count(*) FROM %s',
							   pgqueue._rel('s', run[i].queue_id, run[i].block_no))
				INTO n;
				archived := archived + n;
			END IF;
			PERFORM pgqueue._fault('compact_archived');
		END LOOP;

		/* what changed since snap, as far as caught_up sees, still unfenced */
		caught_up := pg_current_snapshot();
		FOR i IN 1 .. cardinality(run) LOOP
			moved := moved + pgqueue._compact_carry(run[i], nj, ns, snap, since);
		END LOOP;
		PERFORM pgqueue._fault('compact_caught_up');

		/* fence: no push or claim may change these blocks until commit */
		saved_timeout := current_setting('lock_timeout');
		PERFORM set_config('lock_timeout', '50ms', true);
		FOR i IN 1 .. cardinality(run) LOOP
			IF NOT pgqueue._block_lock(run[i].queue_id, run[i].block_no, true) THEN
				RAISE EXCEPTION USING ERRCODE = 'lock_not_available';
			END IF;
			EXECUTE format('LOCK TABLE %s, %s IN ACCESS EXCLUSIVE MODE',
						   pgqueue._rel('j', run[i].queue_id, run[i].block_no),
						   pgqueue._rel('s', run[i].queue_id, run[i].block_no));
		END LOOP;
		PERFORM pgqueue._fault('compact_locked');

		/* what changed since caught_up: on the pages changed since, too */
		FOR i IN 1 .. cardinality(run) LOOP
			moved := moved + pgqueue._compact_carry(run[i], nj, ns, caught_up, since);
		END LOOP;

		/* only now lock the parent tables, which a push that opens a block needs */
		IF moved > 0 THEN
			PERFORM pgqueue._block_inherit(q.queue_id, new_no);
		ELSE
			PERFORM pgqueue._block_drop(q.queue_id, new_no);
		END IF;
		PERFORM set_config('lock_timeout', saved_timeout, true);
	EXCEPTION WHEN lock_not_available THEN
		RETURN 'busy';
	END;

	FOR i IN 1 .. cardinality(run) LOOP
		PERFORM pgqueue._block_drop(run[i].queue_id, run[i].block_no);
	END LOOP;
	PERFORM pgqueue._fault('compact_swapped');
	RETURN format('%s blocks %s..%s: %s jobs moved%s, %s status rows %s',
				  cardinality(run), run[1].block_no, run[cardinality(run)].block_no, moved,
				  CASE WHEN moved > 0 THEN ' to block ' || new_no ELSE '' END,
				  CASE WHEN q.archive THEN archived ELSE archived - moved END,
				  CASE WHEN q.archive THEN 'archived' ELSE 'discarded' END);
END
$$;

/*
 * _archive_expire: drop a queue's archive tables whose day is older than
 * its archive retention.  Returns how many.
 */
CREATE FUNCTION pgqueue._archive_expire(queue_id integer)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue
AS $$
DECLARE
	a record;
	n integer := 0;
BEGIN
	FOR a IN SELECT ar.* FROM pgqueue.archive ar JOIN pgqueue.queue q USING (queue_id)
			  WHERE ar.queue_id = _archive_expire.queue_id
				AND ar.day < (clock_timestamp() - q.archive_retention)::date LOOP
		EXECUTE format('DROP TABLE %s', pgqueue._archive_rel(a.queue_id, a.day));
		DELETE FROM pgqueue.archive ar WHERE ar.queue_id = a.queue_id AND ar.day = a.day;
		PERFORM pgqueue._fault('archive_dropped');
		n := n + 1;
	END LOOP;
	RETURN n;
END
$$;

/*
 * _maintain_queue: the bookkeeping part of a round for one queue: expire
 * leases; close blocks whose id range is used up; mark closed blocks with no
 * unfinished job done, so that pop skips them; and create the next block
 * once the open one is half full, so that pushes do not run DDL.
 */
CREATE FUNCTION pgqueue._maintain_queue(queue_id integer)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue
AS $$
DECLARE
	q pgqueue.queue;
	b pgqueue.block;
	last_value bigint;
	expired bigint := 0;
	closed integer := 0;
	done integer := 0;
	created integer := 0;
	newest integer;
BEGIN
	SELECT * INTO q FROM pgqueue.queue qu WHERE qu.queue_id = _maintain_queue.queue_id;
	EXECUTE format('SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM pgqueue_data.%I',
				   'seq_' || q.queue_id) INTO last_value;
	FOR b IN SELECT * FROM pgqueue.block bl
			  WHERE bl.queue_id = q.queue_id AND bl.state <> 'done'
			  ORDER BY bl.first_id LOOP
		expired := expired + pgqueue._expire_leases(b, q.max_attempts);
		IF b.state = 'open' AND last_value >= b.last_id THEN
			UPDATE pgqueue.block bl SET state = 'closed'
			 WHERE bl.queue_id = b.queue_id AND bl.block_no = b.block_no;
			b.state := 'closed';
			closed := closed + 1;
		END IF;
		/*
		 * A closed block is done when no job in it is unfinished.  The
		 * block lock fences off pushes that have not committed yet, and the
		 * row lock on the block serializes with queue_retry reviving it.
		 */
		IF b.state = 'closed' AND pgqueue._block_lock(b.queue_id, b.block_no, true) THEN
			PERFORM 1 FROM pgqueue.block bl
			  WHERE bl.queue_id = b.queue_id AND bl.block_no = b.block_no
			  FOR UPDATE SKIP LOCKED;
			IF FOUND AND NOT pgqueue._block_busy(b.queue_id, b.block_no) THEN
				UPDATE pgqueue.block bl SET state = 'done'
				 WHERE bl.queue_id = b.queue_id AND bl.block_no = b.block_no;
				done := done + 1;
			END IF;
		END IF;
	END LOOP;

	/* the block after the one the sequence is in, once that is half used */
	newest := (greatest(last_value - 1, 0) / q.block_size)::integer;
	IF last_value - newest::bigint * q.block_size >= q.block_size / 2
		AND NOT EXISTS (SELECT 1 FROM pgqueue.block bl
						 WHERE bl.queue_id = q.queue_id AND bl.block_no = newest + 1) THEN
		PERFORM pgqueue._block_create(q.queue_id, newest + 1);
		PERFORM pgqueue._fault('block_created');
		created := 1;
	END IF;
	IF closed > 0 OR done > 0 THEN
		PERFORM pgqueue._cache_invalidate();
	END IF;
	RETURN jsonb_build_object('expired_leases', expired, 'closed_blocks', closed,
							  'done_blocks', done, 'created_blocks', created);
END
$$;

/*
 * maintain: one round of maintenance for one queue or all of them, in one
 * transaction: the bookkeeping of _maintain_queue, compaction until nothing
 * more qualifies, and expiry of old archive tables.  The background worker
 * runs the same steps, each in its own transaction.  Idempotent; returns
 * what it did as jsonb.
 */
CREATE FUNCTION pgqueue.maintain(queue text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pgqueue
AS $$
DECLARE
	q record;
	r jsonb;
	step text;
	expired bigint := 0;
	closed integer := 0;
	done integer := 0;
	created integer := 0;
	compacted text[] := '{}';
	dropped integer := 0;
BEGIN
	IF queue IS NOT NULL THEN
		PERFORM pgqueue._queue_id(queue);
	END IF;
	FOR q IN SELECT * FROM pgqueue.queue qu
			  WHERE maintain.queue IS NULL OR qu.name = maintain.queue
			  ORDER BY qu.queue_id LOOP
		r := pgqueue._maintain_queue(q.queue_id);
		expired := expired + (r->>'expired_leases')::bigint;
		closed := closed + (r->>'closed_blocks')::integer;
		done := done + (r->>'done_blocks')::integer;
		created := created + (r->>'created_blocks')::integer;
		LOOP
			step := pgqueue._compact_step(q.queue_id);
			EXIT WHEN step IS NULL OR step = 'busy';
			compacted := compacted || (q.name || ': ' || step);
		END LOOP;
		dropped := dropped + pgqueue._archive_expire(q.queue_id);
	END LOOP;
	RETURN jsonb_build_object('expired_leases', expired, 'closed_blocks', closed,
							  'done_blocks', done, 'created_blocks', created,
							  'compacted', to_jsonb(compacted),
							  'archives_dropped', dropped);
END
$$;

/* Only the extension owner may use pgqueue until it grants access (README). */
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgqueue FROM PUBLIC;
