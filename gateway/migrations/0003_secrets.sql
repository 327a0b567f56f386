-- Secrets the gateway makes on its first start and every replica shares: the key that turns a
-- token's subject into the pseudonym the audit log names.
CREATE TABLE gateway_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
