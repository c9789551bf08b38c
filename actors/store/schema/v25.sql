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
-- Templates across clients (issue 23.3): a sequence definition can be a template like a
-- workflow; template_copies is a copy's lineage: which template (kind, origin client, name)
-- it was copied from at which of the origin's versions (a workflow's history number, a
-- sequence definition's version counter), and the copy's own version that copy or update
-- made (a newer one: the copy was edited since).
ALTER TABLE sequence_definitions ADD COLUMN is_template BOOLEAN DEFAULT FALSE;
CREATE TABLE template_copies (
    template_copy_id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    client_id INTEGER NOT NULL,
    origin_client_id INTEGER,
    origin_version INTEGER NOT NULL,
    copy_version INTEGER NOT NULL,
    copied_at TIMESTAMP NOT NULL,
    copied_by TEXT,
    FOREIGN KEY (client_id) REFERENCES clients(client_id),
    FOREIGN KEY (origin_client_id) REFERENCES clients(client_id)
);
CREATE UNIQUE INDEX template_copies_copy ON template_copies (kind, client_id, name);
CREATE INDEX template_copies_client ON template_copies (client_id);
CREATE INDEX template_copies_origin ON template_copies (origin_client_id, kind, name);
