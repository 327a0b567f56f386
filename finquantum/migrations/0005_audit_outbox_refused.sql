-- Audit events ai-governance refused for good (it found the event itself invalid): set aside by the
-- relay so that the events after them are not held up, and kept, with the reason, until an operator
-- puts them back in audit_outbox (README: "Audit events ai-governance refused").

CREATE TABLE audit_outbox_refused (
    event_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    event TEXT NOT NULL,
    created_at TEXT NOT NULL,
    refused_at TEXT NOT NULL,
    reason TEXT NOT NULL
);
