-- v25: definitions with history (issue 23.1; actors/coordinator/definitions/).
-- definition_versions: every save of a sequence, workflow, schedule, registry screen or
-- caption template as an immutable row: its number within (kind, client, name), who, when,
-- why, the SHA-256 of its canonical JSON and the full content (a screen's with the crop
-- and screenshot files it names, base64). client_id NULL: a farm-wide definition (the
-- sequence files, the screen registry, the shared library).
CREATE TABLE definition_versions (
    definition_version_id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    client_id INTEGER,
    version INTEGER NOT NULL,
    author TEXT,
    reason TEXT,
    content_hash TEXT NOT NULL,
    content TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    FOREIGN KEY (client_id) REFERENCES clients(client_id)
);
CREATE UNIQUE INDEX definition_versions_number ON definition_versions
    (kind, IFNULL(client_id, 0), name, version);
CREATE INDEX definition_versions_client ON definition_versions (client_id);
-- The version of its sequence file an execution ran (NULL: an inline sequence, or
-- started before v25) and the coordinator's registry version (its content hash) then.
ALTER TABLE executions ADD COLUMN sequence_version INTEGER;
ALTER TABLE executions ADD COLUMN registry_version TEXT;
