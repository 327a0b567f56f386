-- Which accounts each consent fetched. An account row is held under the consent that fetched it
-- last; when that consent is purged, an account passes only to another valid consent that fetched
-- it too, and is deleted otherwise.

CREATE TABLE consent_accounts (
    tenant_id TEXT NOT NULL,
    consent_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    institution TEXT NOT NULL,
    account_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, consent_id, institution, account_id)
);

CREATE INDEX consent_accounts_by_account ON consent_accounts (tenant_id, customer_id, institution, account_id);

-- What is known of the past: each account was fetched by the consent it is held under, and by any
-- other unpurged consent of its customer whose last ingestion is on record for it (the account's
-- last fetch, or transactions first stored then): an ingestion stamps all three with one time.
INSERT INTO consent_accounts (tenant_id, consent_id, customer_id, institution, account_id)
SELECT tenant_id, consent_id, customer_id, institution, account_id FROM accounts
UNION
SELECT a.tenant_id, c.id, a.customer_id, a.institution, a.account_id
FROM accounts a JOIN consents c
    ON c.tenant_id = a.tenant_id AND c.customer_id = a.customer_id AND c.institution = a.institution
WHERE c.purged_at IS NULL AND c.last_ingested_at IS NOT NULL
    AND (c.last_ingested_at = a.fetched_at OR EXISTS (
        SELECT 1 FROM transactions t
        WHERE t.tenant_id = a.tenant_id AND t.customer_id = a.customer_id AND t.institution = a.institution
            AND t.account_id = a.account_id AND t.fetched_at = c.last_ingested_at));
