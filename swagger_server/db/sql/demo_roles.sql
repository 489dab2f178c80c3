-- pgrest demo roles and row-level security (README "Authentication"), run on every seed of the
-- embedded database, idempotent: roles are the cluster's, policies are replaced.
--   web_anon: reads products, tags and product_tags only (requests without credentials,
--             ANONYMOUS_ROLE)
--   web_user: reads every shop table; orders, order_items and addresses only of the customer
--             whose id is the token's sub claim
-- Both are granted to the user that runs this (the user the service connects as).

DO $$
BEGIN
    CREATE ROLE web_anon NOLOGIN;
EXCEPTION WHEN duplicate_object THEN NULL;  -- another database of this server made it
END $$;

DO $$
BEGIN
    CREATE ROLE web_user NOLOGIN;
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

GRANT web_anon, web_user TO CURRENT_USER;
GRANT USAGE ON SCHEMA public TO web_anon, web_user;
GRANT SELECT ON products, tags, product_tags TO web_anon;
GRANT SELECT ON customers, addresses, products, tags, product_tags, orders, order_items,
    product_sales TO web_user;

ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
ALTER TABLE order_items ENABLE ROW LEVEL SECURITY;
ALTER TABLE addresses ENABLE ROW LEVEL SECURITY;

-- The caller's customer id: the token's sub when it is a number, else NULL (sees nothing).
-- nullif: once set in a session, the setting reads '' (not NULL) after the transaction.
DROP POLICY IF EXISTS own_orders ON orders;
CREATE POLICY own_orders ON orders FOR SELECT TO web_user USING (
    customer_id = (
        SELECT CASE WHEN s.sub ~ '^[0-9]{1,9}$' THEN s.sub::integer END
        FROM (SELECT nullif(current_setting('request.jwt.claims', true), '')::json->>'sub' AS sub) s
    )
);

DROP POLICY IF EXISTS own_addresses ON addresses;
CREATE POLICY own_addresses ON addresses FOR SELECT TO web_user USING (
    customer_id = (
        SELECT CASE WHEN s.sub ~ '^[0-9]{1,9}$' THEN s.sub::integer END
        FROM (SELECT nullif(current_setting('request.jwt.claims', true), '')::json->>'sub' AS sub) s
    )
);

-- Items of the orders the caller may see (the subquery is itself under own_orders).
DROP POLICY IF EXISTS own_order_items ON order_items;
CREATE POLICY own_order_items ON order_items FOR SELECT TO web_user USING (
    order_id IN (SELECT o.id FROM orders o)
);

-- product_sales is owned by the demo's loader: a plain view would read order_items with the
-- owner's rights, past the policies above (web_user would total every customer's sales).
-- security_invoker (PostgreSQL 15+) reads them as the caller, under its policies. An older
-- server keeps the view owner-rights: there, revoke it from web_user instead.
DO $$
BEGIN
    IF current_setting('server_version_num')::int >= 150000 THEN
        EXECUTE 'ALTER VIEW product_sales SET (security_invoker = true)';
    ELSE
        REVOKE SELECT ON product_sales FROM web_user;
    END IF;
END $$;
