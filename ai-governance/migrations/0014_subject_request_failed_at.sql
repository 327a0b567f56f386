-- When a data-subject request was found failed (a service that did not answer, an erasure left
-- undone, a run cut short), so that an evidence report of a period that ended before then counts
-- it as it stood at the period's end. NULL for a request that did not fail, and for one that
-- failed before this column, which a report counts as failed whatever its period.

ALTER TABLE subject_requests ADD COLUMN failed_at TEXT;
