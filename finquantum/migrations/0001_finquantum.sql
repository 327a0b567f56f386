-- FinQuantum: customers (the CPF sealed with the tenant's data key and found by its blind index),
-- their Open Finance consents, the accounts and transactions fetched under them (money in integer
-- cents), credit decisions, the audit outbox and the tenants' wrapped data keys. Runs unchanged on
-- SQLite and PostgreSQL: text ids (UUIDv7), times as RFC 3339 UTC text ending in `Z`.

CREATE TABLE customers (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    cpf_hash TEXT NOT NULL,
    sealed_cpf TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE UNIQUE INDEX customers_by_cpf_hash ON customers (tenant_id, cpf_hash);

CREATE TABLE consents (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    institution TEXT NOT NULL,
    -- Space-separated Open Finance permissions.
    permissions TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT,
    last_ingested_at TEXT,
    -- When the data fetched under the consent is due for deletion (revoked or expired), and when
    -- it was deleted.
    purge_due_at TEXT,
    purged_at TEXT,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, id)
);

CREATE INDEX consents_by_customer ON consents (tenant_id, customer_id);

-- An account of a customer at an institution, held under the consent that last fetched it.
CREATE TABLE accounts (
    tenant_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    institution TEXT NOT NULL,
    account_id TEXT NOT NULL,
    consent_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    brand_name TEXT NOT NULL,
    number TEXT NOT NULL,
    balance_cents BIGINT,
    balance_at TEXT,
    fetched_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, customer_id, institution, account_id)
);

CREATE INDEX accounts_by_consent ON accounts (tenant_id, consent_id);

-- A transaction is stored once however often it is fetched: its key is the institution's id.
CREATE TABLE transactions (
    tenant_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    institution TEXT NOT NULL,
    account_id TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    credit BIGINT NOT NULL,
    kind TEXT NOT NULL,
    -- As the institution names it, with anything shaped like a card number masked.
    name TEXT NOT NULL,
    amount_cents BIGINT NOT NULL,
    currency TEXT NOT NULL,
    booked_at TEXT NOT NULL,
    fetched_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, customer_id, institution, account_id, transaction_id)
);

CREATE TABLE credit_scores (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    model TEXT NOT NULL,
    model_version TEXT NOT NULL,
    -- JSON: the model's input by feature name; emptied when the customer is erased.
    features TEXT NOT NULL,
    -- JSON: the bank summary the score used.
    bank TEXT NOT NULL,
    probability DOUBLE PRECISION NOT NULL,
    score BIGINT NOT NULL,
    risk_band TEXT NOT NULL,
    -- JSON list of reason codes.
    reasons TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE INDEX credit_scores_by_customer ON credit_scores (tenant_id, customer_id);

CREATE TABLE audit_outbox (
    event_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    event TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE tenant_keys (
    tenant_id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    wrapped_key TEXT NOT NULL,
    created_at TEXT NOT NULL
);
