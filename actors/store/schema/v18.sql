-- v18: alerts and notifications (issue 19.3; actors/coordinator/alerts/).
-- Times are Unix seconds (REAL): the engine and the outbox compare them every tick; the
-- API shows them as ISO 8601 UTC. JSON columns are text on both engines.
--
-- alert_rules: the rules of config/alerts.toml (source 'file', replaced at every start)
-- and of POST /api/alerts/rules (source 'api'). client_id NULL: a farm-wide rule (super
-- users only). params: the kind's fields (minutes, percent, ...); channels NULL = every
-- channel whose kinds and clients take the notice.
CREATE TABLE alert_rules (
    rule_id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    client_id INTEGER REFERENCES clients(client_id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    repeat_s REAL,
    channels TEXT,
    enabled INTEGER NOT NULL DEFAULT 1,
    silenced_until REAL,
    silenced_by TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);

-- alerts: one row per firing of a rule about one subject (a phone, a node, a sequence,
-- the farm, an execution); at most one firing row per (rule, subject).
CREATE TABLE alerts (
    alert_id INTEGER PRIMARY KEY AUTOINCREMENT,
    rule_id INTEGER NOT NULL REFERENCES alert_rules(rule_id) ON DELETE CASCADE,
    rule_name TEXT NOT NULL,
    client_id INTEGER REFERENCES clients(client_id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    state TEXT NOT NULL,
    since REAL NOT NULL,
    resolved_at REAL,
    last_notified_at REAL,
    notified INTEGER NOT NULL DEFAULT 0,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    links TEXT NOT NULL,
    acked_by TEXT,
    acked_at REAL
);
CREATE UNIQUE INDEX alerts_firing ON alerts (rule_id, subject) WHERE state = 'firing';
CREATE INDEX alerts_since ON alerts (since);

-- outbox: one row per notice and channel until it is delivered or expires; a coordinator
-- restart delivers what is left. key: the sender's dedupe key (NULL: none), so one notice
-- sent twice is one row per channel.
CREATE TABLE alert_outbox (
    outbox_id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    kind TEXT NOT NULL,
    notice_key TEXT,
    client_id INTEGER REFERENCES clients(client_id) ON DELETE CASCADE,
    notice TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    last_attempt_at REAL,
    delivered_at REAL,
    expires_at REAL NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (channel, kind, notice_key)
);
CREATE INDEX alert_outbox_due ON alert_outbox (delivered_at, next_attempt_at);

-- notifications: the console's own list (every notice lands here); read marks per user.
CREATE TABLE notifications (
    notification_id INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id INTEGER REFERENCES clients(client_id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    notice_key TEXT,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    links TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (kind, notice_key)
);
CREATE INDEX notifications_created ON notifications (created_at);

CREATE TABLE notification_reads (
    notification_id INTEGER NOT NULL REFERENCES notifications(notification_id)
        ON DELETE CASCADE,
    user_id INTEGER NOT NULL,
    read_at REAL NOT NULL,
    PRIMARY KEY (notification_id, user_id)
);

-- Every foreign key column leads an index (a client's rows are read and deleted by it).
CREATE INDEX alert_rules_client ON alert_rules (client_id);
CREATE INDEX alerts_client ON alerts (client_id);
CREATE INDEX alert_outbox_client ON alert_outbox (client_id);
CREATE INDEX notifications_client ON notifications (client_id);
