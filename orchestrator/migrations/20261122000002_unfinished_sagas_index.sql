-- The metrics endpoint counts sagas in flight and parked on every scrape;
-- this keeps that cheap however many finished sagas accumulate.
CREATE INDEX sagas_unfinished ON sagas (saga_type, state, created_at)
    WHERE state IN ('running', 'compensating', 'parked');
