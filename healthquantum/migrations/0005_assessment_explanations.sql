-- The features that moved an assessment's output most (JSON list of [feature, contribution]),
-- and whether the output is a regressor's value rather than a probability. The `probability`
-- column holds the model's output either way.

ALTER TABLE assessments ADD COLUMN top_features TEXT;
ALTER TABLE assessments ADD COLUMN regression INTEGER NOT NULL DEFAULT 0;
