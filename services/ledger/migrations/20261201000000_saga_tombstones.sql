-- Saga steps compensated before they were applied. A hold command may land
-- after its compensation (the orchestrator gave up waiting and released a
-- hold it never heard of); the tombstone makes that late command a refusal
-- instead of a hold nobody will ever release.
CREATE TABLE saga_step_tombstones (
    saga_id     UUID NOT NULL,
    step        INTEGER NOT NULL,
    company_id  UUID NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (saga_id, step)
);
