-- What ties a request that holds a subject's data (an export bundle with records, a correction's
-- details) to its subject, so that a later erasure of the same CPF finds and deletes that data:
-- `subject_digest`, SHA-256 of the request id and the CPF (salted per request, and kept only
-- beside data that holds the CPF anyway); `erased_by`, the erasure that deleted it.
ALTER TABLE subject_requests ADD COLUMN subject_digest TEXT;
ALTER TABLE subject_requests ADD COLUMN erased_by TEXT;
