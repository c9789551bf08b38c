-- v26: the journal seq of the node event that started each step row (NULL: a row from
-- before v26, or a finish whose start never arrived). A start delivered again (the
-- coordinator stopped after writing a batch's records, before storing its events) is known
-- by it and adds no second row; a step played again (after a node restart) has a new seq.
ALTER TABLE execution_steps ADD COLUMN start_seq BIGINT;
