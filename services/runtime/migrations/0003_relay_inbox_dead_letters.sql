-- Relay leases, the inbox and dead letters (DESIGN.md, Messaging).

-- A relay leases the rows it is about to publish, so several relays can run
-- at once: a row leased by a live relay is not taken by another, and a later
-- row of the same partition key is not taken while an earlier one is leased
-- elsewhere (per-key order). A relay that dies leaves its lease to expire;
-- the rows are then published again and JetStream drops the duplicates
-- (same Nats-Msg-Id inside the duplicate window).
ALTER TABLE outbox
    ADD COLUMN lease_owner      UUID,
    ADD COLUMN lease_expires_at TIMESTAMPTZ;

-- Finds the earlier unpublished rows of a key when claiming.
CREATE INDEX outbox_unpublished_by_key ON outbox (partition_key, id) WHERE published_at IS NULL;
-- Pruning published rows past their retention.
CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;

-- One row per message a consumer handled, written in the same transaction
-- as the handler's effect: a redelivered message finds its row, changes
-- nothing, and is acknowledged.
CREATE TABLE inbox (
    -- The durable consumer name: each consumer handles each message once.
    consumer            TEXT NOT NULL CHECK (consumer <> ''),
    -- Nats-Msg-Id, or Qapmap-Original-Msg-Id for a replayed dead letter.
    message_id          TEXT NOT NULL CHECK (message_id <> ''),
    subject             TEXT NOT NULL,
    -- The reply a command handler sent, kept so that a redelivered command
    -- gets the same reply again (same message id, so the receiver's inbox
    -- drops it if the first one arrived).
    reply_message_id    UUID,
    reply_subject       TEXT,
    reply_payload       BYTEA,
    reply_headers       JSONB,
    reply_partition_key TEXT,
    reply_company_id    UUID,
    handled_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

-- Messages that ran out of deliveries or were rejected as poison. They are
-- acknowledged on the stream (so they never block the messages behind them)
-- and kept here until an operator replays or discards them.
CREATE TABLE dead_letters (
    id             UUID PRIMARY KEY,
    consumer       TEXT NOT NULL,
    subject        TEXT NOT NULL,
    -- The id the consumer's inbox knows the message by.
    message_id     TEXT NOT NULL,
    payload        BYTEA NOT NULL,
    headers        JSONB NOT NULL DEFAULT '{}'::jsonb,
    last_error     TEXT NOT NULL,
    delivery_count INT NOT NULL CHECK (delivery_count >= 0),
    dead_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    status         TEXT NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'replayed', 'discarded')),
    -- Why it was discarded, or the outbox message id of its replay.
    resolution     TEXT,
    resolved_at    TIMESTAMPTZ
);

CREATE INDEX dead_letters_pending ON dead_letters (id) WHERE status = 'pending';
-- A message is pending at most once per consumer, so a dead letter stored
-- twice (its ack was lost and it came back) is kept once.
CREATE UNIQUE INDEX dead_letters_pending_once ON dead_letters (consumer, message_id) WHERE status = 'pending';
