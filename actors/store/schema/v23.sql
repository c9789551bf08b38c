-- v23: content management (issue 21): what ${content.*} and ${custom.*} draw from, managed
-- per client. Hashtag sets and caption templates were unique by name farm-wide (v1); a
-- name is now unique per client (NULL: the farm's shared set), so two clients may each
-- have a "daily" caption. SQLite cannot drop a column's UNIQUE: those two tables are
-- rebuilt with their rows and ids.
CREATE TABLE hashtag_sets_v23 (
    hashtag_set_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    client_id INTEGER,
    tags TEXT NOT NULL,
    FOREIGN KEY (client_id) REFERENCES clients(client_id)
);
INSERT INTO hashtag_sets_v23 (hashtag_set_id, name, client_id, tags)
    SELECT hashtag_set_id, name, client_id, tags FROM hashtag_sets;
DROP TABLE hashtag_sets;
ALTER TABLE hashtag_sets_v23 RENAME TO hashtag_sets;
CREATE INDEX hashtag_sets_client ON hashtag_sets (client_id);
CREATE UNIQUE INDEX hashtag_sets_name ON hashtag_sets (name, IFNULL(client_id, 0));

CREATE TABLE caption_templates_v23 (
    caption_template_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    client_id INTEGER,
    template TEXT NOT NULL,
    FOREIGN KEY (client_id) REFERENCES clients(client_id)
);
INSERT INTO caption_templates_v23 (caption_template_id, name, client_id, template)
    SELECT caption_template_id, name, client_id, template FROM caption_templates;
DROP TABLE caption_templates;
ALTER TABLE caption_templates_v23 RENAME TO caption_templates;
CREATE INDEX caption_templates_client ON caption_templates (client_id);
CREATE UNIQUE INDEX caption_templates_name ON caption_templates (name, IFNULL(client_id, 0));

-- Custom variables per account: account_id set (its client_id is the account's client, so
-- the client's row-level policy covers it); the account's value wins over its client's,
-- which wins over the farm's.
ALTER TABLE custom_variables ADD COLUMN account_id INTEGER REFERENCES accounts(account_id);
DROP INDEX custom_variables_name;
CREATE UNIQUE INDEX custom_variables_name ON custom_variables
    (name, IFNULL(client_id, 0), IFNULL(account_id, 0));
CREATE INDEX custom_variables_account ON custom_variables (account_id);

-- media_items: the media library. The file is DATA/media/<sha256>.<ext> (file_name), one
-- copy per content whatever the rows naming it; ${content.media.next} draws from that
-- folder as before (media_files keeps its use counts).
CREATE TABLE media_items (
    media_item_id INTEGER PRIMARY KEY,
    client_id INTEGER,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('image', 'video')),
    mime TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    file_name TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    created_by TEXT,
    FOREIGN KEY (client_id) REFERENCES clients(client_id)
);
CREATE UNIQUE INDEX media_items_name ON media_items (name, IFNULL(client_id, 0));
CREATE INDEX media_items_client ON media_items (client_id);
CREATE INDEX media_items_sha256 ON media_items (sha256);
