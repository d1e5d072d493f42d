-- The options projection's version moves to a row of its own. Saga
-- postings bump `ledgers.last_sequence`; with the projection's version on
-- the same row, a transaction applying equity events held the rows that
-- postings of the same companies wait for, so the projection's consumer
-- could not gather several events into one transaction without slowing the
-- sagas (bench/README, "Sixth session"). Reads take the two versions from
-- the two tables.
CREATE TABLE projection_versions (
    company_id UUID PRIMARY KEY,
    version    BIGINT NOT NULL CHECK (version >= 0)
);

INSERT INTO projection_versions (company_id, version)
    SELECT company_id, projection_version FROM ledgers WHERE projection_version > 0;

SELECT qapmap_enable_tenant_rls('projection_versions');

-- A new projection version drops the company's in-memory current cap table
-- on every replica, as a posting does (migration 20261222000000).
CREATE TRIGGER projection_versions_notify_change
    AFTER INSERT OR UPDATE ON projection_versions
    FOR EACH ROW EXECUTE FUNCTION notify_ledger_changed();

-- Kept for replicas still running the previous release during a rolling
-- deploy; no longer written. Drop it in a later release.
COMMENT ON COLUMN ledgers.projection_version IS
    'superseded by projection_versions.version (2026-12-23); not written';
