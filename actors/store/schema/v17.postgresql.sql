-- v17 (PostgreSQL): the same stats rollup tables as v17.sql (see there), with native types
-- (a minute or an hour is a BIGINT, not a serial key; no WITHOUT ROWID) and row-level
-- security like v14's on the client-owned ones: a caller reaching some clients sees only
-- their rows (client_id 0, phones of no client, only the farm). stats_minutes and
-- stats_hours name no client: farm-wide.
CREATE TABLE stats_minutes (
    minute BIGINT PRIMARY KEY,
    phone_samples BIGINT NOT NULL DEFAULT 0,
    closed_at TIMESTAMPTZ
);

CREATE TABLE stats_phone_minutes (
    minute BIGINT NOT NULL,
    client_id BIGINT NOT NULL DEFAULT 0,
    node TEXT NOT NULL DEFAULT '',
    busy DOUBLE PRECISION NOT NULL DEFAULT 0,
    idle DOUBLE PRECISION NOT NULL DEFAULT 0,
    offline DOUBLE PRECISION NOT NULL DEFAULT 0,
    paused DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, client_id, node)
);

CREATE TABLE stats_execution_minutes (
    minute BIGINT NOT NULL,
    client_id BIGINT NOT NULL DEFAULT 0,
    sequence TEXT NOT NULL DEFAULT '',
    node TEXT NOT NULL DEFAULT '',
    started BIGINT NOT NULL DEFAULT 0,
    completed BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    recovery_attempts BIGINT NOT NULL DEFAULT 0,
    recovery_succeeded BIGINT NOT NULL DEFAULT 0,
    steps BIGINT NOT NULL DEFAULT 0,
    step_p50_ms DOUBLE PRECISION,
    step_p95_ms DOUBLE PRECISION,
    PRIMARY KEY (minute, client_id, sequence, node)
);

CREATE TABLE stats_hours (
    hour BIGINT PRIMARY KEY,
    sampled_minutes BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE stats_phone_hours (
    hour BIGINT NOT NULL,
    client_id BIGINT NOT NULL DEFAULT 0,
    node TEXT NOT NULL DEFAULT '',
    busy DOUBLE PRECISION NOT NULL DEFAULT 0,
    idle DOUBLE PRECISION NOT NULL DEFAULT 0,
    offline DOUBLE PRECISION NOT NULL DEFAULT 0,
    paused DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, client_id, node)
);

CREATE TABLE stats_execution_hours (
    hour BIGINT NOT NULL,
    client_id BIGINT NOT NULL DEFAULT 0,
    sequence TEXT NOT NULL DEFAULT '',
    node TEXT NOT NULL DEFAULT '',
    started BIGINT NOT NULL DEFAULT 0,
    completed BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    recovery_attempts BIGINT NOT NULL DEFAULT 0,
    recovery_succeeded BIGINT NOT NULL DEFAULT 0,
    steps BIGINT NOT NULL DEFAULT 0,
    step_p50_ms DOUBLE PRECISION,
    step_p95_ms DOUBLE PRECISION,
    PRIMARY KEY (hour, client_id, sequence, node)
);

-- The policies say what v14's phonefarm_sees(client_id) says, written out: a call of that
-- function (SQL, but with its own search_path, so never inlined) cost some 50 us a row,
-- and a week's series reads tens of thousands of rows; these builtins cost next to nothing
-- (CASE, not OR: PostgreSQL may evaluate either side of an OR first, and '*' is no id).
ALTER TABLE stats_phone_minutes ENABLE ROW LEVEL SECURITY;
ALTER TABLE stats_phone_minutes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON stats_phone_minutes USING (CASE
    WHEN current_setting('phonefarm.clients', true) = '*' THEN true
    ELSE COALESCE(client_id = ANY (string_to_array(
        NULLIF(current_setting('phonefarm.clients', true), ''), ',')::BIGINT[]), false) END);

ALTER TABLE stats_execution_minutes ENABLE ROW LEVEL SECURITY;
ALTER TABLE stats_execution_minutes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON stats_execution_minutes USING (CASE
    WHEN current_setting('phonefarm.clients', true) = '*' THEN true
    ELSE COALESCE(client_id = ANY (string_to_array(
        NULLIF(current_setting('phonefarm.clients', true), ''), ',')::BIGINT[]), false) END);

ALTER TABLE stats_phone_hours ENABLE ROW LEVEL SECURITY;
ALTER TABLE stats_phone_hours FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON stats_phone_hours USING (CASE
    WHEN current_setting('phonefarm.clients', true) = '*' THEN true
    ELSE COALESCE(client_id = ANY (string_to_array(
        NULLIF(current_setting('phonefarm.clients', true), ''), ',')::BIGINT[]), false) END);

ALTER TABLE stats_execution_hours ENABLE ROW LEVEL SECURITY;
ALTER TABLE stats_execution_hours FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON stats_execution_hours USING (CASE
    WHEN current_setting('phonefarm.clients', true) = '*' THEN true
    ELSE COALESCE(client_id = ANY (string_to_array(
        NULLIF(current_setting('phonefarm.clients', true), ''), ',')::BIGINT[]), false) END);

-- Closing a minute reads the executions and steps that ended in it (the start time has
-- v15's index).
CREATE INDEX executions_end ON executions (end_time);
CREATE INDEX execution_steps_end ON execution_steps (end_time);
