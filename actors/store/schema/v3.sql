-- v3: the scheduler (actors.schedules): its whole state as one msgspec JSON row, so
-- schedules and queued jobs survive a coordinator restart, and the record of what it did.

CREATE TABLE scheduler_state (
    state_id INTEGER PRIMARY KEY CHECK (state_id = 1),
    state TEXT NOT NULL,
    updated_at TIMESTAMP
);

CREATE TABLE schedule_events (
    id INTEGER PRIMARY KEY,
    at TIMESTAMP NOT NULL,
    schedule_id TEXT,
    job_id TEXT,
    serial TEXT,
    kind TEXT NOT NULL,
    reason TEXT,
    detail TEXT
);
CREATE INDEX schedule_events_schedule ON schedule_events (schedule_id, id);
