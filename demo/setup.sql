-- demo/setup.sql: the extension, one queue and the demo's worker function
CREATE EXTENSION pgqueue;
SELECT pgqueue.queue_create('emails', block_size => 2000, default_lease => '30 seconds',
							max_attempts => 5, backoff_base => '100 milliseconds',
							backoff_cap => '1 second', backoff_jitter => 0.2,
							retention => '2 seconds');

/*
 * demo_work: one consumer step.  Pops up to n jobs and "sends" each: a
 * flaky job fails half the time, a poison job always fails, the rest succeed.
 */
CREATE FUNCTION demo_work(n integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
	j pgqueue.job;
	done integer := 0;
BEGIN
	FOR j IN SELECT * FROM pgqueue.queue_pop('emails', n) LOOP
		IF (j.payload->>'poison')::boolean THEN
			PERFORM pgqueue.queue_fail('emails', j.job_id, 'smtp: 550 mailbox unavailable',
									   attempt => j.attempt);
		ELSIF (j.payload->>'flaky')::boolean AND random() < 0.5 THEN
			PERFORM pgqueue.queue_fail('emails', j.job_id, 'smtp: 421 try again later',
									   attempt => j.attempt);
		ELSE
			PERFORM pgqueue.queue_ack('emails', j.job_id, j.attempt);
			done := done + 1;
		END IF;
	END LOOP;
	RETURN done;
END
$$;
