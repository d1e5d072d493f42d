-- equity_saga_step_holders looks a saga step up by (saga_id, step) alone,
-- before the command is confined to a company, so the (company_id, saga_id,
-- step) keys cannot serve it: every saga command scanned every reservation
-- ever made (the benchmark measured one sequential scan of option_reservations
-- and one of repurchase_reservations per command, growing with the tables).
-- A saga id is unique across companies, so these find at most one row.
CREATE INDEX option_reservations_by_saga_step ON option_reservations (saga_id, step);
CREATE INDEX repurchase_reservations_by_saga_step ON repurchase_reservations (saga_id, step);
