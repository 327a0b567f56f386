-- Patients and their risk assessments. Runs unchanged on SQLite and PostgreSQL: text ids
-- (UUIDv7), timestamps as RFC 3339 UTC text ending in `Z`, no engine-specific types.

CREATE TABLE patients (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    cpf TEXT NOT NULL,
    birth_date TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE assessments (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    model TEXT NOT NULL,
    model_version TEXT NOT NULL,
    features TEXT NOT NULL,
    probability DOUBLE PRECISION NOT NULL,
    risk_band TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, patient_id) REFERENCES patients (tenant_id, id)
);

CREATE INDEX assessments_by_patient ON assessments (tenant_id, patient_id);
