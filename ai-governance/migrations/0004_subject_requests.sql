-- LGPD data-subject requests and reviews of automated decisions. No CPF is stored: a request
-- names its subject only while it is processed.

CREATE TABLE subject_requests (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    details TEXT NOT NULL,
    deadline TEXT NOT NULL,
    created_at TEXT NOT NULL,
    completed_at TEXT,
    outcomes TEXT NOT NULL,
    export TEXT,
    PRIMARY KEY (tenant_id, id)
);

CREATE INDEX subject_requests_by_deadline ON subject_requests (tenant_id, status, deadline);

CREATE TABLE reviews (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    audit_index BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    action TEXT NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL,
    outcome TEXT NOT NULL,
    note TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    created_at TEXT NOT NULL,
    decided_at TEXT,
    PRIMARY KEY (tenant_id, id)
);
