-- ai-governance's own audit events (a data-subject request made or completed, a review asked for
-- or decided), written in the transaction of the change they record and appended to the tenant's
-- log once it commits; what a crash or a failed append leaves here is appended later, once.
CREATE TABLE own_audit_outbox (
    event_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    leaf TEXT NOT NULL,
    created_at TEXT NOT NULL
);
