-- The projection's record of applied equity events is pruned once no copy
-- of an event can arrive any more (see `projection_retention`); the prune
-- finds the rows by age.
CREATE INDEX applied_equity_events_applied_at ON applied_equity_events (applied_at);
