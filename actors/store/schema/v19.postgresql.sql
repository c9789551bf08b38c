-- v19 (PostgreSQL): daily reports, as v19.sql (see there), with the summary as JSONB and
-- row-level security like v14's: a report is its client's.
CREATE TABLE reports (
    report_id BIGSERIAL PRIMARY KEY,
    client_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    day TEXT NOT NULL,
    period_start TIMESTAMPTZ NOT NULL,
    period_end TIMESTAMPTZ NOT NULL,
    schedule_key TEXT UNIQUE,
    created_at TIMESTAMPTZ NOT NULL,
    created_by TEXT,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    html TEXT NOT NULL,
    summary JSONB NOT NULL,
    sent_at TIMESTAMPTZ,
    send_error TEXT,
    FOREIGN KEY (client_id) REFERENCES clients(client_id)
);
CREATE INDEX reports_client_day ON reports (client_id, day);
CREATE INDEX reports_unsent ON reports (sent_at, day);

ALTER TABLE reports ENABLE ROW LEVEL SECURITY;
ALTER TABLE reports FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON reports USING (phonefarm_sees(client_id));
