-- demo/produce.sql: pgbench script of a producer, 50 jobs per call
SELECT pgqueue.queue_push_batch('emails',
	array_agg(jsonb_build_object('to', 'user' || g || '@example.com',
								 'flaky', random() < 0.2,
								 'poison', random() < 0.01)),
	array_agg('user' || (g % 100)),
	array_agg(CASE WHEN g % 10 = 0 THEN 10 ELSE 0 END),
	NULL,
	array_agg('shop' || (g % 5)))
  FROM generate_series(1, 50) g;
