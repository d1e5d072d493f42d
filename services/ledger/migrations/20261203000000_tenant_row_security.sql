-- Row-level security on every ledger table (the runtime's migration 0004
-- made the role `qapmap_app` and the helper). gRPC calls and the consumers
-- run their transactions as `qapmap_app` confined to one company; the relay
-- and pruning run as the tables' owner, which these policies do not
-- restrict.
--
-- Every table already has company_id, journal_lines and holds included
-- (written by the posting code), so none needs a join to be confined.
-- Foreign keys (lines -> entries, lines/holds -> accounts) are checked by
-- Postgres without row security, and the append-only trigger on the journal
-- reads no table, so none of them needs the owner's rights.
SELECT qapmap_enable_tenant_rls('ledgers');
SELECT qapmap_enable_tenant_rls('share_classes');
SELECT qapmap_enable_tenant_rls('accounts');
SELECT qapmap_enable_tenant_rls('journal_entries');
SELECT qapmap_enable_tenant_rls('journal_lines');
SELECT qapmap_enable_tenant_rls('holds');
SELECT qapmap_enable_tenant_rls('applied_equity_events');
SELECT qapmap_enable_tenant_rls('equity_plans');
SELECT qapmap_enable_tenant_rls('option_movements');
-- A tombstone is looked up by (saga id, step) alone; confined, a command
-- sees only its own company's tombstones, which are the only ones its saga
-- can have (the orchestrator sends one company for the whole saga).
SELECT qapmap_enable_tenant_rls('saga_step_tombstones');
