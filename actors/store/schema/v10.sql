-- v10: people log in (issue 17): bearer tokens stored hashed.

CREATE TABLE auth_tokens (
    token_id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(user_id),
    kind TEXT NOT NULL CHECK (kind IN ('session', 'api', 'login_link')),
    name TEXT,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT,
    last_used_at TEXT
);
CREATE INDEX auth_tokens_user ON auth_tokens (user_id);

