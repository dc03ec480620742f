/*
 * queues.sql: queue management.  The functions of schema pgqueue here are
 * entry points in C (pgq_admin_call): each checks that its caller holds
 * the admin right on the queue (privilege.c) and runs the function of the
 * same name and arguments in pgqueue_internal, as the extension's owner.
 */

/*
 * _queue_set: change options of a queue, given as a jsonb object of option
 * names and values (as jsonb_populate_record reads them).  Any column of
 * pgqueue.queue but its name, id, block size, owner, pause flag and
 * creation time is an option, so options added by later releases need no
 * new function.  Unknown options and bad values raise 22023 and change
 * nothing.
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._queue_set(queue text, options jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
	qid integer := pgqueue_internal._queue_id(queue);
	unknown text;
	cols text;
BEGIN
	SELECT string_agg(k, ', ' ORDER BY k) INTO unknown
	  FROM jsonb_object_keys(options) k
	 WHERE k <> ALL (pgqueue_internal._queue_options());
	IF unknown IS NOT NULL THEN
		RAISE EXCEPTION 'unrecognized option % for queue "%"', unknown, queue
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = format('The options are %s.',
								array_to_string(pgqueue_internal._queue_options(), ', '));
	END IF;
	SELECT string_agg(format('%1$I = r.%1$I', k), ', ') INTO cols
	  FROM jsonb_object_keys(options) k;
	IF cols IS NULL THEN
		RETURN;
	END IF;
	BEGIN
		EXECUTE format('UPDATE pgqueue.queue q SET %s'
					   ' FROM jsonb_populate_record(NULL::pgqueue.queue, $1) r'
					   ' WHERE q.queue_id = $2', cols)
		USING options, qid;
	EXCEPTION WHEN check_violation OR not_null_violation OR invalid_text_representation
				   OR invalid_datetime_format OR datetime_field_overflow
				   OR numeric_value_out_of_range OR interval_field_overflow
				   OR invalid_parameter_value THEN
		RAISE EXCEPTION 'invalid option for queue "%"', queue
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = SQLERRM,
				  HINT = pgqueue_internal._queue_bounds();
	END;
	PERFORM pgqueue_internal._cache_invalidate();
	/* counts are kept only while limits are set: read them again */
	PERFORM pgqueue_internal._wake(queue, NULL, 0);
END
$$;

/* _queue_options: the names of the options that _queue_set may change */
CREATE OR REPLACE FUNCTION pgqueue_internal._queue_options()
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
	SELECT array_agg(a.attname::text ORDER BY a.attnum)
	  FROM pg_attribute a
	 WHERE a.attrelid = 'pgqueue.queue'::regclass AND a.attnum > 0 AND NOT a.attisdropped
	   AND a.attname NOT IN ('queue_id', 'name', 'block_size', 'owner', 'paused', 'created_at')
$$;

/* _queue_bounds: the hint of an invalid option */
CREATE OR REPLACE FUNCTION pgqueue_internal._queue_bounds()
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
	SELECT 'block_size is 100 to 1000000000; default_lease is above 0 and at most 1 year;'
		   ' max_attempts is 1 to 1000; 0 <= backoff_base <= backoff_cap <= 1 year;'
		   ' backoff_jitter is 0 to 1; retention and archive_retention are 0 to 100 years;'
		   ' compact_threshold is above 0 and at most 1; limits are not negative and rates'
		   ' are 0 to 1e9 (0: no limit); tenant_weights maps tenants to integers 1 to 1000.'
$$;

/* queue_create: define a queue and create its sequence and first block */
CREATE OR REPLACE FUNCTION pgqueue_internal.queue_create(
	queue text,
	block_size bigint,
	default_lease interval,
	max_attempts integer,
	backoff_base interval,
	backoff_cap interval,
	backoff_jitter double precision,
	notify boolean,
	retention interval,
	archive boolean,
	archive_retention interval,
	compact_threshold double precision,
	max_in_flight integer,
	tenant_max_in_flight integer,
	max_depth bigint,
	tenant_max_depth bigint,
	push_rate double precision,
	tenant_push_rate double precision,
	pop_rate double precision,
	tenant_pop_rate double precision,
	tenant_weights jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
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
								   tenant_pop_rate, tenant_weights, owner)
		VALUES (qid, queue, block_size, default_lease, max_attempts,
				backoff_base, backoff_cap, backoff_jitter, notify,
				retention, archive, archive_retention, compact_threshold,
				max_in_flight, tenant_max_in_flight, max_depth,
				tenant_max_depth, push_rate, tenant_push_rate, pop_rate,
				tenant_pop_rate, tenant_weights, pgqueue_internal._caller());
	EXCEPTION WHEN check_violation THEN
		RAISE EXCEPTION 'invalid option for queue "%"', queue
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = SQLERRM,
				  HINT = pgqueue_internal._queue_bounds();
	WHEN unique_violation THEN
		RAISE EXCEPTION 'queue "%" already exists', queue
			USING ERRCODE = 'duplicate_object';
	END;
	EXECUTE format('CREATE SEQUENCE pgqueue_data.%I AS bigint CACHE 1', 'seq_' || qid);
	PERFORM pgqueue_internal._block_create(qid, 0);
	PERFORM pgqueue_internal._worker_poke();
END
$$;

CREATE OR REPLACE FUNCTION pgqueue.queue_create(
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
LANGUAGE c
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_admin_call';

/*
 * queue_alter: change the options of a queue; NULL leaves an option as it
 * is.  Options added after 0.2.0 are set with queue_set.
 */
CREATE OR REPLACE FUNCTION pgqueue_internal.queue_alter(
	queue text,
	default_lease interval,
	max_attempts integer,
	backoff_base interval,
	backoff_cap interval,
	backoff_jitter double precision,
	notify boolean,
	retention interval,
	archive boolean,
	archive_retention interval,
	compact_threshold double precision,
	max_in_flight integer,
	tenant_max_in_flight integer,
	max_depth bigint,
	tenant_max_depth bigint,
	push_rate double precision,
	tenant_push_rate double precision,
	pop_rate double precision,
	tenant_pop_rate double precision,
	tenant_weights jsonb)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
	SELECT pgqueue_internal._queue_set(queue, jsonb_strip_nulls(jsonb_build_object(
		'default_lease', default_lease, 'max_attempts', max_attempts,
		'backoff_base', backoff_base, 'backoff_cap', backoff_cap,
		'backoff_jitter', backoff_jitter, 'notify', notify, 'retention', retention,
		'archive', archive, 'archive_retention', archive_retention,
		'compact_threshold', compact_threshold, 'max_in_flight', max_in_flight,
		'tenant_max_in_flight', tenant_max_in_flight, 'max_depth', max_depth,
		'tenant_max_depth', tenant_max_depth, 'push_rate', push_rate,
		'tenant_push_rate', tenant_push_rate, 'pop_rate', pop_rate,
		'tenant_pop_rate', tenant_pop_rate, 'tenant_weights', tenant_weights)))
$$;

CREATE OR REPLACE FUNCTION pgqueue.queue_alter(
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
LANGUAGE c
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_admin_call';

/*
 * queue_set: set one option of a queue from its text form, for example
 * queue_set('q', 'max_attempts', '3') or queue_set('q', 'tenant_weights',
 * '{"big": 3}'); every option of queue_alter, and those later releases add
 */
CREATE OR REPLACE FUNCTION pgqueue_internal.queue_set(queue text, option text, value text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
BEGIN
	IF option IS NULL OR value IS NULL THEN
		RAISE EXCEPTION 'option and value must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM pgqueue_internal._queue_id(queue);
	IF option = 'tenant_weights' THEN
		BEGIN
			PERFORM value::jsonb;
		EXCEPTION WHEN invalid_text_representation THEN
			RAISE EXCEPTION 'invalid option for queue "%"', queue
				USING ERRCODE = 'invalid_parameter_value', DETAIL = SQLERRM,
					  HINT = pgqueue_internal._queue_bounds();
		END;
		PERFORM pgqueue_internal._queue_set(queue, jsonb_build_object(option, value::jsonb));
	ELSE
		PERFORM pgqueue_internal._queue_set(queue, jsonb_build_object(option, value));
	END IF;
END
$$;

CREATE OR REPLACE FUNCTION pgqueue.queue_set(queue text, option text, value text)
RETURNS void
LANGUAGE c
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_admin_call';

/* queue_drop: drop a queue; refuses one with unfinished jobs unless forced */
CREATE OR REPLACE FUNCTION pgqueue_internal.queue_drop(queue text, force boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
	qid integer := pgqueue_internal._queue_id(queue);
	live bigint;
	b record;
BEGIN
	IF force IS NULL THEN
		RAISE EXCEPTION 'force must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM 1 FROM pgqueue.queue q WHERE q.queue_id = qid FOR UPDATE;
	IF NOT force THEN
		SELECT coalesce(sum(st.unfinished), 0) INTO live
		  FROM pgqueue.block bl, pgqueue_internal._block_stats(bl.queue_id, bl.block_no) st
		 WHERE bl.queue_id = qid AND bl.state <> 'done';
		IF live > 0 THEN
			RAISE EXCEPTION 'queue "%" is not empty', queue
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  DETAIL = format(CASE WHEN live = 1 THEN 'It has %s unfinished job.'
										   ELSE 'It has %s unfinished jobs.' END, live),
					  HINT = 'Use queue_drop(queue, force => true) to drop it anyway.';
		END IF;
	END IF;
	FOR b IN SELECT * FROM pgqueue.block bl WHERE bl.queue_id = qid LOOP
		PERFORM pgqueue_internal._block_drop(b.queue_id, b.block_no);
	END LOOP;
	FOR b IN SELECT * FROM pgqueue.archive a WHERE a.queue_id = qid LOOP
		EXECUTE format('DROP TABLE %s', pgqueue_internal._archive_rel(b.queue_id, b.day));
	END LOOP;
	PERFORM pgqueue_internal._forget(pgqueue_internal._seq(qid), NULL);
	EXECUTE format('DROP SEQUENCE pgqueue_data.%I', 'seq_' || qid);
	DELETE FROM pgqueue.queue q WHERE q.queue_id = qid;
	PERFORM pgqueue_internal._cache_invalidate();
END
$$;

CREATE OR REPLACE FUNCTION pgqueue.queue_drop(queue text, force boolean DEFAULT false)
RETURNS void
LANGUAGE c
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_admin_call';

/* _set_paused: shared body of queue_pause and queue_resume */
CREATE OR REPLACE FUNCTION pgqueue_internal._set_paused(queue text, paused boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
BEGIN
	UPDATE pgqueue.queue q SET paused = _set_paused.paused
	 WHERE q.queue_id = pgqueue_internal._queue_id(queue);
	PERFORM pgqueue_internal._cache_invalidate();
	IF NOT paused THEN
		PERFORM pgqueue_internal._wake(queue, clock_timestamp(), 0);
	END IF;
END
$$;

/* queue_pause: pop returns nothing until queue_resume; push still works */
CREATE OR REPLACE FUNCTION pgqueue_internal.queue_pause(queue text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$ SELECT pgqueue_internal._set_paused(queue, true) $$;

CREATE OR REPLACE FUNCTION pgqueue.queue_pause(queue text)
RETURNS void
LANGUAGE c
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_admin_call';

/* queue_resume: let pop claim jobs of a paused queue again */
CREATE OR REPLACE FUNCTION pgqueue_internal.queue_resume(queue text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$ SELECT pgqueue_internal._set_paused(queue, false) $$;

CREATE OR REPLACE FUNCTION pgqueue.queue_resume(queue text)
RETURNS void
LANGUAGE c
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_admin_call';

/*
 * queue_purge: discard every job of a queue, whatever its state.  The blocks
 * are dropped and a new block starts at the next id, so ids are never reused.
 * Returns the number of jobs discarded.
 */
CREATE OR REPLACE FUNCTION pgqueue_internal.queue_purge(queue text)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
	qid integer := pgqueue_internal._queue_id(queue);
	b record;
	n bigint;
	total bigint := 0;
	next_id bigint;
	bs bigint;
BEGIN
	SELECT q.block_size INTO bs FROM pgqueue.queue q WHERE q.queue_id = qid FOR UPDATE;
	FOR b IN SELECT * FROM pgqueue.block bl WHERE bl.queue_id = qid LOOP
		EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE',
					   pgqueue_internal._rel('j', b.queue_id, b.block_no));
		EXECUTE format('SELECT count(*) FROM %s',
					   pgqueue_internal._rel('j', b.queue_id, b.block_no)) INTO n;
		total := total + n;
		PERFORM pgqueue_internal._block_drop(b.queue_id, b.block_no);
	END LOOP;
	EXECUTE format('SELECT nextval(%L)', 'pgqueue_data.seq_' || qid) INTO next_id;
	PERFORM pgqueue_internal._block_create(qid, ((next_id - 1) / bs)::integer);
	/* the flow-control counts must be read again */
	PERFORM pgqueue_internal._wake(queue, NULL, 0);
	RETURN total;
END
$$;

CREATE OR REPLACE FUNCTION pgqueue.queue_purge(queue text)
RETURNS bigint
LANGUAGE c
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_admin_call';

/* _privileges_valid: check a list of per-queue privileges */
CREATE OR REPLACE FUNCTION pgqueue_internal._privileges_valid(privileges text[])
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
	bad text;
BEGIN
	IF privileges IS NULL OR array_position(privileges, NULL) IS NOT NULL THEN
		RAISE EXCEPTION 'privileges must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT p INTO bad FROM unnest(privileges) p
	 WHERE p NOT IN ('push', 'consume', 'admin') LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'unrecognized privilege "%"', bad
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'The privileges on a queue are push, consume and admin.';
	END IF;
END
$$;

/*
 * queue_grant: give a role (and the roles that inherit its privileges)
 * rights on one queue: push (queue_push, queue_push_batch), consume
 * (queue_pop, queue_ack, queue_fail, queue_extend, queue_release) and
 * admin (the functions of this file, retry, abort, maintain).  From the
 * first grant of a right on, only its grantees, the queue's owner and
 * superusers have it.
 */
CREATE OR REPLACE FUNCTION pgqueue_internal.queue_grant(queue text, role name, privileges text[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
	qid integer := pgqueue_internal._queue_id(queue);
BEGIN
	PERFORM pgqueue_internal._privileges_valid(privileges);
	IF role IS NULL THEN
		RAISE EXCEPTION 'role must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = role) THEN
		RAISE EXCEPTION 'role "%" does not exist', role USING ERRCODE = 'undefined_object';
	END IF;
	INSERT INTO pgqueue.queue_acl (queue_id, grantee, privilege)
	SELECT qid, role, p FROM unnest(privileges) p
	ON CONFLICT DO NOTHING;
	PERFORM pgqueue_internal._cache_invalidate();
END
$$;

CREATE OR REPLACE FUNCTION pgqueue.queue_grant(queue text, role name, privileges text[])
RETURNS void
LANGUAGE c
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_admin_call';

/*
 * queue_revoke: take rights on one queue back from a role (all three if
 * none are named).  A right whose last grant is revoked is open again.
 */
CREATE OR REPLACE FUNCTION pgqueue_internal.queue_revoke(queue text, role name,
														 privileges text[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
	qid integer := pgqueue_internal._queue_id(queue);
BEGIN
	PERFORM pgqueue_internal._privileges_valid(privileges);
	IF role IS NULL THEN
		RAISE EXCEPTION 'role must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	DELETE FROM pgqueue.queue_acl a
	 WHERE a.queue_id = qid AND a.grantee = role AND a.privilege = ANY (privileges);
	PERFORM pgqueue_internal._cache_invalidate();
END
$$;

CREATE OR REPLACE FUNCTION pgqueue.queue_revoke(queue text, role name,
												privileges text[] DEFAULT '{push,consume,admin}')
RETURNS void
LANGUAGE c
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_admin_call';
