-- Row-level security on every equity table (issue 8): requests and saga
-- commands run as `qapmap_app` confined to one company (runtime migration
-- 0004, `tenancy`), and these policies then show and accept only that
-- company's rows, even where a query forgot its company_id filter.
--
-- Every table here already carries company_id (it is the tenant of each
-- row), so none needed the column added. The runtime's tenant tables
-- (idempotent_requests, audit_log) are enabled by the runtime itself.
SELECT qapmap_enable_tenant_rls('share_classes');
SELECT qapmap_enable_tenant_rls('equity_plans');
SELECT qapmap_enable_tenant_rls('awards');
SELECT qapmap_enable_tenant_rls('repurchase_programs');
SELECT qapmap_enable_tenant_rls('option_reservations');
SELECT qapmap_enable_tenant_rls('repurchase_reservations');
SELECT qapmap_enable_tenant_rls('saga_step_results');
SELECT qapmap_enable_tenant_rls('equity_events');
SELECT qapmap_enable_tenant_rls('saga_tombstones');

-- Who holds a saga step: its reservations and its tombstone, in whichever
-- company. A saga id is unique across companies, and a command naming the
-- wrong company for a step must be refused (a tombstone refuses a late
-- reserve "whichever company it names"; a release finding another
-- company's reservation answers not_found) rather than silently see
-- nothing under the policies above. SECURITY DEFINER runs it as the
-- tables' owner, whom the policies do not restrict. It is safe to expose:
-- it answers only ids for a (saga_id, step) the caller already names, and
-- the saga commands only use it to refuse.
CREATE FUNCTION equity_saga_step_holders(target_saga UUID, target_step INTEGER)
    RETURNS TABLE (kind TEXT, holder_id UUID, holder_company UUID)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
        SELECT 'option_reservation', r.id, r.company_id
        FROM option_reservations r WHERE r.saga_id = target_saga AND r.step = target_step
        UNION ALL
        SELECT 'repurchase_reservation', r.id, r.company_id
        FROM repurchase_reservations r WHERE r.saga_id = target_saga AND r.step = target_step
        UNION ALL
        SELECT 'tombstone', NULL, t.company_id
        FROM saga_tombstones t WHERE t.saga_id = target_saga AND t.step = target_step
    $$;
REVOKE ALL ON FUNCTION equity_saga_step_holders(UUID, INTEGER) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION equity_saga_step_holders(UUID, INTEGER) TO qapmap_app;
