-- Tables for the Debezium 3.6.3 reference capture (dev/debezium-ref/run).
CREATE TABLE orders (
  id bigserial PRIMARY KEY,
  customer text NOT NULL,
  status text NOT NULL DEFAULT 'pending',
  currency char(3) NOT NULL DEFAULT 'EUR',
  paid boolean NOT NULL DEFAULT true,
  qty int NOT NULL DEFAULT 1,
  small smallint NOT NULL DEFAULT -3,
  big bigint DEFAULT 9000000000,
  price numeric(10,2) NOT NULL DEFAULT 0,
  anynum numeric DEFAULT 1.5,
  ratio double precision DEFAULT 1.5,
  flt real NOT NULL DEFAULT 2.5,
  created_at timestamptz NOT NULL DEFAULT now(),
  day date NOT NULL DEFAULT '2024-01-01',
  ts timestamp DEFAULT '2024-01-01 12:00:00',
  tm time DEFAULT '12:30:00',
  note text,
  vc varchar(20) DEFAULT 'x',
  tags text[] DEFAULT '{}',
  data jsonb NOT NULL DEFAULT '{}'::jsonb,
  uid uuid DEFAULT '00000000-0000-0000-0000-000000000001',
  b bytea DEFAULT '\x00ff',
  iv interval DEFAULT '1 day'
);
CREATE TABLE full_t (id int PRIMARY KEY, name text NOT NULL DEFAULT 'n', d date NOT NULL, t timestamp NOT NULL);
ALTER TABLE full_t REPLICA IDENTITY FULL;
CREATE TABLE multi (a int, b text, v text NOT NULL, PRIMARY KEY (a, b));
