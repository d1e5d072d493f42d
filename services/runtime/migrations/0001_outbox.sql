-- The transactional outbox, shared by every QapMap database (DESIGN.md,
-- Messaging). A row is written in the same transaction as the state change
-- it announces; a relay publishes it to JetStream later.
CREATE TABLE outbox (
    -- Publication order within a partition key. Assigned before commit, so
    -- ids may commit out of order: relays select unpublished rows, never
    -- "everything above the last id I published".
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The Nats-Msg-Id: JetStream drops a re-publish inside its duplicate window.
    message_id    UUID NOT NULL UNIQUE,
    -- The tenant; NULL only for messages that belong to no company.
    company_id    UUID,
    subject       TEXT NOT NULL CHECK (subject <> ''),
    payload       BYTEA NOT NULL,
    -- Message headers: Qapmap-Type, Qapmap-Version, traceparent, tracestate, ...
    headers       JSONB NOT NULL DEFAULT '{}'::jsonb,
    -- Messages with one key are published in id order (the aggregate).
    partition_key TEXT NOT NULL CHECK (partition_key <> ''),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at  TIMESTAMPTZ
);

CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
