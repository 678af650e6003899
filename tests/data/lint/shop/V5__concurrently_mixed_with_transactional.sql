CREATE TABLE audit (id bigint PRIMARY KEY);
-- then, in the same file:
CREATE INDEX CONCURRENTLY orders_note_idx ON orders (note);
