-- The realtime schema, the roles that JWT claims map to, and the CDC's subscription list.
-- Idempotent: every statement may run again on a database that already has it.

CREATE SCHEMA IF NOT EXISTS realtime;

DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                -- Roles are cluster-wide: an init of another database created it meanwhile.
                NULL;
            END;
        END IF;
    END LOOP;
END
$$;

GRANT USAGE ON SCHEMA realtime TO anon, authenticated, service_role;

-- Which tables the CDC publishes, and which operations of each (seed 002's `subscribe`).
-- table_name NULL means every table of the schema (`subscribe public.*`).
CREATE TABLE IF NOT EXISTS realtime.subscriptions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    schema_name text NOT NULL,
    table_name  text,
    operations  text[] NOT NULL DEFAULT ARRAY['INSERT', 'UPDATE', 'DELETE'],
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT subscriptions_operations_known
        CHECK (operations <@ ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']
               AND cardinality(operations) > 0)
);

CREATE UNIQUE INDEX IF NOT EXISTS subscriptions_target
    ON realtime.subscriptions (schema_name, coalesce(table_name, ''));

GRANT SELECT ON realtime.subscriptions TO service_role;
