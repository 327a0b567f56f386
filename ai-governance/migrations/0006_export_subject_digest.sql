-- An export bundle holds the subject's data as the services returned it. `subject_digest`
-- (SHA-256 of the request id and the CPF, salted per request) lets a later erasure of the same
-- subject find the bundles to delete, without a lookup key for the CPF; `export_erased_by`
-- names the erasure that deleted a bundle.
ALTER TABLE subject_requests ADD COLUMN subject_digest TEXT;
ALTER TABLE subject_requests ADD COLUMN export_erased_by TEXT;
