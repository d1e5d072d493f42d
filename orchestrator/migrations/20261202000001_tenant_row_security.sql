-- Row-level security on the orchestrator's tenant tables (the runtime's
-- migration 0004 made the role and the helper). The API runs its
-- transactions as `qapmap_app` confined to the request's company; the reply
-- consumer, the timer and the metrics work across companies as the tables'
-- owner, which these policies do not restrict.
SELECT qapmap_enable_tenant_rls('sagas');
-- Steps carry their saga's company_id (written with the saga), so they need
-- no join to be confined.
SELECT qapmap_enable_tenant_rls('saga_steps');
