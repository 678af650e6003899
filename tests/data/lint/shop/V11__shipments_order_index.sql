CREATE INDEX shipments_order_idx ON shipments (order_id);
