-- v6: recovery attempts tied to the farm's executions (spec 12.3.4, 12.3.5). The spec's row
-- points at sequence_executions; sequence runs are recorded in `executions`, so an attempt
-- names its execution (execution_key), phone, sequence and failed step, what the phone showed
-- when recovery began (`screen`: the unknown-screens queue id, or the screen label seen), the
-- goal, where it ended, how many AI steps it took and the step the sequence resumed from.
ALTER TABLE recovery_attempts ADD COLUMN execution_key TEXT;
ALTER TABLE recovery_attempts ADD COLUMN serial TEXT;
ALTER TABLE recovery_attempts ADD COLUMN sequence TEXT;
ALTER TABLE recovery_attempts ADD COLUMN step_path TEXT;
ALTER TABLE recovery_attempts ADD COLUMN failure_reason TEXT;
ALTER TABLE recovery_attempts ADD COLUMN screen TEXT;
ALTER TABLE recovery_attempts ADD COLUMN goal_screen TEXT;
ALTER TABLE recovery_attempts ADD COLUMN reached_screen TEXT;
ALTER TABLE recovery_attempts ADD COLUMN steps INTEGER;
ALTER TABLE recovery_attempts ADD COLUMN resume_from INTEGER;
ALTER TABLE recovery_attempts ADD COLUMN error TEXT;
CREATE INDEX recovery_attempts_execution ON recovery_attempts (execution_key);
CREATE INDEX recovery_attempts_by_sequence ON recovery_attempts (sequence, status);
CREATE INDEX recovery_attempts_by_screen ON recovery_attempts (screen, status);
