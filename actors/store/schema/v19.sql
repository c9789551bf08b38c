-- v19: daily reports (issue 19.5, spec 12.4; actors/coordinator/reports). One row per report
-- made: the client it is for, the UTC day it covers and the exact period, how it was made
-- (kind daily: the --report-at schedule; manual: POST /api/reports), by whom, its title,
-- text and HTML as sent, the figures behind them (summary, JSON), and when it was handed to
-- the notifier (sent_at; NULL: not yet, or kept only). schedule_key ('daily:<client>:<day>')
-- is unique: a scheduled report is made once per client and day, whatever restarts; a
-- manual one has none and may be made again.
CREATE TABLE reports (
    report_id INTEGER PRIMARY KEY,
    client_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    day TEXT NOT NULL,
    period_start TIMESTAMP NOT NULL,
    period_end TIMESTAMP NOT NULL,
    schedule_key TEXT UNIQUE,
    created_at TIMESTAMP NOT NULL,
    created_by TEXT,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    html TEXT NOT NULL,
    summary TEXT NOT NULL,
    sent_at TIMESTAMP,
    send_error TEXT,
    FOREIGN KEY (client_id) REFERENCES clients(client_id)
);
CREATE INDEX reports_client_day ON reports (client_id, day);
CREATE INDEX reports_unsent ON reports (sent_at, day);
