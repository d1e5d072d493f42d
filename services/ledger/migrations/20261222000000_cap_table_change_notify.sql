-- Every change a cap table shows bumps the company's `ledgers` row (an
-- entry its last_sequence, an equity event its projection_version), so one
-- trigger there tells every ledger replica, at commit, which company's
-- in-memory current cap table to drop (cap_table/current.rs). NOTIFY within
-- one transaction folds repeats of the same payload into one.
CREATE FUNCTION notify_ledger_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('qapmap_ledger_changed', NEW.company_id::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER ledgers_notify_change
    AFTER INSERT OR UPDATE ON ledgers
    FOR EACH ROW EXECUTE FUNCTION notify_ledger_changed();
