-- v15: indexes for the execution history's filters (GET /api/executions, issue 18's
-- history queries over a million rows; actors/store/execution_history.py). A page is the
-- newest rows first (ORDER BY execution_id DESC, keyset "before" an id), so each filter's
-- index ends with execution_id: the page is read in index order and stops after `limit`
-- rows instead of sorting every match. run_id keeps v1's index (a run has few rows);
-- since/until range over start_time.
CREATE INDEX executions_status_id ON executions (status, execution_id);
CREATE INDEX executions_serial_id ON executions (serial, execution_id);
CREATE INDEX executions_sequence_id ON executions (sequence, execution_id);
CREATE INDEX executions_start ON executions (start_time);
