-- The public keys that have signed checkpoints, by key id: a checkpoint signed before the key was
-- changed is verified against the key that signed it, which `GET /v1/governance/audit/public-key
-- ?keyId=` serves too.
CREATE TABLE audit_signing_keys (
    key_id TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    first_used_at TEXT NOT NULL
);
