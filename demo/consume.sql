-- demo/consume.sql: pgbench script of a consumer, 20 jobs per call
SELECT demo_work(20);
