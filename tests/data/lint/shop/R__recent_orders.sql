CREATE OR REPLACE VIEW recent_orders AS
SELECT id FROM orders WHERE created_at > now() - interval '1 day';
CREATE INDEX orders_created_idx ON orders (created_at);
