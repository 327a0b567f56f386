-- Summaries of model calls the services report: per tenant, model and version, counts, latency
-- buckets and input bin counts (JSON), never the inputs themselves.

CREATE TABLE inference_windows (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    service TEXT NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    window_start TEXT NOT NULL,
    window_end TEXT NOT NULL,
    calls BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    latency TEXT NOT NULL,
    features TEXT NOT NULL
);

CREATE INDEX inference_windows_by_model ON inference_windows (tenant_id, model, version, window_end);
