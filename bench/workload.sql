-- The fixed benchmark workload: 500,000 row changes over 4 tables, rows of about 200 bytes,
-- in transactions from 10 to 10,000 rows. Run after both slots exist.
CREATE OR REPLACE PROCEDURE bench_insert(tbl text, first bigint, total bigint, per_txn int)
LANGUAGE plpgsql AS $$
DECLARE s bigint := first;
BEGIN
  WHILE s < first + total LOOP
    EXECUTE format(
      'INSERT INTO %I (id, n, label, payload) SELECT g, g %% 1000, ''label-'' || g,
         md5(g::text) || md5((g + 1)::text) || md5((g + 2)::text) || md5((g + 3)::text) || md5((g + 4)::text)
       FROM generate_series($1, $2) g', tbl)
    USING s, least(s + per_txn - 1, first + total - 1);
    COMMIT;
    s := s + per_txn;
  END LOOP;
END $$;

CREATE OR REPLACE PROCEDURE bench_update(tbl text, first bigint, total bigint, per_txn int)
LANGUAGE plpgsql AS $$
DECLARE s bigint := first;
BEGIN
  WHILE s < first + total LOOP
    EXECUTE format('UPDATE %I SET n = n + 1, label = ''updated-'' || id WHERE id BETWEEN $1 AND $2', tbl)
    USING s, least(s + per_txn - 1, first + total - 1);
    COMMIT;
    s := s + per_txn;
  END LOOP;
END $$;

CREATE OR REPLACE PROCEDURE bench_delete(tbl text, first bigint, total bigint, per_txn int)
LANGUAGE plpgsql AS $$
DECLARE s bigint := first;
BEGIN
  WHILE s < first + total LOOP
    EXECUTE format('DELETE FROM %I WHERE id BETWEEN $1 AND $2', tbl)
    USING s, least(s + per_txn - 1, first + total - 1);
    COMMIT;
    s := s + per_txn;
  END LOOP;
END $$;

CALL bench_insert('bench_a', 1, 200000, 10000);   -- 200k inserts, large transactions
CALL bench_insert('bench_b', 1, 100000, 10);      -- 100k inserts, 10,000 small transactions
CALL bench_insert('bench_c', 1, 50000, 1000);     --  50k inserts
CALL bench_update('bench_c', 1, 50000, 100);      --  50k updates
CALL bench_insert('bench_d', 1, 60000, 100);      --  60k inserts
CALL bench_delete('bench_d', 1, 40000, 1000);     --  40k deletes
