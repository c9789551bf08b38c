-- v4: groups (spec 15.5): definitions, memberships, relationships (sequences.groups).

CREATE TABLE groups (
    group_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    type TEXT NOT NULL CHECK (type IN ('system', 'custom', 'smart')),
    member_kind TEXT NOT NULL CHECK (member_kind IN ('account', 'phone')),
    filter TEXT,                       -- smart groups: 'filter.accounts where status=active'
    parent_id INTEGER,
    client_id INTEGER,
    created_by TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (parent_id) REFERENCES groups(group_id),
    FOREIGN KEY (client_id) REFERENCES clients(client_id)
);
CREATE TABLE group_memberships (
    membership_id INTEGER PRIMARY KEY,
    group_id INTEGER NOT NULL,
    entity_type TEXT NOT NULL CHECK (entity_type IN ('account', 'phone')),
    entity_id TEXT NOT NULL,           -- serial, or platform.account_number@serial
    position INTEGER NOT NULL,
    added_by TEXT,
    added_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (group_id) REFERENCES groups(group_id) ON DELETE CASCADE,
    UNIQUE (group_id, entity_id)
);
CREATE TABLE group_relationships (
    relationship_id INTEGER PRIMARY KEY,
    relationship_type TEXT NOT NULL CHECK (relationship_type IN
                                           ('exclusive', 'requires', 'excludes')),
    group_id_1 INTEGER NOT NULL,
    group_id_2 INTEGER,                -- NULL for 'exclusive': one row per group of the set
    parameters TEXT,                   -- JSON; 'exclusive': {"set": "account_status"}
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (group_id_1) REFERENCES groups(group_id) ON DELETE CASCADE,
    FOREIGN KEY (group_id_2) REFERENCES groups(group_id) ON DELETE CASCADE
);
CREATE INDEX group_memberships_entity ON group_memberships (entity_type, entity_id);
