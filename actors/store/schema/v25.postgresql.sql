-- v25 (PostgreSQL): definitions with history, as v25.sql (see there), with native types;
-- definition_versions is client-owned: FORCEd row-level security like v14's definitions
-- (a farm-wide definition, client_id NULL, is read by every caller; not a super user's
-- schedule: tenants never see the farm's schedules).
CREATE TABLE definition_versions (
    definition_version_id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    client_id BIGINT,
    version BIGINT NOT NULL,
    author TEXT,
    reason TEXT,
    content_hash TEXT NOT NULL,
    content JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    FOREIGN KEY (client_id) REFERENCES clients(client_id)
);
CREATE UNIQUE INDEX definition_versions_number ON definition_versions
    (kind, COALESCE(client_id, 0), name, version);
CREATE INDEX definition_versions_client ON definition_versions (client_id);
ALTER TABLE executions ADD COLUMN sequence_version BIGINT;
ALTER TABLE executions ADD COLUMN registry_version TEXT;

ALTER TABLE definition_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE definition_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON definition_versions USING (
    (client_id IS NULL AND kind <> 'schedule') OR phonefarm_sees(client_id));

ALTER TABLE sequence_definitions ADD COLUMN is_template BOOLEAN DEFAULT FALSE;
CREATE TABLE template_copies (
    template_copy_id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    client_id BIGINT NOT NULL,
    origin_client_id BIGINT,
    origin_version BIGINT NOT NULL,
    copy_version BIGINT NOT NULL,
    copied_at TIMESTAMPTZ NOT NULL,
    copied_by TEXT,
    FOREIGN KEY (client_id) REFERENCES clients(client_id),
    FOREIGN KEY (origin_client_id) REFERENCES clients(client_id)
);
CREATE UNIQUE INDEX template_copies_copy ON template_copies (kind, client_id, name);
CREATE INDEX template_copies_client ON template_copies (client_id);
CREATE INDEX template_copies_origin ON template_copies (origin_client_id, kind, name);
ALTER TABLE template_copies ENABLE ROW LEVEL SECURITY;
ALTER TABLE template_copies FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON template_copies USING (phonefarm_sees(client_id));
