-- pgrest demo data: a small shop in the embedded database's public schema.
-- customers 10,000 - addresses ~15,000 - products 1,000 - tags 12 - product_tags ~2,000 -
-- orders 30,000 - order_items ~90,000 - view product_sales.
-- Relationships for embedding (README "Related data"): orders -> customers (many-to-one),
-- orders -> order_items (one-to-many), products <-> tags through product_tags (many-to-many),
-- orders -> addresses twice (billing and shipping: an ambiguous embed).
-- Deterministic: generate_series and hashtext() arithmetic only (no random()), so every fresh
-- embedded database holds the same rows and the README's examples show the same answers.
-- Run by swagger_server/db/demo.py, in one transaction, only on the embedded server.

CREATE FUNCTION pg_temp.pick(salt text, i bigint, n integer) RETURNS integer
    LANGUAGE sql IMMUTABLE AS $$ SELECT (abs(hashtext(salt || ':' || i::text)) % n)::integer $$;

CREATE TYPE order_status AS ENUM ('pending', 'paid', 'shipped', 'delivered', 'cancelled');

CREATE TABLE customers (
    id             integer PRIMARY KEY,
    email          text NOT NULL UNIQUE,
    name           text NOT NULL,
    country        char(2) NOT NULL,
    city           text,
    signed_up_at   timestamptz NOT NULL,
    birth_date     date,
    loyalty_points integer NOT NULL,
    tags           text[] NOT NULL,
    preferences    jsonb NOT NULL
);

CREATE TABLE products (
    id           integer PRIMARY KEY,
    sku          text NOT NULL UNIQUE,
    public_id    uuid NOT NULL,
    name         text NOT NULL,
    category     text NOT NULL,
    price        numeric(10, 2) NOT NULL,
    weight_kg    numeric(8, 3),
    in_stock     boolean NOT NULL,
    rating       real,
    released_on  date NOT NULL,
    attributes   jsonb NOT NULL,
    checksum     bytea NOT NULL,
    description  text NOT NULL,
    -- full-text search: a stored tsvector (and a GIN index on the text column below)
    search       tsvector GENERATED ALWAYS AS (
                     to_tsvector('english', name || ' ' || description)) STORED
);

CREATE TABLE addresses (
    id           integer PRIMARY KEY,
    customer_id  integer NOT NULL,
    label        text NOT NULL,
    street       text NOT NULL,
    city         text,
    country      char(2) NOT NULL
);

CREATE TABLE tags (
    id    integer PRIMARY KEY,
    name  text NOT NULL UNIQUE
);

CREATE TABLE product_tags (
    product_id  integer NOT NULL,
    tag_id      integer NOT NULL,
    PRIMARY KEY (product_id, tag_id)
);

CREATE TABLE orders (
    id           integer PRIMARY KEY,
    customer_id  integer NOT NULL,
    status       order_status NOT NULL,
    ordered_at   timestamptz NOT NULL,
    shipped_at   timestamptz,
    total        numeric(12, 2) NOT NULL,
    coupon_code  text,
    shipping     jsonb NOT NULL,
    note         text,
    billing_address_id   integer,
    shipping_address_id  integer
);

CREATE TABLE order_items (
    order_id    integer NOT NULL,
    line_no     smallint NOT NULL,
    product_id  integer NOT NULL,
    quantity    integer NOT NULL,
    unit_price  numeric(10, 2) NOT NULL,
    discount    numeric(5, 4),
    PRIMARY KEY (order_id, line_no)
);

INSERT INTO customers
SELECT i,
       lower(f.first) || '.' || lower(l.last) || i || '@example.com',
       f.first || ' ' || l.last,
       c.code,
       CASE WHEN pg_temp.pick('nocity', i, 12) = 0 THEN NULL ELSE c.city END,
       timestamptz '2021-01-01 00:00:00+00' + (i * 3011 + pg_temp.pick('t', i, 3000)) * interval '1 second' * 3,
       CASE WHEN pg_temp.pick('nobirth', i, 7) = 0 THEN NULL
            ELSE date '1950-01-01' + pg_temp.pick('birth', i, 18000) END,
       pg_temp.pick('points', i, 5000),
       (ARRAY['{}', '{newsletter}', '{vip}', '{newsletter,vip}', '{wholesale}',
              '{newsletter,early-adopter}'])[1 + pg_temp.pick('tags', i, 6)]::text[],
       jsonb_build_object(
           'language', (ARRAY['en', 'de', 'fr', 'es', 'it', 'ja'])[1 + pg_temp.pick('lang', i, 6)],
           'newsletter', pg_temp.pick('nl', i, 3) = 0,
           'theme', (ARRAY['light', 'dark', NULL])[1 + pg_temp.pick('theme', i, 3)])
FROM generate_series(1, 10000) AS i
CROSS JOIN LATERAL (SELECT (ARRAY['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara', 'Donald', 'Margaret',
        'Ken', 'Frances', 'John', 'Radia', 'Linus', 'Katherine', 'Guido', 'Hedy', 'Dennis',
        'Sophie', 'Tim', 'Annie', 'Bjarne', 'Zoë', 'José', 'Søren', 'Mei'])[1 + pg_temp.pick('first', i, 24)] AS first) f
CROSS JOIN LATERAL (SELECT (ARRAY['Lovelace', 'Hopper', 'Turing', 'Dijkstra', 'Liskov', 'Knuth',
        'Hamilton', 'Thompson', 'Allen', 'McCarthy', 'Perlman', 'Torvalds', 'Johnson', 'van Rossum',
        'Lamarr', 'Ritchie', 'Wilson', 'Berners-Lee', 'Easley', 'Stroustrup', 'O''Neil', 'Müller',
        'García', 'Nakamura'])[1 + pg_temp.pick('last', i, 24)] AS last) l
CROSS JOIN LATERAL (SELECT (ARRAY['US', 'DE', 'FR', 'GB', 'ES', 'IT', 'JP', 'CA', 'NL', 'SE'])[1 + k] AS code,
        (ARRAY['Springfield', 'Berlin', 'Lyon', 'Leeds', 'Sevilla', 'Torino', 'Osaka', 'Toronto',
               'Utrecht', 'Malmö'])[1 + k] AS city
        FROM (SELECT pg_temp.pick('country', i, 10) AS k) AS kk) c;

INSERT INTO products
SELECT i,
       'SKU-' || lpad(i::text, 5, '0'),
       md5('product:' || i)::uuid,
       a.adjective || ' ' || n.noun,
       n.category,
       round((2 + pg_temp.pick('price', i, 49800) / 100.0)::numeric, 2),
       CASE WHEN n.category = 'Software' THEN NULL
            ELSE round((0.05 + pg_temp.pick('weight', i, 25000) / 1000.0)::numeric, 3) END,
       pg_temp.pick('stock', i, 5) <> 0,
       CASE WHEN pg_temp.pick('rated', i, 10) = 0 THEN NULL
            ELSE (10 + pg_temp.pick('rating', i, 41)) / 10.0 END,
       date '2018-01-01' + pg_temp.pick('released', i, 2500),
       jsonb_build_object('color', (ARRAY['red', 'green', 'blue', 'black', 'white'])[1 + pg_temp.pick('color', i, 5)],
                          'sizes', (ARRAY['["S","M","L"]', '["one size"]', '[]'])[1 + pg_temp.pick('sizes', i, 3)]::jsonb,
                          'warranty_years', pg_temp.pick('warranty', i, 4)),
       decode(md5('checksum:' || i), 'hex'),
       'A ' || lower(a.adjective) || ' ' || lower(n.noun) || ' for '
           || (ARRAY['everyday use', 'travel', 'the office', 'outdoor adventures', 'students',
                     'professionals', 'the kitchen', 'gift giving'])[1 + pg_temp.pick('for', i, 8)]
           || '. '
           || (ARRAY['Cheap and cheerful.', 'Built to last for years.', 'Award-winning design.',
                     'Light enough to carry anywhere.', 'Pairs well with our running shoes.',
                     'Made from recycled materials.', 'Easy to clean and repair.',
                     'A customer favourite since launch.'])[1 + pg_temp.pick('pitch', i, 8)]
           || CASE WHEN pg_temp.pick('extra', i, 3) = 0
                   THEN ' Ships in a box you can reuse.' ELSE '' END
FROM generate_series(1, 1000) AS i
CROSS JOIN LATERAL (SELECT (ARRAY['Sturdy', 'Compact', 'Deluxe', 'Eco', 'Smart', 'Vintage', 'Ultra',
        'Classic', 'Wireless', 'Handmade'])[1 + pg_temp.pick('adj', i, 10)] AS adjective) a
CROSS JOIN LATERAL (SELECT noun, category FROM (VALUES
        (0, 'Kettle', 'Kitchen'), (1, 'Backpack', 'Outdoor'), (2, 'Lamp', 'Home'),
        (3, 'Keyboard', 'Electronics'), (4, 'Notebook', 'Stationery'), (5, 'Tent', 'Outdoor'),
        (6, 'Headphones', 'Electronics'), (7, 'Teapot', 'Kitchen'), (8, 'Photo Editor', 'Software'),
        (9, 'Chair', 'Home'), (10, 'Fountain Pen', 'Stationery'), (11, 'Game "Deluxe, Edition"', 'Software'))
        AS v(k, noun, category) WHERE k = pg_temp.pick('noun', i, 12)) n;

INSERT INTO order_items
SELECT o,
       line,
       p.id,
       1 + pg_temp.pick('qty', o * 10 + line, 4),
       p.price,
       CASE WHEN pg_temp.pick('disc', o * 10 + line, 6) = 0
            THEN (5 + 5 * pg_temp.pick('pct', o * 10 + line, 4)) / 100.0 END
FROM generate_series(1, 30000) AS o
CROSS JOIN LATERAL generate_series(1, 1 + pg_temp.pick('lines', o, 5)) AS line
JOIN products p ON p.id = 1 + pg_temp.pick('product', o * 10 + line, 1000);

-- Every customer has a home address (id 2c - 1); about a third also a work address (id 2c).
INSERT INTO addresses
SELECT a.id, c.id, a.label, (1 + pg_temp.pick('house', a.id, 200))::text || ' '
           || (ARRAY['Main Street', 'Station Road', 'Park Lane', 'Mill Way', 'Church Street',
                     'High Street'])[1 + pg_temp.pick('street', a.id, 6)],
       c.city, c.country
FROM customers c
CROSS JOIN LATERAL (VALUES (2 * c.id - 1, 'home'), (2 * c.id, 'work')) AS a(id, label)
WHERE a.label = 'home' OR pg_temp.pick('work', c.id, 3) = 0;

INSERT INTO tags
SELECT i, (ARRAY['bestseller', 'new', 'eco', 'gift', 'sale', 'premium', 'compact', 'outdoor',
                 'kids', 'limited', 'handmade', 'refurbished'])[i]
FROM generate_series(1, 12) AS i;

INSERT INTO product_tags
SELECT DISTINCT p, 1 + pg_temp.pick('tag', p * 10 + k, 12)
FROM generate_series(1, 1000) AS p
CROSS JOIN LATERAL generate_series(1, pg_temp.pick('tags', p, 4)) AS k;

INSERT INTO orders (id, customer_id, status, ordered_at, shipped_at, total, coupon_code, shipping,
                    note, billing_address_id, shipping_address_id)
SELECT i,
       b.customer_id,
       s.status,
       o.at,
       CASE WHEN s.status IN ('shipped', 'delivered')
            THEN o.at + (6 + pg_temp.pick('ship', i, 90)) * interval '1 hour' END,
       t.total,
       CASE WHEN pg_temp.pick('coupon', i, 8) = 0 THEN 'SAVE' || (5 + 5 * pg_temp.pick('save', i, 4)) END,
       jsonb_build_object('method', (ARRAY['standard', 'express', 'pickup'])[1 + pg_temp.pick('method', i, 3)],
                          'insured', pg_temp.pick('insured', i, 4) = 0),
       CASE pg_temp.pick('note', i, 20)
            WHEN 0 THEN 'Leave at the door, please'
            WHEN 1 THEN 'Ring twice — "urgent"'
            WHEN 2 THEN 'Zustellung an Nachbarn möglich'
            WHEN 3 THEN E'Gift wrap\nwith a card'
            WHEN 4 THEN '' END,
       2 * b.customer_id - 1,
       CASE WHEN pg_temp.pick('work', b.customer_id, 3) = 0 AND pg_temp.pick('ship_to', i, 2) = 0
            THEN 2 * b.customer_id ELSE 2 * b.customer_id - 1 END
FROM generate_series(1, 30000) AS i
CROSS JOIN LATERAL (SELECT 1 + pg_temp.pick('customer', i, 10000) AS customer_id) b
CROSS JOIN LATERAL (SELECT timestamptz '2023-01-01 00:00:00+00'
        + (i * 1050 + pg_temp.pick('at', i, 1000)) * interval '1 second' AS at) o
CROSS JOIN LATERAL (SELECT CASE WHEN i > 29700 THEN 'pending'::order_status
        ELSE (ARRAY['paid', 'shipped', 'delivered', 'delivered', 'delivered', 'delivered',
                    'cancelled']::order_status[])[1 + pg_temp.pick('status', i, 7)] END AS status) s
JOIN (SELECT order_id, sum(round(quantity * unit_price * (1 - coalesce(discount, 0)), 2)) AS total
      FROM order_items GROUP BY order_id) t ON t.order_id = i
ORDER BY i;

ALTER TABLE orders ADD FOREIGN KEY (customer_id) REFERENCES customers (id);
ALTER TABLE order_items ADD FOREIGN KEY (order_id) REFERENCES orders (id);
ALTER TABLE order_items ADD FOREIGN KEY (product_id) REFERENCES products (id);
ALTER TABLE addresses ADD FOREIGN KEY (customer_id) REFERENCES customers (id);
ALTER TABLE orders ADD CONSTRAINT orders_billing_address_fkey
    FOREIGN KEY (billing_address_id) REFERENCES addresses (id);
ALTER TABLE orders ADD CONSTRAINT orders_shipping_address_fkey
    FOREIGN KEY (shipping_address_id) REFERENCES addresses (id);
ALTER TABLE product_tags ADD FOREIGN KEY (product_id) REFERENCES products (id);
ALTER TABLE product_tags ADD FOREIGN KEY (tag_id) REFERENCES tags (id);

CREATE INDEX ON orders (customer_id);
CREATE INDEX ON orders (ordered_at);
CREATE INDEX ON order_items (product_id);
CREATE INDEX ON addresses (customer_id);
CREATE INDEX ON product_tags (tag_id);
-- Full-text search on the text column (README "Data API": the index that makes it fast)
CREATE INDEX products_description_fts ON products USING gin (to_tsvector('english', description));

CREATE VIEW product_sales AS
SELECT p.id AS product_id, p.name, p.category,
       sum(i.quantity)::integer AS units,
       sum(round(i.quantity * i.unit_price * (1 - coalesce(i.discount, 0)), 2)) AS revenue
FROM products p
JOIN order_items i ON i.product_id = p.id
GROUP BY p.id, p.name, p.category;

COMMENT ON TABLE customers IS 'pgrest demo data v2 (swagger_server/db/sql/demo.sql)';
COMMENT ON TABLE addresses IS 'pgrest demo data v2 (swagger_server/db/sql/demo.sql)';
COMMENT ON TABLE products IS 'pgrest demo data v2 (swagger_server/db/sql/demo.sql)';
COMMENT ON TABLE tags IS 'pgrest demo data v2 (swagger_server/db/sql/demo.sql)';
COMMENT ON TABLE product_tags IS 'pgrest demo data v2 (swagger_server/db/sql/demo.sql)';
COMMENT ON TABLE orders IS 'pgrest demo data v2 (swagger_server/db/sql/demo.sql)';
COMMENT ON TABLE order_items IS 'pgrest demo data v2 (swagger_server/db/sql/demo.sql)';
COMMENT ON VIEW product_sales IS 'pgrest demo data v2 (swagger_server/db/sql/demo.sql)';
