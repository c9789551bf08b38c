-- v9: the scheduler's state as one row per schedule, per job, per phone (queue, running job,
-- last account) and one for node stagger, so a tick writes only what changed instead of the
-- whole state (scheduler_state, v3, grew to megabytes re-saved every tick). Key:
-- 's/<schedule id>', 'j/<job id>', 'q/<serial>', 'f/<schedule id>' (a finished schedule's
-- final view) or 'core'.
CREATE TABLE scheduler_rows (
    key TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_at TIMESTAMP
);
