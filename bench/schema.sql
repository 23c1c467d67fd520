DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['bench_a', 'bench_b', 'bench_c', 'bench_d', 'bench_live'] LOOP
    EXECUTE format('CREATE TABLE %I (id bigint PRIMARY KEY, n int NOT NULL, label text NOT NULL,
                    payload text NOT NULL, at timestamptz NOT NULL DEFAULT now())', t);
  END LOOP;
END $$;
CREATE TABLE bench_ins (id bigint PRIMARY KEY, n int NOT NULL, payload text NOT NULL);
CREATE PUBLICATION pgcdc_bench FOR TABLE bench_a, bench_b, bench_c, bench_d, bench_ins, bench_live;
