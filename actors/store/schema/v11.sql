-- v11: nodes are principals too (issue 17.6): each node has its own key.
-- The coordinator needs the key itself to check a node's HMAC proof and to prove it back,
-- so it is stored sealed (Fernet under a key derived from the farm master key for the
-- purpose node_keys, actors.access.secrets_box), never in clear and never hashed.
-- key_last4 is what listings show. One row per node name: a revoked key keeps its row
-- (revoked_at set) until `farm nodes add` gives that node a new key in its place.
CREATE TABLE node_keys (
    node_key_id INTEGER PRIMARY KEY,
    node TEXT NOT NULL UNIQUE,
    encrypted_key TEXT NOT NULL,
    key_last4 TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT,
    last_seen_at TEXT
);
