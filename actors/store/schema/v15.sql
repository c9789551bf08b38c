-- v15: indexes for the execution history's filters (GET /api/executions, issue 18's
-- history queries over a million rows; actors/store/execution_history.py). A page is the
-- newest rows first, by start time then execution_id, so each filter's index is the
-- filtered column, then start_time and execution_id: a page (and since/until, a range of
-- start_time) is read in index order and stops after `limit` rows instead of sorting every
-- match. serial has v1's executions_serial (serial, start_time); run_id keeps v1's index
-- (a run has few rows).
CREATE INDEX executions_start ON executions (start_time, execution_id);
CREATE INDEX executions_status_start ON executions (status, start_time, execution_id);
CREATE INDEX executions_sequence_start ON executions (sequence, start_time, execution_id);
