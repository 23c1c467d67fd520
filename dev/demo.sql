-- The demo schema of `make run`: four tables that exercise the interesting cases.
DO $$ BEGIN
  CREATE TYPE order_status AS ENUM ('new', 'paid', 'shipped', 'cancelled');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;

CREATE TABLE IF NOT EXISTS customers (
  id         serial PRIMARY KEY,
  name       text NOT NULL,
  email      text,
  balance    numeric(12, 2) NOT NULL DEFAULT 0,
  tags       text[],
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS orders (
  id          bigserial PRIMARY KEY,
  customer_id int NOT NULL REFERENCES customers (id),
  status      order_status NOT NULL DEFAULT 'new',
  total       numeric(12, 2),
  placed_at   timestamp NOT NULL DEFAULT localtimestamp,
  meta        jsonb
);

-- A composite primary key.
CREATE TABLE IF NOT EXISTS order_lines (
  order_id bigint NOT NULL,
  line_no  int NOT NULL,
  sku      text NOT NULL,
  qty      int NOT NULL,
  price    numeric(10, 2) NOT NULL,
  PRIMARY KEY (order_id, line_no)
);

-- No primary key: REPLICA IDENTITY FULL, keyed by the connector's key_columns.
CREATE TABLE IF NOT EXISTS audit_log (
  id      bigint NOT NULL,
  message text,
  at      timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE audit_log REPLICA IDENTITY FULL;

-- A few rows that exist before pgcdc first starts: its initial snapshot delivers them as
-- `op: r` before the stream begins.
INSERT INTO customers (name, email, balance, tags)
SELECT v.name, v.email, v.balance, v.tags
  FROM (VALUES ('Ada', 'ada@example.com', 120.50, ARRAY['vip']),
               ('Grace', 'grace@example.com', 0.00, ARRAY[]::text[]),
               ('Linus', NULL, 42.00, NULL)) AS v(name, email, balance, tags)
 WHERE NOT EXISTS (SELECT 1 FROM customers);
