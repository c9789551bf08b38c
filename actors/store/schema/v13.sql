-- v13: groups and workflow executions belong to clients (issue 17.4).
--
-- A group's name is unique within its client (client_id NULL: the farm's shared groups, the
-- book super users work in), no longer across the farm: two clients may each have a group
-- "vip", and creating one tells nothing about the other's. SQLite cannot drop the column's
-- UNIQUE, so the three group tables are rebuilt with the same columns and ids. The new
-- child tables reference groups_v13 until it is renamed (the rename rewrites their foreign
-- keys), so dropping the old groups table cascades into nothing that is kept.
CREATE TABLE groups_v13 (
    group_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    type TEXT NOT NULL CHECK (type IN ('system', 'custom', 'smart')),
    member_kind TEXT NOT NULL CHECK (member_kind IN ('account', 'phone')),
    filter TEXT,                       -- smart groups: 'filter.accounts where status=active'
    parent_id INTEGER,
    client_id INTEGER,
    created_by TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (parent_id) REFERENCES groups_v13(group_id),
    FOREIGN KEY (client_id) REFERENCES clients(client_id)
);
INSERT INTO groups_v13 (group_id, name, description, type, member_kind, filter, parent_id,
                        client_id, created_by, created_at)
    SELECT group_id, name, description, type, member_kind, filter, parent_id, client_id,
           created_by, created_at FROM groups;
CREATE TABLE group_memberships_v13 (
    membership_id INTEGER PRIMARY KEY,
    group_id INTEGER NOT NULL,
    entity_type TEXT NOT NULL CHECK (entity_type IN ('account', 'phone')),
    entity_id TEXT NOT NULL,           -- serial, or platform.account_number@serial
    position INTEGER NOT NULL,
    added_by TEXT,
    added_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (group_id) REFERENCES groups_v13(group_id) ON DELETE CASCADE,
    UNIQUE (group_id, entity_id)
);
INSERT INTO group_memberships_v13 SELECT membership_id, group_id, entity_type, entity_id,
    position, added_by, added_at FROM group_memberships;
CREATE TABLE group_relationships_v13 (
    relationship_id INTEGER PRIMARY KEY,
    relationship_type TEXT NOT NULL CHECK (relationship_type IN
                                           ('exclusive', 'requires', 'excludes')),
    group_id_1 INTEGER NOT NULL,
    group_id_2 INTEGER,                -- NULL for 'exclusive': one row per group of the set
    parameters TEXT,                   -- JSON; 'exclusive': {"set": "account_status"}
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (group_id_1) REFERENCES groups_v13(group_id) ON DELETE CASCADE,
    FOREIGN KEY (group_id_2) REFERENCES groups_v13(group_id) ON DELETE CASCADE
);
INSERT INTO group_relationships_v13 SELECT relationship_id, relationship_type, group_id_1,
    group_id_2, parameters, created_at FROM group_relationships;
DROP TABLE group_relationships;
DROP TABLE group_memberships;
DROP TABLE groups;
ALTER TABLE groups_v13 RENAME TO groups;
ALTER TABLE group_memberships_v13 RENAME TO group_memberships;
ALTER TABLE group_relationships_v13 RENAME TO group_relationships;
CREATE UNIQUE INDEX groups_client_name ON groups (IFNULL(client_id, 0), name);
CREATE INDEX groups_parent ON groups (parent_id);
CREATE INDEX groups_client ON groups (client_id);
CREATE INDEX group_memberships_entity ON group_memberships (entity_type, entity_id);
CREATE INDEX group_relationships_group_1 ON group_relationships (group_id_1);
CREATE INDEX group_relationships_group_2 ON group_relationships (group_id_2);

-- The clients a workflow execution belongs to: a JSON list of client ids, those of the
-- caller who started it (its sequences ran among their phones only); NULL: a super user's
-- (every phone). Only callers reaching every one of them see the execution.
ALTER TABLE workflow_executions ADD COLUMN client_ids TEXT;
