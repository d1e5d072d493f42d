-- The tenant policies compare each row with the company read once per
-- statement, not once per row. As `company_id = qapmap_current_company()`
-- the setting was read and parsed into a uuid for every row a statement
-- visited (the uuid parse was the top item of a past-date cap-table read's
-- Postgres profile, 600 journal lines); wrapped in a scalar sub-select it
-- is an init plan, evaluated once. Same rows visible, same rows writable.

CREATE OR REPLACE FUNCTION qapmap_enable_tenant_rls(target regclass) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', target);
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON %s TO qapmap_app
             USING (company_id = (SELECT qapmap_current_company()))
             WITH CHECK (company_id = (SELECT qapmap_current_company()))',
        target);
END
$$;

-- The policies made before this migration (on a database that ran the
-- service migrations earlier; on a new one only the runtime's own).
DO $$
DECLARE
    policy record;
BEGIN
    FOR policy IN
        SELECT schemaname, tablename FROM pg_policies
        WHERE policyname = 'tenant_isolation' AND schemaname = current_schema()
    LOOP
        EXECUTE format(
            'ALTER POLICY tenant_isolation ON %I.%I
                 USING (company_id = (SELECT qapmap_current_company()))
                 WITH CHECK (company_id = (SELECT qapmap_current_company()))',
            policy.schemaname, policy.tablename);
    END LOOP;
END
$$;
