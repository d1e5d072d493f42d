-- The per-key index served the relay's leases (0003): a claim looked up the
-- earlier unpublished rows of each key. The relay now claims in id order
-- under a round lock (`outbox_unpublished` serves it) and nothing reads
-- this index, while every outbox insert wrote an entry in it: about 14
-- per exercise saga across the four databases (bench/README.md,
-- "Nineteenth session").
DROP INDEX IF EXISTS outbox_unpublished_by_key;
