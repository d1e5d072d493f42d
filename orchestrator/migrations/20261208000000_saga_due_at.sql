-- A saga's own deadline or retry time moves to `due_at` (not indexed);
-- `wake_at` becomes when the timer looks next, at or before `due_at`. The
-- store keeps an earlier `wake_at` that has not yet come when a new action
-- is due later, so the row's updates between a saga's first step and its
-- end change no indexed column and can be HOT (five index entries fewer per
-- update); a timer that looks early finds nothing due and moves `wake_at`
-- up to `due_at`.
ALTER TABLE sagas ADD COLUMN due_at TIMESTAMPTZ;
UPDATE sagas SET due_at = wake_at WHERE wake_at IS NOT NULL;
-- Room on each page for the row's next versions (HOT needs the same page).
ALTER TABLE sagas SET (fillfactor = 70);
