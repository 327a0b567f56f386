-- Erasure (LGPD Art. 18 VI): an erased patient keeps its row, with the personal fields emptied
-- and the time of erasure, so that the assessments medical-record law requires to be kept stay
-- consistent but point at no one.

ALTER TABLE patients ADD COLUMN erased_at TEXT;
