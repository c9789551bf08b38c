-- v23 (PostgreSQL): content management, as v23.sql (see there). PostgreSQL drops v1's
-- UNIQUE (name) constraints in place instead of rebuilding the tables; media_items is
-- client-owned: FORCEd row-level security like v14's content tables.
ALTER TABLE hashtag_sets DROP CONSTRAINT IF EXISTS hashtag_sets_name_key;
CREATE UNIQUE INDEX hashtag_sets_name ON hashtag_sets (name, COALESCE(client_id, 0));
ALTER TABLE caption_templates DROP CONSTRAINT IF EXISTS caption_templates_name_key;
CREATE UNIQUE INDEX caption_templates_name ON caption_templates (name, COALESCE(client_id, 0));

ALTER TABLE custom_variables ADD COLUMN account_id BIGINT REFERENCES accounts(account_id);
DROP INDEX custom_variables_name;
CREATE UNIQUE INDEX custom_variables_name ON custom_variables
    (name, COALESCE(client_id, 0), COALESCE(account_id, 0));
CREATE INDEX custom_variables_account ON custom_variables (account_id);

CREATE TABLE media_items (
    media_item_id BIGSERIAL PRIMARY KEY,
    client_id BIGINT,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('image', 'video')),
    mime TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    file_name TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    created_by TEXT,
    FOREIGN KEY (client_id) REFERENCES clients(client_id)
);
CREATE UNIQUE INDEX media_items_name ON media_items (name, COALESCE(client_id, 0));
CREATE INDEX media_items_client ON media_items (client_id);
CREATE INDEX media_items_sha256 ON media_items (sha256);

ALTER TABLE media_items ENABLE ROW LEVEL SECURITY;
ALTER TABLE media_items FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON media_items USING (client_id IS NULL OR phonefarm_sees(client_id));
