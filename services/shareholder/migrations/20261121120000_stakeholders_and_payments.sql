-- The stakeholder register (OCF Stakeholder) and its append-only event log.
-- Enum columns hold the OCF spelling, so an export is a plain copy.
CREATE TABLE stakeholders (
    id                      UUID PRIMARY KEY,
    company_id              UUID NOT NULL,
    stakeholder_type        TEXT NOT NULL CHECK (stakeholder_type IN ('INDIVIDUAL', 'INSTITUTION')),
    -- Personal data: never logged.
    name                    TEXT NOT NULL CHECK (name <> '' AND length(name) <= 200),
    email                   TEXT CHECK (email IS NULL OR (email <> '' AND length(email) <= 254)),
    relationships           TEXT[] NOT NULL CHECK (relationships <@ ARRAY[
                                'ADVISOR', 'BOARD_MEMBER', 'CONSULTANT', 'EMPLOYEE', 'EX_ADVISOR',
                                'EX_CONSULTANT', 'EX_EMPLOYEE', 'EXECUTIVE', 'FOUNDER', 'INVESTOR',
                                'NON_US_EMPLOYEE', 'OFFICER', 'OTHER']),
    status                  TEXT NOT NULL CHECK (status IN (
                                'ACTIVE', 'LEAVE_OF_ABSENCE',
                                'TERMINATION_VOLUNTARY_OTHER', 'TERMINATION_VOLUNTARY_GOOD_CAUSE',
                                'TERMINATION_VOLUNTARY_RETIREMENT', 'TERMINATION_INVOLUNTARY_OTHER',
                                'TERMINATION_INVOLUNTARY_DEATH', 'TERMINATION_INVOLUNTARY_DISABILITY',
                                'TERMINATION_INVOLUNTARY_WITH_CAUSE')),
    employment_start_date   DATE,
    -- Set exactly when the status is a TERMINATION_* one (which names the reason).
    termination_date        DATE,
    payment_instruction_ref TEXT CHECK (payment_instruction_ref IS NULL OR length(payment_instruction_ref) <= 200),
    version                 BIGINT NOT NULL CHECK (version >= 1),
    created_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((termination_date IS NOT NULL) = (status LIKE 'TERMINATION_%')),
    CHECK (termination_date IS NULL OR employment_start_date IS NULL
           OR termination_date >= employment_start_date)
);

-- Lists page by id (UUID v7, so creation order) within a company.
CREATE INDEX stakeholders_by_company ON stakeholders (company_id, id);

-- One row per version of a stakeholder: what changed, when it took effect,
-- and the stakeholder as it was after the change (encoded proto).
CREATE TABLE stakeholder_events (
    company_id      UUID NOT NULL,
    stakeholder_id  UUID NOT NULL REFERENCES stakeholders (id),
    version         BIGINT NOT NULL CHECK (version >= 1),
    event_type      TEXT NOT NULL CHECK (event_type <> ''),
    effective_date  DATE NOT NULL,
    snapshot        BYTEA NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (stakeholder_id, version)
);

-- Money moved (or attempted) with a stakeholder through the gateway. The row
-- is written BEFORE the gateway is called (status 'pending') and updated with
-- the outcome after, so a crash in between leaves a visible pending row and
-- the unique key stops a second execution.
CREATE TABLE payments (
    id                UUID PRIMARY KEY,
    company_id        UUID NOT NULL,
    -- 'request:<request_id>' for API calls, 'saga:<saga_id>:<step>' for sagas.
    idempotency_key   TEXT NOT NULL CHECK (idempotency_key <> '' AND length(idempotency_key) <= 200),
    stakeholder_id    UUID NOT NULL REFERENCES stakeholders (id),
    direction         TEXT NOT NULL CHECK (direction IN ('collection', 'disbursement')),
    amount            NUMERIC(38, 10) NOT NULL CHECK (amount > 0),
    currency          TEXT NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status            TEXT NOT NULL CHECK (status IN
                          ('pending', 'succeeded', 'declined', 'failed_retryable', 'outcome_unknown')),
    decline_reason    TEXT,
    gateway_reference TEXT,
    gateway_attempts  INTEGER NOT NULL DEFAULT 0 CHECK (gateway_attempts >= 0),
    -- When the current attempt started: a pending row older than the gateway
    -- timeout belongs to an attempt that crashed.
    attempt_started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (company_id, idempotency_key),
    CHECK (status <> 'succeeded' OR gateway_reference IS NOT NULL),
    CHECK (status <> 'declined' OR decline_reason IS NOT NULL)
);

CREATE INDEX payments_by_company ON payments (company_id, id);
