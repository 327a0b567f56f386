-- The models every service registered at start-up, platform-wide (models are not a tenant's).

CREATE TABLE models (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    service TEXT NOT NULL,
    card TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    observed_sha256 TEXT NOT NULL,
    first_registered_at TEXT NOT NULL,
    last_registered_at TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
