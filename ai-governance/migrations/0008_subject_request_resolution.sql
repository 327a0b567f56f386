-- How a person handled an open correction request, written when they complete it; erased with
-- the subject's other data by a later erasure of the same CPF.
ALTER TABLE subject_requests ADD COLUMN resolution TEXT;
