-- Inbox rows are pruned once no copy of their message can arrive any more
-- (see `relay::DEFAULT_INBOX_RETENTION`); the prune finds them by age. A
-- BTREE, not a BRIN: a BRIN only knows pages a VACUUM (or an explicit
-- summarize) has summarised, and without that every prune read the whole
-- table.
CREATE INDEX inbox_handled_at ON inbox (handled_at);
