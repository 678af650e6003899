CREATE TABLE invoices (id bigint PRIMARY KEY, order_id bigint, note text);
CREATE INDEX invoices_order_idx ON invoices (order_id);
ALTER TABLE invoices ADD CONSTRAINT invoices_order_fk FOREIGN KEY (order_id) REFERENCES orders (id);
ALTER TABLE invoices ADD COLUMN total numeric NOT NULL;
ALTER TABLE invoices ALTER COLUMN note TYPE varchar(200);
ALTER TABLE invoices ADD CONSTRAINT invoices_total_positive CHECK (total > 0);
