-- Every mutating gRPC call carries a client-chosen request_id. The first
-- successful call stores its response here, in the same transaction as its
-- effect; a repeat of the same request returns that response and writes
-- nothing; the same id with a different request is refused.
CREATE TABLE idempotent_requests (
    company_id  UUID NOT NULL,
    request_id  TEXT NOT NULL CHECK (request_id <> '' AND length(request_id) <= 128),
    -- The full gRPC method, e.g. /qapmap.equity.v1.EquityService/GrantAward.
    method      TEXT NOT NULL,
    -- The encoded request, compared byte for byte on a repeat.
    request     BYTEA NOT NULL,
    -- The encoded response returned to every repeat.
    response    BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (company_id, request_id)
);
