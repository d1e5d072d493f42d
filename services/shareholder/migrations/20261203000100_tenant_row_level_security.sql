-- Row-level security on every shareholder table (issue 8): requests,
-- payments and saga commands run as `qapmap_app` confined to one company
-- (runtime migration 0004, `tenancy`), and these policies then show and
-- accept only that company's rows, even where a query forgot its
-- company_id filter.
--
-- Every table here already carries company_id (it is the tenant of each
-- row), so none needed the column added. The runtime's tenant tables
-- (idempotent_requests, audit_log) are enabled by the runtime itself.
SELECT qapmap_enable_tenant_rls('stakeholders');
SELECT qapmap_enable_tenant_rls('stakeholder_events');
SELECT qapmap_enable_tenant_rls('payments');
