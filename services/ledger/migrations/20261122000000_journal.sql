-- The stock ledger: accounts with their current balances, the append-only
-- journal, holds, and the equity projection behind the cap table's options.

-- One row per company: its ledger sequence (bumped by every entry) and the
-- version of its equity projection (bumped by every applied equity event).
-- Both go into cap-table cache keys, so either change makes old values unreachable.
CREATE TABLE ledgers (
    company_id         UUID PRIMARY KEY,
    last_sequence      BIGINT NOT NULL DEFAULT 0 CHECK (last_sequence >= 0),
    projection_version BIGINT NOT NULL DEFAULT 0 CHECK (projection_version >= 0)
);

-- Share classes the ledger knows: created by the first authorized-shares adjustment.
CREATE TABLE share_classes (
    company_id     UUID NOT NULL,
    share_class_id UUID NOT NULL,
    PRIMARY KEY (company_id, share_class_id)
);

-- An account is company x unit (share class or currency) x owner, and carries
-- its current balance and held quantity. Postings lock these rows (in id
-- order, so concurrent postings never deadlock) before changing them.
CREATE TABLE accounts (
    id             UUID PRIMARY KEY,
    company_id     UUID NOT NULL,
    owner_kind     TEXT NOT NULL CHECK (owner_kind IN ('stakeholder', 'authorized',
                   'authorized_unissued', 'treasury', 'retired', 'company_cash', 'external_cash')),
    stakeholder_id UUID,
    share_class_id UUID,
    currency       TEXT CHECK (currency ~ '^[A-Z]{3}$'),
    balance        NUMERIC(38, 10) NOT NULL DEFAULT 0,
    held           NUMERIC(38, 10) NOT NULL DEFAULT 0 CHECK (held >= 0),
    -- Share accounts other than the charter ('authorized') never go below
    -- zero nor below what is held; the posting code checks first and names
    -- the reason, this is the second line.
    must_stay_non_negative BOOLEAN NOT NULL,
    CHECK ((owner_kind = 'stakeholder') = (stakeholder_id IS NOT NULL)),
    CHECK ((share_class_id IS NULL) <> (currency IS NULL)),
    CHECK (NOT must_stay_non_negative OR balance >= held),
    UNIQUE NULLS NOT DISTINCT (company_id, share_class_id, currency, owner_kind, stakeholder_id)
);

CREATE INDEX accounts_by_stakeholder ON accounts (company_id, stakeholder_id)
    WHERE stakeholder_id IS NOT NULL;

CREATE TABLE journal_entries (
    id                UUID PRIMARY KEY,
    company_id        UUID NOT NULL,
    sequence          BIGINT NOT NULL CHECK (sequence > 0),
    entry_type        TEXT NOT NULL CHECK (entry_type IN ('issuance', 'exercise', 'repurchase',
                      'transfer', 'cancellation', 'retirement', 'authorized_shares_adjustment',
                      'payment', 'reversal')),
    effective_date    DATE NOT NULL,
    recorded_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- 'saga:<id>:<step>' or 'request:<request_id>': a repeat finds the entry.
    cause             TEXT NOT NULL CHECK (cause <> ''),
    -- An entry is reversed at most once.
    reverses_entry_id UUID UNIQUE REFERENCES journal_entries (id),
    memo              TEXT NOT NULL DEFAULT '',
    UNIQUE (company_id, sequence),
    UNIQUE (company_id, cause),
    CHECK ((entry_type = 'reversal') = (reverses_entry_id IS NOT NULL))
);

CREATE INDEX journal_entries_by_date ON journal_entries (company_id, effective_date);

-- Positive amounts grow the account, negative shrink it; per entry and unit they sum to 0.
CREATE TABLE journal_lines (
    entry_id    UUID NOT NULL REFERENCES journal_entries (id),
    line_number INT NOT NULL CHECK (line_number >= 0),
    company_id  UUID NOT NULL,
    account_id  UUID NOT NULL REFERENCES accounts (id),
    amount      NUMERIC(38, 10) NOT NULL CHECK (amount <> 0),
    PRIMARY KEY (entry_id, line_number)
);

CREATE INDEX journal_lines_by_account ON journal_lines (account_id);

-- The journal is append-only: corrections are reversal entries.
CREATE FUNCTION forbid_journal_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the journal is append-only: % on % is forbidden', TG_OP, TG_TABLE_NAME;
END;
$$;

CREATE TRIGGER journal_entries_append_only BEFORE UPDATE OR DELETE ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION forbid_journal_change();
CREATE TRIGGER journal_lines_append_only BEFORE UPDATE OR DELETE ON journal_lines
    FOR EACH ROW EXECUTE FUNCTION forbid_journal_change();

CREATE TABLE holds (
    id                   UUID PRIMARY KEY,
    company_id           UUID NOT NULL,
    account_id           UUID NOT NULL REFERENCES accounts (id),
    quantity             NUMERIC(38, 10) NOT NULL CHECK (quantity > 0),
    cause                TEXT NOT NULL CHECK (cause <> ''),
    status               TEXT NOT NULL CHECK (status IN ('active', 'released', 'consumed')),
    consumed_by_entry_id UUID REFERENCES journal_entries (id),
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (company_id, cause)
);

-- Equity events already applied to the projection (idempotency by event id).
CREATE TABLE applied_equity_events (
    company_id UUID NOT NULL,
    event_id   TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (company_id, event_id)
);

CREATE TABLE equity_plans (
    company_id     UUID NOT NULL,
    plan_id        UUID NOT NULL,
    share_class_id UUID NOT NULL,
    pool_size      NUMERIC(38, 10) NOT NULL CHECK (pool_size >= 0),
    PRIMARY KEY (company_id, plan_id)
);

-- What each equity event did to options outstanding (per holder) and to the
-- pool available (per plan), by effective date: the cap table as of a date sums them.
CREATE TABLE option_movements (
    id                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    company_id           UUID NOT NULL,
    event_id             TEXT NOT NULL,
    plan_id              UUID NOT NULL,
    share_class_id       UUID NOT NULL,
    stakeholder_id       UUID,
    effective_date       DATE NOT NULL,
    outstanding_delta    NUMERIC(38, 10) NOT NULL,
    pool_available_delta NUMERIC(38, 10) NOT NULL
);

CREATE INDEX option_movements_by_date ON option_movements (company_id, effective_date);
