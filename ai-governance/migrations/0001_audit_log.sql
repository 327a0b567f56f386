-- The per-tenant audit log. `leaf` is the exact text hashed into the Merkle tree; `leaf_hash`
-- is its RFC 6962 leaf hash, kept so that the tree is rebuilt without trusting `leaf`.
-- Runs unchanged on SQLite and PostgreSQL.

CREATE TABLE audit_entries (
    tenant_id TEXT NOT NULL,
    idx BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    leaf TEXT NOT NULL,
    leaf_hash TEXT NOT NULL,
    PRIMARY KEY (tenant_id, idx)
);

CREATE UNIQUE INDEX audit_entries_by_event ON audit_entries (tenant_id, event_id);

-- One signed checkpoint per appended batch.
CREATE TABLE audit_checkpoints (
    tenant_id TEXT NOT NULL,
    tree_size BIGINT NOT NULL,
    root_hash TEXT NOT NULL,
    signed_at TEXT NOT NULL,
    signature TEXT NOT NULL,
    key_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, tree_size)
);
