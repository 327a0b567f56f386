-- A model's sha256 flag stays once raised: the file that came back after another one was served
-- does not clear the evidence that another one was. `differing_sha256` is the last sha256 seen
-- that is not the card's, `mismatch_at` when the first such one was registered (for a flag raised
-- before, the last registration then, which carried the other sha256: the first is not known).

ALTER TABLE models ADD COLUMN differing_sha256 TEXT;
ALTER TABLE models ADD COLUMN mismatch_at TEXT;

UPDATE models SET differing_sha256 = observed_sha256, mismatch_at = last_registered_at WHERE observed_sha256 <> sha256;
