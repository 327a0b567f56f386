-- Objects (images, thumbnails, reports) whose records a deletion or an erasure removed, written in
-- the same transaction: a row goes once its object is deleted, so that an object store that fails
-- meanwhile only delays the deletion.

CREATE TABLE object_deletions (
    tenant_id TEXT NOT NULL,
    object_key TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, object_key)
);
