-- Saga state and step log (DESIGN.md, Sagas). Every transition commits in one
-- transaction together with the commands it sends (outbox).
CREATE TABLE sagas (
    id            UUID PRIMARY KEY,
    company_id    UUID NOT NULL,
    saga_type     TEXT NOT NULL CHECK (saga_type IN ('option_exercise', 'share_buyback')),
    state         TEXT NOT NULL CHECK (state IN ('running', 'compensating', 'completed', 'compensated', 'parked')),
    state_reason  TEXT NOT NULL DEFAULT '',
    -- Idempotency of StartExercise / StartBuyback.
    request_id    TEXT NOT NULL,
    request       BYTEA NOT NULL,
    -- The input and what the steps returned so far (JSON, decimals as strings).
    context       JSONB NOT NULL,
    -- The step being run, or being compensated while compensating.
    cursor_step   INT NOT NULL CHECK (cursor_step >= 0),
    -- Attempts of the current action (a step or a compensation).
    attempts      INT NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- What the current action waits for: a reply (its deadline is wake_at),
    -- a retry (due at wake_at), or nothing (finished or parked).
    awaiting      TEXT NOT NULL CHECK (awaiting IN ('reply', 'retry', 'nothing')),
    -- When the timer must look at this saga again; NULL when nothing is due.
    wake_at       TIMESTAMPTZ,
    initiator     TEXT NOT NULL DEFAULT '',
    trace_id      TEXT NOT NULL DEFAULT '',
    traceparent   TEXT NOT NULL DEFAULT '',
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (company_id, request_id)
);

CREATE INDEX sagas_wake ON sagas (wake_at) WHERE wake_at IS NOT NULL;
CREATE INDEX sagas_listing ON sagas (company_id, created_at DESC, id DESC);

CREATE TABLE saga_steps (
    saga_id      UUID NOT NULL REFERENCES sagas (id),
    company_id   UUID NOT NULL,
    step_index   INT NOT NULL CHECK (step_index >= 0),
    name         TEXT NOT NULL,
    service      TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('compensatable', 'pivot', 'retriable')),
    status       TEXT NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'compensating', 'compensated', 'skipped')),
    attempts     INT NOT NULL DEFAULT 0,
    started_at   TIMESTAMPTZ,
    finished_at  TIMESTAMPTZ,
    last_error   TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (saga_id, step_index)
);
