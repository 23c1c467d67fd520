INSERT INTO items VALUES (4, 'four', 99999999.99, '2000-02-29', '2038-01-19 03:14:08+00', '{"a": "ü€\"q"}', true);
UPDATE items SET price = 0.50, flag = NULL, doc = '[]' WHERE id = 1;
UPDATE items SET name = 'two!', price = 1.00, born = '2024-06-01', seen = '2024-06-01 12:00:00.5-07', doc = '{}', flag = false WHERE id = 2;
DELETE FROM items WHERE id = 3;
UPDATE items SET id = 40 WHERE id = 4;               -- primary-key change
BEGIN; INSERT INTO items VALUES (5, 'aborted', 1, NULL, NULL, NULL, NULL); ROLLBACK;
BEGIN;
  INSERT INTO items VALUES (6, 'six', 6.66, '2024-12-31', now(), 'null', true);
  UPDATE items SET name = 'six (again)' WHERE id = 6;
COMMIT;
INSERT INTO pairs VALUES (3, 'z', 40, 'fourth');
UPDATE pairs SET qty = 21, note = 'second' WHERE a = 1 AND b = 'y';
DELETE FROM pairs WHERE a = 2 AND b = 'x';
UPDATE pairs SET b = 'w' WHERE a = 1 AND b = 'x';     -- primary-key change (one key column)
INSERT INTO items VALUES (3, 'three again', NULL, NULL, NULL, NULL, NULL);  -- re-insert a deleted key
