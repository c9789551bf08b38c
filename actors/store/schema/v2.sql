-- v2: crash recovery: the resolved plan an execution was started with (RunSequence,
-- JSON), so a coordinator can resume it on a restarted node; unfinished ones found fast.

ALTER TABLE executions ADD COLUMN plan TEXT;
CREATE INDEX executions_status ON executions (status, serial);
