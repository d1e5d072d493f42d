-- Saga steps compensated before they were applied. The orchestrator releases
-- a reservation it never heard of when the reserve step timed out; if the
-- reserve command lands afterwards, this row makes it a refusal instead of a
-- reservation nobody will ever release. Keyed by (saga_id, step) alone: a
-- saga id is unique across companies, and a late command for the key must be
-- refused whichever company it names.
CREATE TABLE saga_tombstones (
    saga_id     UUID NOT NULL,
    step        INTEGER NOT NULL,
    company_id  UUID NOT NULL,
    -- The compensation that left it (release_option_reservation, ...).
    operation   TEXT NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (saga_id, step)
);
