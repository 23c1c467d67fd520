#!/usr/bin/env bash
# A slow stream of changes into the demo tables, one transaction per second, for `make run`.
set -euo pipefail
db=${1:-pgcdc_demo}
i=0
while true; do
  i=$((i + 1))
  psql -q -v ON_ERROR_STOP=1 -d "$db" >/dev/null <<SQL
BEGIN;
INSERT INTO customers (name, email, balance, tags)
  VALUES ('customer $i', 'c$i@example.com', $((i * 7 % 1000)).25, ARRAY['demo', 'n$i']);
INSERT INTO orders (customer_id, total, meta)
  VALUES (currval('customers_id_seq'), $((i * 13 % 500)).99, '{"channel": "web", "n": $i}');
INSERT INTO order_lines VALUES (currval('orders_id_seq'), 1, 'SKU-$i', 2, 9.99), (currval('orders_id_seq'), 2, 'SKU-X', 1, 0.50);
INSERT INTO audit_log (id, message) VALUES ($i, 'order placed');
COMMIT;
UPDATE orders SET status = 'paid' WHERE id = currval('orders_id_seq') - 1;
DELETE FROM order_lines WHERE order_id = (SELECT min(order_id) FROM order_lines) AND line_no = 2;
SQL
  sleep 1
done
