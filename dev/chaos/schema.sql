-- Chaos test schema: three captured tables whose every change gets a unique change_id, and a
-- ground-truth table (not captured) that records each committed change in the same
-- transaction. Rolled-back changes leave no truth row and no WAL commit: both sides agree.
-- A primary-key change is recorded as pgcdc (and Debezium) sends it: a delete of the old key
-- and an insert of the new one.
CREATE SEQUENCE chaos_change_seq;
CREATE TABLE chaos_truth (
  change_id bigint PRIMARY KEY,   -- for inserts/updates: the row's new change_id
  tbl       text NOT NULL,
  op        "char" NOT NULL,      -- i, u, d
  id        bigint NOT NULL,
  prev      bigint                -- the row's change_id before this change (u, d)
);

CREATE FUNCTION chaos_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.change_id := nextval('chaos_change_seq');
  RETURN NEW;
END $$;

CREATE FUNCTION chaos_record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO chaos_truth VALUES (NEW.change_id, TG_TABLE_NAME, 'i', NEW.id, NULL);
  ELSIF TG_OP = 'UPDATE' AND NEW.id <> OLD.id THEN
    -- A primary-key change: Debezium's delete of the old key, then a create of the new one.
    INSERT INTO chaos_truth VALUES (nextval('chaos_change_seq'), TG_TABLE_NAME, 'd', OLD.id, OLD.change_id);
    INSERT INTO chaos_truth VALUES (NEW.change_id, TG_TABLE_NAME, 'i', NEW.id, NULL);
  ELSIF TG_OP = 'UPDATE' THEN
    INSERT INTO chaos_truth VALUES (NEW.change_id, TG_TABLE_NAME, 'u', NEW.id, OLD.change_id);
  ELSE
    INSERT INTO chaos_truth VALUES (nextval('chaos_change_seq'), TG_TABLE_NAME, 'd', OLD.id, OLD.change_id);
  END IF;
  RETURN NULL;
END $$;

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['chaos_a', 'chaos_b', 'chaos_c'] LOOP
    EXECUTE format('CREATE TABLE %I (id bigint PRIMARY KEY, change_id bigint NOT NULL, payload text NOT NULL, n int NOT NULL DEFAULT 0)', t);
    EXECUTE format('ALTER TABLE %I REPLICA IDENTITY FULL', t);
    EXECUTE format('CREATE TRIGGER stamp BEFORE INSERT OR UPDATE ON %I FOR EACH ROW EXECUTE FUNCTION chaos_stamp()', t);
    EXECUTE format('CREATE TRIGGER record AFTER INSERT OR UPDATE OR DELETE ON %I FOR EACH ROW EXECUTE FUNCTION chaos_record()', t);
  END LOOP;
END $$;
CREATE SEQUENCE chaos_id_seq;
-- ~6 KB of random hex: stored out of line (TOAST) even after compression.
CREATE FUNCTION chaos_big(seed bigint) RETURNS text VOLATILE LANGUAGE sql AS $$
  SELECT string_agg(md5(random()::text || seed), '') FROM generate_series(1, 200)
$$;
