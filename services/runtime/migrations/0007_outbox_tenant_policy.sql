-- The outbox joins the tenant policy (see 0004): a transaction confined to
-- one company can neither enqueue a message for another company (or for
-- none) nor read another company's messages. The relay, pruning, dead
-- letters and a consumer before it confines run as the tables' owner, which
-- the policy does not restrict.
SELECT qapmap_enable_tenant_rls('outbox');
