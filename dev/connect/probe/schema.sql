CREATE TABLE items (
  id      int PRIMARY KEY,
  name    text NOT NULL,
  price   numeric(10,2),
  born    date,
  seen    timestamptz,
  doc     jsonb,
  flag    bool
);
CREATE TABLE pairs (
  a     int,
  b     text,
  qty   int NOT NULL,
  note  text,
  PRIMARY KEY (a, b)
);
INSERT INTO items VALUES
  (1, 'one',   12.34, '2024-01-31', '2024-01-31 23:59:59.123456+00', '{"k": [1, 2, {"x": null}]}', true),
  (2, 'two',   NULL,  NULL,         NULL,                            NULL,                           NULL),
  (3, 'three', -0.01, '1969-12-31', '1970-01-01 00:00:00+05:30',     '"just a string"',              false);
INSERT INTO pairs VALUES (1, 'x', 10, 'first'), (1, 'y', 20, NULL), (2, 'x', 30, 'third');
