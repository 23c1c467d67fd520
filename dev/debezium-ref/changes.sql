-- Row changes made while the connector is streaming (after its snapshot).
-- psql autocommit: every statement is its own transaction.
INSERT INTO orders (customer) VALUES ('bob');
INSERT INTO orders (customer, status, currency, paid, qty, small, big, price, anynum, ratio, flt,
                    created_at, day, ts, tm, note, vc, tags, data, uid, b, iv)
VALUES ('carol', 'new', 'USD', false, 7, 12, NULL, 1234.56, 3.14159, 0.25, -1.5,
        '2024-05-06 07:08:09.123456+02', '2024-05-06', '2024-05-06 07:08:09.123456', '23:59:59.999999',
        'a note', 'hello', '{a,"b c"}', '{"k": [1, 2, {"z": null}]}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
        '\xdeadbeef', '1 year 2 mons 3 days 04:05:06.789');
UPDATE orders SET status = 'shipped' WHERE customer = 'bob';
DELETE FROM orders WHERE customer = 'carol';
INSERT INTO full_t VALUES (1, 'a', '2024-01-01', '2024-01-01 00:00');
INSERT INTO full_t VALUES (2, 'pinf', 'infinity', 'infinity');
INSERT INTO full_t VALUES (3, 'ninf', '-infinity', '-infinity');
UPDATE full_t SET name = 'a2' WHERE id = 1;
DELETE FROM full_t WHERE id = 2;
TRUNCATE full_t;
INSERT INTO multi VALUES (1, 'x', 'v1');
UPDATE multi SET a = 2 WHERE a = 1 AND b = 'x';
DELETE FROM multi WHERE a = 2 AND b = 'x';
