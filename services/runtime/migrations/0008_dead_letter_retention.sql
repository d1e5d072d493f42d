-- Resolved dead letters (replayed or discarded) are pruned once past their
-- retention (see `relay::DEFAULT_DEAD_LETTER_RETENTION`); the prune finds
-- them by the time they were resolved. Pending ones are never pruned, so
-- the index leaves them out.
CREATE INDEX dead_letters_resolved_at ON dead_letters (resolved_at) WHERE status <> 'pending';
