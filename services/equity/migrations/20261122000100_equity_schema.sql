-- The equity service's schema: share classes, plans with their pools, awards
-- with their vesting, repurchase programs, saga reservations, and the event
-- log. Every row carries company_id (the tenant); every query filters on it.
-- Counts and money are NUMERIC; CHECKs hold what the database can express.

CREATE TABLE share_classes (
    company_id        UUID NOT NULL,
    id                UUID PRIMARY KEY,
    name              TEXT NOT NULL CHECK (name <> ''),
    class_type        TEXT NOT NULL CHECK (class_type IN ('common', 'preferred')),
    authorized_shares NUMERIC NOT NULL CHECK (authorized_shares > 0),
    par_value         NUMERIC NOT NULL CHECK (par_value >= 0),
    par_currency      TEXT NOT NULL CHECK (par_currency ~ '^[A-Z]{3}$'),
    seniority         INTEGER NOT NULL,
    conversion_ratio  NUMERIC NOT NULL CHECK (conversion_ratio > 0),
    effective_date    DATE NOT NULL,
    version           BIGINT NOT NULL CHECK (version >= 1),
    recorded_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (company_id, name)
);

-- Pool accounting (see OVERVIEW.md): available = pool_size - granted + returned,
-- and granted - returned never exceeds pool_size.
CREATE TABLE equity_plans (
    company_id            UUID NOT NULL,
    id                    UUID PRIMARY KEY,
    name                  TEXT NOT NULL CHECK (name <> ''),
    share_class_id        UUID NOT NULL REFERENCES share_classes (id),
    pool_size             NUMERIC NOT NULL CHECK (pool_size >= 0),
    cancellation_behavior TEXT NOT NULL CHECK (cancellation_behavior IN ('return_to_pool', 'retire')),
    board_approval_date   DATE NOT NULL,
    granted               NUMERIC NOT NULL DEFAULT 0 CHECK (granted >= 0),
    exercised             NUMERIC NOT NULL DEFAULT 0 CHECK (exercised >= 0),
    returned              NUMERIC NOT NULL DEFAULT 0 CHECK (returned >= 0),
    retired               NUMERIC NOT NULL DEFAULT 0 CHECK (retired >= 0),
    version               BIGINT NOT NULL CHECK (version >= 1),
    recorded_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (company_id, name),
    CHECK (granted - returned <= pool_size),
    CHECK (exercised + returned + retired <= granted)
);

-- quantity = vested_unexercised + unvested + exercised + cancelled, where
-- cancelled = cancelled_vested + cancelled_unvested.
CREATE TABLE awards (
    company_id             UUID NOT NULL,
    id                     UUID PRIMARY KEY,
    plan_id                UUID NOT NULL REFERENCES equity_plans (id),
    stakeholder_id         UUID NOT NULL,
    award_type             TEXT NOT NULL CHECK (award_type IN ('iso', 'nso', 'rsu')),
    quantity               NUMERIC NOT NULL CHECK (quantity > 0),
    exercise_price         NUMERIC CHECK (exercise_price >= 0),
    exercise_currency      TEXT CHECK (exercise_currency ~ '^[A-Z]{3}$'),
    grant_date             DATE NOT NULL,
    expiration_date        DATE,
    vesting_start_date     DATE NOT NULL,
    early_exercisable      BOOLEAN NOT NULL,
    -- The OCF vesting terms (the domain model as JSON); NULL: vested at grant.
    vesting_terms          JSONB,
    termination_windows    JSONB NOT NULL DEFAULT '[]'::jsonb,
    -- condition id -> date of each EVENT condition that happened.
    vesting_events         JSONB NOT NULL DEFAULT '{}'::jsonb,
    -- [{date, quantity}] accelerations.
    accelerations          JSONB NOT NULL DEFAULT '[]'::jsonb,
    exercised              NUMERIC NOT NULL DEFAULT 0 CHECK (exercised >= 0),
    reserved               NUMERIC NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    cancelled_vested       NUMERIC NOT NULL DEFAULT 0 CHECK (cancelled_vested >= 0),
    cancelled_unvested     NUMERIC NOT NULL DEFAULT 0 CHECK (cancelled_unvested >= 0),
    termination_date       DATE,
    termination_reason     TEXT,
    status                 TEXT NOT NULL CHECK (status IN ('active', 'terminated', 'closed')),
    version                BIGINT NOT NULL CHECK (version >= 1),
    recorded_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((exercise_price IS NULL) = (exercise_currency IS NULL)),
    CHECK (expiration_date IS NULL OR expiration_date >= grant_date),
    CHECK (exercised + reserved + cancelled_vested + cancelled_unvested <= quantity)
);
CREATE INDEX awards_by_plan ON awards (company_id, plan_id, id);
CREATE INDEX awards_by_stakeholder ON awards (company_id, stakeholder_id, id);

CREATE TABLE repurchase_programs (
    company_id          UUID NOT NULL,
    id                  UUID PRIMARY KEY,
    share_class_id      UUID NOT NULL REFERENCES share_classes (id),
    max_shares          NUMERIC NOT NULL CHECK (max_shares > 0),
    max_price_per_share NUMERIC NOT NULL CHECK (max_price_per_share >= 0),
    price_currency      TEXT NOT NULL CHECK (price_currency ~ '^[A-Z]{3}$'),
    start_date          DATE NOT NULL,
    end_date            DATE NOT NULL CHECK (end_date >= start_date),
    reserved_shares     NUMERIC NOT NULL DEFAULT 0 CHECK (reserved_shares >= 0),
    repurchased_shares  NUMERIC NOT NULL DEFAULT 0 CHECK (repurchased_shares >= 0),
    version             BIGINT NOT NULL CHECK (version >= 1),
    recorded_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (reserved_shares + repurchased_shares <= max_shares)
);

-- Reservations sagas take (DESIGN.md, Sagas). Idempotent by (saga_id, step).
CREATE TABLE option_reservations (
    company_id    UUID NOT NULL,
    id            UUID PRIMARY KEY,
    award_id      UUID NOT NULL REFERENCES awards (id),
    saga_id       UUID NOT NULL,
    step          INTEGER NOT NULL,
    quantity      NUMERIC NOT NULL CHECK (quantity > 0),
    exercise_date DATE NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('reserved', 'released', 'confirmed')),
    recorded_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (company_id, saga_id, step)
);

CREATE TABLE repurchase_reservations (
    company_id      UUID NOT NULL,
    id              UUID PRIMARY KEY,
    program_id      UUID NOT NULL REFERENCES repurchase_programs (id),
    stakeholder_id  UUID NOT NULL,
    saga_id         UUID NOT NULL,
    step            INTEGER NOT NULL,
    quantity        NUMERIC NOT NULL CHECK (quantity > 0),
    price_per_share NUMERIC NOT NULL CHECK (price_per_share >= 0),
    repurchase_date DATE NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('reserved', 'released', 'confirmed')),
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (company_id, saga_id, step)
);

-- Results of release/confirm saga steps, so a repeat returns the first answer.
CREATE TABLE saga_step_results (
    company_id  UUID NOT NULL,
    saga_id     UUID NOT NULL,
    step        INTEGER NOT NULL,
    operation   TEXT NOT NULL,
    result      JSONB NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (company_id, saga_id, step)
);

-- Every state change, per aggregate, with its version: the primary key makes
-- two writers of the same version collide instead of both winning.
CREATE TABLE equity_events (
    company_id        UUID NOT NULL,
    aggregate_type    TEXT NOT NULL,
    aggregate_id      UUID NOT NULL,
    aggregate_version BIGINT NOT NULL CHECK (aggregate_version >= 1),
    event_id          UUID NOT NULL UNIQUE,
    event_type        TEXT NOT NULL,
    effective_date    DATE NOT NULL,
    -- The encoded qapmap.messaging.v1.DomainEvent, as published.
    payload           BYTEA NOT NULL,
    recorded_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_id, aggregate_version)
);
CREATE INDEX equity_events_by_company ON equity_events (company_id, recorded_at);
