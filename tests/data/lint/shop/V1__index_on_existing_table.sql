-- orders exists already: a plain CREATE INDEX blocks its writes while it builds
CREATE INDEX orders_customer_idx ON orders (customer);
