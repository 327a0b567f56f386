-- The transactional outbox of audit events (see platform::audit): written in the transaction of
-- the action it records, shipped to ai-governance by the relay and deleted once acknowledged.

CREATE TABLE audit_outbox (
    event_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    event TEXT NOT NULL,
    created_at TEXT NOT NULL
);
