-- v18 (PostgreSQL): alerts and notifications, as v18.sql with native types, and the
-- client-owned tables under FORCEd row-level security like v14's: a caller reaching some
-- clients reads only their rules, alerts, outbox rows and notifications; farm-wide rows
-- (client_id NULL: node down, disk, ...) only the farm (super users, the coordinator).
CREATE TABLE alert_rules (
    rule_id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    client_id BIGINT REFERENCES clients(client_id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    repeat_s DOUBLE PRECISION,
    channels TEXT,
    enabled BIGINT NOT NULL DEFAULT 1,
    silenced_until DOUBLE PRECISION,
    silenced_by TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);

-- alerts: one row per firing of a rule about one subject (a phone, a node, a sequence,
-- the farm, an execution); at most one firing row per (rule, subject).
CREATE TABLE alerts (
    alert_id BIGSERIAL PRIMARY KEY,
    rule_id BIGINT NOT NULL REFERENCES alert_rules(rule_id) ON DELETE CASCADE,
    rule_name TEXT NOT NULL,
    client_id BIGINT REFERENCES clients(client_id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    state TEXT NOT NULL,
    since DOUBLE PRECISION NOT NULL,
    resolved_at DOUBLE PRECISION,
    last_notified_at DOUBLE PRECISION,
    notified BIGINT NOT NULL DEFAULT 0,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    links TEXT NOT NULL,
    acked_by TEXT,
    acked_at DOUBLE PRECISION
);
CREATE UNIQUE INDEX alerts_firing ON alerts (rule_id, subject) WHERE state = 'firing';
CREATE INDEX alerts_since ON alerts (since);

-- outbox: one row per notice and channel until it is delivered or expires; a coordinator
-- restart delivers what is left. key: the sender's dedupe key (NULL: none), so one notice
-- sent twice is one row per channel.
CREATE TABLE alert_outbox (
    outbox_id BIGSERIAL PRIMARY KEY,
    channel TEXT NOT NULL,
    kind TEXT NOT NULL,
    notice_key TEXT,
    client_id BIGINT REFERENCES clients(client_id) ON DELETE CASCADE,
    notice TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    last_error TEXT,
    last_attempt_at DOUBLE PRECISION,
    delivered_at DOUBLE PRECISION,
    expires_at DOUBLE PRECISION NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    UNIQUE (channel, kind, notice_key)
);
CREATE INDEX alert_outbox_due ON alert_outbox (delivered_at, next_attempt_at);

-- notifications: the console's own list (every notice lands here); read marks per user.
CREATE TABLE notifications (
    notification_id BIGSERIAL PRIMARY KEY,
    client_id BIGINT REFERENCES clients(client_id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    notice_key TEXT,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    links TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    UNIQUE (kind, notice_key)
);
CREATE INDEX notifications_created ON notifications (created_at);

CREATE TABLE notification_reads (
    notification_id BIGINT NOT NULL REFERENCES notifications(notification_id)
        ON DELETE CASCADE,
    user_id BIGINT NOT NULL,
    read_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (notification_id, user_id)
);


ALTER TABLE alert_rules ENABLE ROW LEVEL SECURITY;
ALTER TABLE alert_rules FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON alert_rules USING (phonefarm_sees(client_id));

ALTER TABLE alerts ENABLE ROW LEVEL SECURITY;
ALTER TABLE alerts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON alerts USING (phonefarm_sees(client_id));

ALTER TABLE alert_outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE alert_outbox FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON alert_outbox USING (phonefarm_sees(client_id));

ALTER TABLE notifications ENABLE ROW LEVEL SECURITY;
ALTER TABLE notifications FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON notifications USING (phonefarm_sees(client_id));

ALTER TABLE notification_reads ENABLE ROW LEVEL SECURITY;
ALTER TABLE notification_reads FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON notification_reads USING (phonefarm_all() OR EXISTS (
    SELECT 1 FROM notifications n WHERE n.notification_id = notification_reads.notification_id));

-- Every foreign key column leads an index (a client's rows are read and deleted by it).
CREATE INDEX alert_rules_client ON alert_rules (client_id);
CREATE INDEX alerts_client ON alerts (client_id);
CREATE INDEX alert_outbox_client ON alert_outbox (client_id);
CREATE INDEX notifications_client ON notifications (client_id);
