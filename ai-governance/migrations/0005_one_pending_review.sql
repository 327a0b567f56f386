-- A decision has at most one review waiting at a time; two requests at once cannot both queue one.
CREATE UNIQUE INDEX IF NOT EXISTS reviews_one_pending ON reviews (tenant_id, audit_index) WHERE status = 'pending';
