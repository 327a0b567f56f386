-- Data-subject requests' personal data sealed with per-tenant data keys (AES-256-GCM): access and
-- portability bundles (`export`), corrections' `details` and `resolution`, each bound to its
-- tenant, request and column. The tenants' data keys, wrapped by the master key. Values stored in
-- clear before (a bundle's JSON, a correction's text) are still read as they are.

CREATE TABLE tenant_keys (
    tenant_id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    wrapped_key TEXT NOT NULL,
    created_at TEXT NOT NULL
);
