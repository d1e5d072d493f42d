-- The options projection's version moves to a row of its own. Saga
-- postings bump `ledgers.last_sequence`; with the projection's version on
-- the same row, a transaction applying equity events held the rows that
-- postings of the same companies wait for, so the projection's consumer
-- could not gather several events into one transaction without slowing the
-- sagas (bench/README, "Sixth session").
--
-- The company's projection version is now
-- `ledgers.projection_version + projection_versions.version`: the old
-- column keeps the count of changes made before this release (and any an
-- older replica still makes during a rolling deploy), the new row counts
-- the changes since. So the version goes on from where it was, and this
-- release's readers see every change whichever replica made it. Readers of
-- the previous release see only the old column: until they are gone, their
-- cached tables may show option columns that trail the changes this
-- release's consumer applies.
CREATE TABLE projection_versions (
    company_id UUID PRIMARY KEY,
    version    BIGINT NOT NULL CHECK (version >= 0)
);

SELECT qapmap_enable_tenant_rls('projection_versions');

-- A new projection version drops the company's in-memory current cap table
-- on every replica, as a posting does (migration 20261222000000).
CREATE TRIGGER projection_versions_notify_change
    AFTER INSERT OR UPDATE ON projection_versions
    FOR EACH ROW EXECUTE FUNCTION notify_ledger_changed();

COMMENT ON COLUMN ledgers.projection_version IS
    'changes to the options projection before projection_versions (2026-12-23); the version is the sum of both';
