-- Who started a saga, beyond the subject already in `initiator`: every
-- command of the saga carries them (also after an orchestrator restart, so
-- they live on the row), and services check and audit them.
ALTER TABLE sagas
    -- Comma-separated roles of the starting token, e.g. 'admin,operator'.
    ADD COLUMN initiator_roles TEXT NOT NULL DEFAULT '',
    -- Set when an employee started the saga for themselves: the saga is
    -- confined to this stakeholder (services refuse others' records, and
    -- the employee sees only these sagas).
    ADD COLUMN initiator_stakeholder_id UUID;

-- An employee's own sagas, newest first (ListSagas for self-service).
CREATE INDEX sagas_by_initiator_stakeholder
    ON sagas (company_id, initiator_stakeholder_id, created_at DESC, id DESC)
    WHERE initiator_stakeholder_id IS NOT NULL;
