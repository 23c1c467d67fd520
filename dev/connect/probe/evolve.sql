-- run while streaming, after changes.sql: a new NOT NULL column (schema.evolution=basic adds it
-- to the sink table); rows that existed before get the default without a change event, so the
-- last UPDATE makes them flow.
ALTER TABLE items ADD COLUMN extra varchar(20) NOT NULL DEFAULT 'dflt';
INSERT INTO items VALUES (8, 'eight', NULL, NULL, NULL, NULL, NULL, 'x8');
UPDATE items SET extra = 'upd' WHERE id = 1;
UPDATE items SET extra = extra WHERE extra = 'dflt';
