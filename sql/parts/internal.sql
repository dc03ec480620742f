/*
 * internal.sql: helpers that the other parts use, and block storage.
 * Everything here is in schema pgqueue_internal, which no role but the
 * extension's owner may use.
 *
 * Every function of pgqueue runs with search_path = pg_catalog, pgqueue,
 * pg_temp.  PostgreSQL never looks up functions or operators in pg_temp
 * and looks there for types and tables only after pg_catalog and pgqueue,
 * which only the owner may change; so built-in names are written plainly,
 * and every other name is schema-qualified.
 */

/*
 * _weights_valid: tenant_weights is an object mapping tenant names to
 * integer weights from 1 to 1000
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._weights_valid(w jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
SELECT jsonb_typeof(w) = 'object'
   AND NOT EXISTS (SELECT 1 FROM jsonb_each(w) e
					WHERE jsonb_typeof(e.value) <> 'number'
					   OR e.value::numeric NOT BETWEEN 1 AND 1000
					   OR e.value::numeric <> trunc(e.value::numeric)
					   OR octet_length(e.key) NOT BETWEEN 1 AND 63)
$$;

/* _cache_invalidate: tell every backend to reload its queue and block cache */
CREATE OR REPLACE FUNCTION pgqueue_internal._cache_invalidate()
RETURNS void
LANGUAGE c STRICT
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_cache_invalidate';

/*
 * _block_lock: take a block's lock in exclusive mode until the end of the
 * transaction.  Pushes hold it in a weaker mode while their transaction is
 * open, so holding it fences off pushes that have not committed yet.  With
 * nowait, returns false instead of waiting.
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._block_lock(queue_id integer, block_no integer,
														nowait boolean)
RETURNS boolean
LANGUAGE c STRICT
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_block_lock';

/*
 * _block_make_lock: take the lock of a block being made until the end of
 * the transaction, in a mode that makers of the block wait for and pushes
 * do not: a maker that finds the block made meanwhile must not wait for
 * the transactions that push into it.
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._block_make_lock(queue_id integer, block_no integer)
RETURNS void
LANGUAGE c STRICT
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_block_make_lock';

/*
 * _maint_lock: take the lock of a queue's maintenance until the end of the
 * transaction, so that two maintenance runs of one queue never overlap: the
 * second would work from blocks the first has dropped.  maintain() waits for
 * it; the worker, with nowait, leaves the queue for its next round.
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._maint_lock(queue_id integer, nowait boolean)
RETURNS boolean
LANGUAGE c STRICT
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_maint_lock';

/*
 * _wake: jobs of the queue become claimable at due (wake waiting pops at
 * commit) and aborted jobs to count; for the SQL-level functions
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._wake(queue text, due timestamptz, aborted bigint)
RETURNS void
LANGUAGE c
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_wake';

/* _caller: the role that called the API function running now */
CREATE OR REPLACE FUNCTION pgqueue_internal._caller()
RETURNS name
LANGUAGE c STABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_caller';

/* _state: the user-facing state of a job from its latest status row */
CREATE OR REPLACE FUNCTION pgqueue_internal._state(state "char", due_at timestamptz,
												   now timestamptz)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pgqueue, pg_temp
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
CREATE OR REPLACE FUNCTION pgqueue_internal._queue_id(queue text)
RETURNS integer
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgqueue, pg_temp
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
 * _rel: qualified name of a block table; kind is 'j' (jobs), 's' (status)
 * or 'c' (claims).
 * Blocks made by compaction have negative numbers, written c<n> in names.
 * The library reads the names from here too (cache.c).
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._rel(kind text, queue_id integer, block_no integer)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
	SELECT format('pgqueue_data.%I', kind || '_' || queue_id || '_' ||
				  CASE WHEN block_no < 0 THEN 'c' || -block_no ELSE block_no::text END)
$$;

/* _archive_rel: qualified name of a queue's archive table for one day */
CREATE OR REPLACE FUNCTION pgqueue_internal._archive_rel(queue_id integer, day date)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$ SELECT format('pgqueue_data.%I', 'a_' || queue_id || '_' || to_char(day, 'YYYYMMDD')) $$;

/*
 * _fault: fail the way pgqueue.fault_injection says at a named step of a
 * queue's maintenance (tests)
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._fault(step text)
RETURNS void
LANGUAGE c STRICT
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_fault';

/*
 * _block_tables: create the jobs and status tables of a block covering ids
 * lo to hi, and its catalog row.  Creating a table that inherits from
 * job_store or status_store locks them (ShareUpdateExclusiveLock) until
 * commit, against every other such creation; with inherit false, the
 * tables are created alone, for _block_inherit to attach at the end of a
 * long transaction (compaction).
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._block_tables(queue_id integer, block_no integer,
														  lo bigint, hi bigint, state text,
														  inherit boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
	j text := pgqueue_internal._rel('j', queue_id, block_no);
	s text := pgqueue_internal._rel('s', queue_id, block_no);
BEGIN
	EXECUTE format('CREATE TABLE %s (%sCHECK (queue_id = %s), CHECK (job_id BETWEEN %s AND %s),'
				   ' PRIMARY KEY (job_id))%s',
				   j, CASE WHEN inherit THEN '' ELSE 'LIKE pgqueue_data.job_store, ' END,
				   queue_id, lo, hi,
				   CASE WHEN inherit THEN ' INHERITS (pgqueue_data.job_store)' ELSE '' END);
	/*
	 * no statement of pgqueue filters on payload: ANALYZE skips it (its
	 * jsonb sort cost autovacuum 0.2 s a block of 100 000)
	 */
	EXECUTE format('ALTER TABLE %s ALTER COLUMN payload SET STATISTICS 0', j);
	/*
	 * pop reads per priority and tenant ('': none) in id order.  The jobs of
	 * the default lane (priority 0, no tenant) it reads through the primary
	 * key, so that a plain job costs one index entry: the lane index of a
	 * pushed block holds the other lanes' jobs, and of the default lane's
	 * only those that a push marked (lane_mark: its first of the block, if
	 * no committed mark is there) to show the lane to pop's scans of the
	 * lanes.  A block that compaction makes (inherit false) is filled by
	 * copies, which no push marked: its lane index holds every job.
	 */
	EXECUTE format('CREATE INDEX ON %s (priority, (coalesce(tenant, '''')), job_id)%s', j,
				   CASE WHEN inherit THEN ' WHERE priority <> 0 OR tenant IS NOT NULL OR lane_mark'
				   ELSE '' END);
	EXECUTE format('CREATE INDEX ON %s (key, job_id) WHERE key IS NOT NULL', j);
	EXECUTE format('CREATE TABLE %s (%sCHECK (queue_id = %s), CHECK (job_id BETWEEN %s AND %s),'
				   ' PRIMARY KEY (job_id, seq))%s',
				   s, CASE WHEN inherit THEN '' ELSE 'LIKE pgqueue_data.status_store, ' END,
				   queue_id, lo, hi,
				   CASE WHEN inherit THEN ' INHERITS (pgqueue_data.status_store)' ELSE '' END);
	/* pop's claim of due retried, released and scheduled jobs, by id */
	EXECUTE format('CREATE INDEX ON %s (job_id, due_at) WHERE state IN (''a'', ''s'', ''f'')', s);
	EXECUTE format('CREATE INDEX ON %s (due_at) WHERE state = ''e''', s);
	PERFORM pgqueue_internal._block_claims(queue_id, block_no, inherit);
	INSERT INTO pgqueue.block (queue_id, block_no, first_id, last_id, state)
	VALUES (_block_tables.queue_id, _block_tables.block_no, lo, hi, _block_tables.state);
	PERFORM pgqueue_internal._cache_invalidate();
END
$$;

/*
 * _block_claims: create the claims table of a block: its claim records are
 * looked up by lane and range start, and expire by lease end.  (The upgrade
 * from 0.1.0 gives one to each block it finds.)
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._block_claims(queue_id integer, block_no integer,
														  inherit boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
	c text := pgqueue_internal._rel('c', queue_id, block_no);
BEGIN
	EXECUTE format('CREATE TABLE %s (%sCHECK (queue_id = %s), PRIMARY KEY (claim_id, seq))%s',
				   c, CASE WHEN inherit THEN '' ELSE 'LIKE pgqueue_data.claim_store, ' END, queue_id,
				   CASE WHEN inherit THEN ' INHERITS (pgqueue_data.claim_store)' ELSE '' END);
	EXECUTE format('CREATE INDEX ON %s (priority, (coalesce(tenant, '''')), lo) WHERE seq = 0', c);
	EXECUTE format('CREATE INDEX ON %s (lease_until) WHERE seq = 0', c);
END
$$;

/* _block_inherit: attach the tables of a block made with inherit false */
CREATE OR REPLACE FUNCTION pgqueue_internal._block_inherit(queue_id integer, block_no integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
BEGIN
	EXECUTE format('ALTER TABLE %s INHERIT pgqueue_data.job_store',
				   pgqueue_internal._rel('j', queue_id, block_no));
	EXECUTE format('ALTER TABLE %s INHERIT pgqueue_data.status_store',
				   pgqueue_internal._rel('s', queue_id, block_no));
	EXECUTE format('ALTER TABLE %s INHERIT pgqueue_data.claim_store',
				   pgqueue_internal._rel('c', queue_id, block_no));
END
$$;

/*
 * _block_create: create block block_no of a queue if it does not exist yet.
 * Serialized per block by _block_make_lock; called by push when an id
 * crosses into a new block, by maintenance ahead of that (see
 * _maintain_queue), and by queue_create.  A creator then needs the parent
 * tables, which a transaction that made a block before holds until it
 * commits, and which that transaction may hold while it waits for this
 * block's lock (it makes a second block): so a creator that does not hold
 * them yet waits for them only a moment, gives the block's lock up and
 * tries again, and the other one goes first.
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._block_create(queue_id integer, block_no integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
	bs bigint;
	held boolean;
	at_parents boolean;
	saved_timeout text;
BEGIN
	SELECT q.block_size INTO STRICT bs FROM pgqueue.queue q
	 WHERE q.queue_id = _block_create.queue_id;
	held := EXISTS (SELECT 1 FROM pg_catalog.pg_locks l
					 WHERE l.pid = pg_catalog.pg_backend_pid() AND l.locktype = 'relation'
					   AND l.relation = 'pgqueue_data.job_store'::pg_catalog.regclass
					   AND l.mode = 'ShareUpdateExclusiveLock' AND l.granted);
	LOOP
		at_parents := false;
		BEGIN
			PERFORM pgqueue_internal._block_make_lock(queue_id, block_no);
			IF EXISTS (SELECT 1 FROM pgqueue.block b
					   WHERE b.queue_id = _block_create.queue_id
						 AND b.block_no = _block_create.block_no) THEN
				RETURN;
			END IF;
			IF NOT held THEN
				at_parents := true;
				saved_timeout := current_setting('lock_timeout');
				PERFORM set_config('lock_timeout', '200ms', true);
				LOCK TABLE ONLY pgqueue_data.job_store, ONLY pgqueue_data.status_store,
					ONLY pgqueue_data.claim_store IN SHARE UPDATE EXCLUSIVE MODE;
				PERFORM set_config('lock_timeout', saved_timeout, true);
			END IF;
			PERFORM pgqueue_internal._block_tables(queue_id, block_no, block_no::bigint * bs + 1,
												   (block_no::bigint + 1) * bs, 'open', true);
			RETURN;
		EXCEPTION WHEN lock_not_available THEN
			IF NOT at_parents THEN
				RAISE;
			END IF;
			PERFORM pg_catalog.pg_sleep(0.01);
		END;
	END LOOP;
END
$$;

/*
 * _forget: forget what shared memory keeps of one block of the queue whose
 * sequence is seq (its lanes), or with block_no NULL of the whole queue
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._forget(seq regclass, block_no integer)
RETURNS void
LANGUAGE c
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_forget';

/*
 * _forget_dropped: forget what shared memory keeps of this database's
 * queues but those whose sequences are given
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._forget_dropped(seqs oid[])
RETURNS void
LANGUAGE c STRICT
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_forget_dropped';

/* _seq: the id sequence of a queue (NULL once dropped) */
CREATE OR REPLACE FUNCTION pgqueue_internal._seq(queue_id integer)
RETURNS regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$ SELECT to_regclass(format('pgqueue_data.%I', 'seq_' || queue_id)) $$;

/* _block_drop: drop the tables and catalog row of one block */
CREATE OR REPLACE FUNCTION pgqueue_internal._block_drop(queue_id integer, block_no integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
BEGIN
	EXECUTE format('DROP TABLE IF EXISTS %s, %s, %s',
				   pgqueue_internal._rel('j', queue_id, block_no),
				   pgqueue_internal._rel('s', queue_id, block_no),
				   pgqueue_internal._rel('c', queue_id, block_no));
	DELETE FROM pgqueue.block b
	 WHERE b.queue_id = _block_drop.queue_id AND b.block_no = _block_drop.block_no;
	PERFORM pgqueue_internal._forget(pgqueue_internal._seq(queue_id), block_no);
	PERFORM pgqueue_internal._cache_invalidate();
END
$$;

/* _worker_poke: have this database's maintenance worker started soon */
CREATE OR REPLACE FUNCTION pgqueue_internal._worker_poke()
RETURNS void
LANGUAGE c
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_worker_poke';

/* _block_revive: a done block got a job back; pop must look at it again */
CREATE OR REPLACE FUNCTION pgqueue_internal._block_revive(queue_id integer, block_no integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
BEGIN
	UPDATE pgqueue.block b SET state = 'closed'
	 WHERE b.queue_id = _block_revive.queue_id AND b.block_no = _block_revive.block_no
	   AND b.state = 'done';
	PERFORM pgqueue_internal._cache_invalidate();
END
$$;

/*
 * _key_ready and _take: flow-control tests of queue_pop's claim statements
 * (flow.c), for those statements only.  Costed high so that they run after
 * a candidate's other conditions (a probe of an index costs about 10).
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._key_ready(key text, job_id bigint)
RETURNS boolean
LANGUAGE c STRICT VOLATILE COST 100000
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_key_ready';
CREATE OR REPLACE FUNCTION pgqueue_internal._take(tenant text)
RETURNS boolean
LANGUAGE c VOLATILE COST 1000000
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_tenant_take';

/*
 * _unclaimed: the never-claimed test of queue_pop's claim statements (pop.c),
 * for those statements only
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._unclaimed(job_id bigint, priority integer, tenant text)
RETURNS boolean
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_unclaimed';

/*
 * _job_state: the current state of a job of a queue (of lane priority,
 * tenant), the one definition every part uses (claim.c): its latest status
 * row, else the claim record that holds it; state NULL if it was never
 * claimed.  claim_id is that of the claim that holds it, if any.
 * (Compaction reads all the jobs of a block at once: _block_states.)
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._job_state(queue_id integer, job_id bigint,
													   priority integer, tenant text,
													   OUT seq integer, OUT state "char",
													   OUT attempt integer, OUT fails integer,
													   OUT at timestamptz, OUT due_at timestamptz,
													   OUT error text, OUT claim_id bigint)
RETURNS record
LANGUAGE c STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_job_state_sql';

/*
 * _claim_abort: abort one job that a claim record holds (finish.c); false
 * if no claim holds it now
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._claim_abort(queue_id integer, job_id bigint,
														 priority integer, tenant text,
														 reason text)
RETURNS boolean
LANGUAGE c
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_claim_abort';

/*
 * _flow_count: a queue's unfinished and executing jobs, of one tenant if
 * given; flow control reads them when its counts in shared memory are not
 * known.  A tenant's jobs are read through the lane index, one priority
 * at a time, so that counting a tenant costs its own jobs, not the queue's.
 * Stable: every block is read with the snapshot of the caller, which flow
 * control chooses (flow.c, ensure_counted).
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._flow_count(queue_id integer, tenant text,
														OUT depth bigint, OUT inflight bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgqueue, pg_temp
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
			WITH RECURSIVE p(v) AS (
				SELECT min(j.priority) FROM %1$s j
				 WHERE $1::text IS NOT NULL AND j.tenant IS NOT NULL
				UNION ALL
				SELECT (SELECT min(j.priority) FROM %1$s j
						 WHERE j.priority > p.v AND j.tenant IS NOT NULL)
				  FROM p WHERE p.v IS NOT NULL),
			jobs AS (
				SELECT j.* FROM %1$s j WHERE $1::text IS NULL
				UNION ALL
				SELECT j.* FROM p CROSS JOIN LATERAL (
					SELECT * FROM %1$s j
					 WHERE j.priority = p.v AND j.tenant IS NOT NULL
					   AND coalesce(j.tenant, '') = $1) j)
			SELECT count(*) FILTER (WHERE l.state IS NULL OR l.state NOT IN ('d', 'x')),
				   count(*) FILTER (WHERE l.state = 'e')
			  FROM jobs j
			 CROSS JOIN LATERAL pgqueue_internal._job_state(j.queue_id, j.job_id, j.priority,
															j.tenant) l$q$,
			pgqueue_internal._rel('j', b.queue_id, b.block_no))
		INTO d, f USING tenant;
		depth := depth + d;
		inflight := inflight + f;
	END LOOP;
END
$$;
