-- Row-level security, the second line of tenant isolation. Every query is
-- already filtered by company_id; these policies hold even when one forgets.
--
-- Requests run their transactions as the application role `qapmap_app`
-- with the company in the transaction-local setting `qapmap.company_id`
-- (see the runtime's `tenancy` module). Background work (relays, pruning,
-- consumers before they know a company) runs as the connecting role, the
-- tables' owner, which row-level security does not restrict.
DO $$
BEGIN
    CREATE ROLE qapmap_app NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    -- Another database of the same cluster created it first.
    NULL;
END
$$;

-- A non-superuser owner must be a member to SET ROLE to it.
DO $$
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('GRANT qapmap_app TO %I', current_user);
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

GRANT USAGE ON SCHEMA public TO qapmap_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO qapmap_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO qapmap_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO qapmap_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO qapmap_app;

-- The company the current transaction is confined to; NULL (so no row
-- matches) when none was set.
CREATE FUNCTION qapmap_current_company() RETURNS uuid
    LANGUAGE sql STABLE
    AS $$ SELECT nullif(current_setting('qapmap.company_id', true), '')::uuid $$;

-- Puts a table with a company_id column under the tenant policy. Service
-- migrations call it for each of their tenant tables.
CREATE FUNCTION qapmap_enable_tenant_rls(target regclass) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', target);
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON %s TO qapmap_app
             USING (company_id = qapmap_current_company())
             WITH CHECK (company_id = qapmap_current_company())',
        target);
END
$$;

SELECT qapmap_enable_tenant_rls('idempotent_requests');

-- Who did what: one row per command, written in the command's transaction.
CREATE TABLE audit_log (
    audit_id     UUID PRIMARY KEY,
    company_id   UUID NOT NULL,
    subject      TEXT NOT NULL,
    roles        TEXT NOT NULL,
    method       TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    -- The outbox message ids the command produced.
    event_ids    UUID[] NOT NULL DEFAULT '{}',
    trace_id     TEXT NOT NULL DEFAULT '',
    recorded_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_by_company ON audit_log (company_id, audit_id DESC);
SELECT qapmap_enable_tenant_rls('audit_log');
GRANT SELECT, INSERT ON audit_log TO qapmap_app;
-- The trail is append-only, also for the application role.
REVOKE UPDATE, DELETE ON audit_log FROM qapmap_app;
