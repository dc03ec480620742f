-- demo/drain.sql: run a consumer until nothing is left to do, committing
-- after every round (the next job of a key goes when its ack commits)
CREATE OR REPLACE PROCEDURE demo_drain()
LANGUAGE plpgsql AS $$
DECLARE
	idle integer := 0;
BEGIN
	FOR i IN 1..600 LOOP
		PERFORM demo_work(500);
		COMMIT;
		/* three looks in a row: one can miss jobs a compaction is moving */
		IF EXISTS (SELECT 1 FROM pgqueue.jobs
					WHERE queue = 'emails'
					  AND state IN ('available', 'blocked', 'scheduled', 'executing', 'failed')) THEN
			idle := 0;
		ELSE
			idle := idle + 1;
		END IF;
		EXIT WHEN idle = 3;
		PERFORM pg_sleep(0.05);
	END LOOP;
END
$$;
CALL demo_drain();
