BEGIN;
DROP INDEX CONCURRENTLY orders_old_idx;
CREATE INDEX CONCURRENTLY orders_new_idx ON orders (note);
COMMIT;
