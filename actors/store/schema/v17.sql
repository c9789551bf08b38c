-- v17: stats: one-minute rollups, and the same per hour (issue 19.2; actors/coordinator/rollups.py writes them,
-- actors/store/stats.py reads them for GET /api/stats). A minute is the Unix time (UTC
-- seconds, a multiple of 60) of its start, so a coarser step is integer arithmetic on
-- both engines. client_id 0 stands for phones given to no client, '' for an unknown node
-- or sequence: the key columns are never NULL, so each (minute, dimensions) row is one
-- upsert target and a minute closed again (a restart) replaces its rows, never adds.

-- The minutes the rollup job has closed. phone_samples: how many samples of the phones'
-- states went into the minute's stats_phone_minutes rows (0: none, e.g. a minute caught
-- up after a restart, whose phone states nobody saw); the averages over a coarser step
-- divide by the minutes that had samples.
CREATE TABLE stats_minutes (
    minute INTEGER PRIMARY KEY,
    phone_samples INTEGER NOT NULL DEFAULT 0,
    closed_at TIMESTAMP
);

-- Phones per minute, client and node: the average number busy (online, running an
-- execution), idle (online, free), offline (offline or failed) and paused over the samples.
CREATE TABLE stats_phone_minutes (
    minute INTEGER NOT NULL,
    client_id INTEGER NOT NULL DEFAULT 0,
    node TEXT NOT NULL DEFAULT '',
    busy REAL NOT NULL DEFAULT 0,
    idle REAL NOT NULL DEFAULT 0,
    offline REAL NOT NULL DEFAULT 0,
    paused REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, client_id, node)
) WITHOUT ROWID;

-- Executions per minute, client, sequence and node (the phone's): started (by start time),
-- completed and failed (by end time), AI recovery attempts (by start) and those that
-- succeeded (by end), and the times of the steps that ended in the minute: how many and
-- their p50/p95 in milliseconds.
CREATE TABLE stats_execution_minutes (
    minute INTEGER NOT NULL,
    client_id INTEGER NOT NULL DEFAULT 0,
    sequence TEXT NOT NULL DEFAULT '',
    node TEXT NOT NULL DEFAULT '',
    started INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    recovery_attempts INTEGER NOT NULL DEFAULT 0,
    recovery_succeeded INTEGER NOT NULL DEFAULT 0,
    steps INTEGER NOT NULL DEFAULT 0,
    step_p50_ms REAL,
    step_p95_ms REAL,
    PRIMARY KEY (minute, client_id, sequence, node)
) WITHOUT ROWID;

-- The same per hour, rewritten from the hour's minute rows each time one of its minutes is
-- closed, so a step of an hour or more reads 60 times fewer rows (a week by sequence: some
-- 5,000 rows instead of 300,000). Phones: the sums of the minute averages, to be divided by
-- the minutes that had samples (stats_hours.sampled_minutes); step_p50_ms: the minute p50s'
-- mean weighted by their step counts, step_p95_ms: their maximum (actors/store/stats.py).
CREATE TABLE stats_hours (
    hour INTEGER PRIMARY KEY,
    sampled_minutes INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE stats_phone_hours (
    hour INTEGER NOT NULL,
    client_id INTEGER NOT NULL DEFAULT 0,
    node TEXT NOT NULL DEFAULT '',
    busy REAL NOT NULL DEFAULT 0,
    idle REAL NOT NULL DEFAULT 0,
    offline REAL NOT NULL DEFAULT 0,
    paused REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, client_id, node)
) WITHOUT ROWID;

CREATE TABLE stats_execution_hours (
    hour INTEGER NOT NULL,
    client_id INTEGER NOT NULL DEFAULT 0,
    sequence TEXT NOT NULL DEFAULT '',
    node TEXT NOT NULL DEFAULT '',
    started INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    recovery_attempts INTEGER NOT NULL DEFAULT 0,
    recovery_succeeded INTEGER NOT NULL DEFAULT 0,
    steps INTEGER NOT NULL DEFAULT 0,
    step_p50_ms REAL,
    step_p95_ms REAL,
    PRIMARY KEY (hour, client_id, sequence, node)
) WITHOUT ROWID;

-- Closing a minute reads the executions and steps that ended in it (the start time has
-- v15's index).
CREATE INDEX executions_end ON executions (end_time);
CREATE INDEX execution_steps_end ON execution_steps (end_time);
