-- Personal fields sealed with per-tenant data keys (AES-256-GCM) instead of clear columns: the
-- tenants' wrapped data keys, the sealed fields, and the CPF's blind index for lookups. Rows of
-- the first schema are sealed at start-up and their clear columns emptied.

CREATE TABLE tenant_keys (
    tenant_id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    wrapped_key TEXT NOT NULL,
    created_at TEXT NOT NULL
);

ALTER TABLE patients ADD COLUMN sealed TEXT;
ALTER TABLE patients ADD COLUMN cpf_hash TEXT;
ALTER TABLE patients ADD COLUMN updated_at TEXT;

CREATE INDEX patients_by_cpf_hash ON patients (tenant_id, cpf_hash);
