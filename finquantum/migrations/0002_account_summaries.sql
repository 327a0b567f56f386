-- What each account's data shows over the 90 days before its balance (end-of-day balances and
-- salaries, JSON), kept at each ingestion so that a credit score reads no transactions.

ALTER TABLE accounts ADD COLUMN summary TEXT;
