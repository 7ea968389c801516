-- A small shop: sample data for the pgfork demo. Loaded as the source's
-- application role, which owns everything it creates.
CREATE EXTENSION IF NOT EXISTS citext;

CREATE TABLE customers (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email      citext NOT NULL UNIQUE,
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE products (
    id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku   text NOT NULL UNIQUE,
    title text NOT NULL,
    price numeric(10, 2) NOT NULL CHECK (price >= 0)
);

CREATE TABLE orders (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers(id),
    product_id  bigint NOT NULL REFERENCES products(id),
    quantity    int NOT NULL CHECK (quantity > 0),
    status      text NOT NULL DEFAULT 'new',
    ordered_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_customer ON orders(customer_id);

INSERT INTO customers (email, name)
SELECT format('customer%s@example.com', g), format('Customer %s', g)
FROM generate_series(1, 10000) g;

INSERT INTO products (sku, title, price)
SELECT format('SKU-%s', g), format('Product %s', g), (g % 97) + 0.99
FROM generate_series(1, 500) g;

INSERT INTO orders (customer_id, product_id, quantity, status, ordered_at)
SELECT 1 + (g * 7919) % 10000, 1 + (g * 104729) % 500, 1 + g % 5,
       (ARRAY['new', 'paid', 'shipped', 'delivered'])[1 + g % 4],
       now() - make_interval(mins => g::int)
FROM generate_series(1::bigint, 100000) g;

ANALYZE customers, products, orders;
