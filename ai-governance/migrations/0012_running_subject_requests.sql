-- Subject requests are recorded `running` before their services are asked; the sweep that marks
-- those a stop left running looks for them across tenants, by age.
CREATE INDEX IF NOT EXISTS subject_requests_running ON subject_requests (created_at) WHERE status = 'running';
