-- The second benchmark workload: 500,000 inserts into one table in 50 transactions of
-- 10,000, rows of about 140 bytes (issue 13's backlog). Run after the slots exist.
DO $$
BEGIN
  FOR t IN 0..49 LOOP
    INSERT INTO bench_ins (id, n, payload)
      SELECT g, g % 1000, md5(g::text) || md5((g + 1)::text) || md5((g + 2)::text) || md5((g + 3)::text)
      FROM generate_series(t * 10000 + 1, (t + 1) * 10000) g;
    COMMIT;
  END LOOP;
END $$;
