-- v22 (PostgreSQL): coordinator content data, as v22.sql (see there) with native types,
-- and the new client-owned tables under FORCEd row-level security like v14's content_posts:
-- a caller sees an account's samples and health events when it sees the account, a post's
-- samples when it sees the post.

-- content_posts (v5): a post_recorded event's row. status 'active' (posted) or 'failed'.
ALTER TABLE content_posts ADD COLUMN execution_id BIGINT
    REFERENCES executions(execution_id) ON DELETE SET NULL;
ALTER TABLE content_posts ADD COLUMN app TEXT;
ALTER TABLE content_posts ADD COLUMN media_id TEXT;
ALTER TABLE content_posts ADD COLUMN reason TEXT;
ALTER TABLE content_posts ADD COLUMN event_key TEXT;
CREATE UNIQUE INDEX content_posts_event ON content_posts (event_key);
CREATE INDEX content_posts_execution ON content_posts (execution_id);

-- An account's counts (followers, following, posts) as an execution read them.
CREATE TABLE account_metric_samples (
    sample_id BIGSERIAL PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES accounts(account_id),
    metric TEXT NOT NULL,
    value BIGINT NOT NULL,
    execution_id BIGINT REFERENCES executions(execution_id) ON DELETE SET NULL,
    phone_id BIGINT,
    recorded_at DOUBLE PRECISION NOT NULL,
    event_key TEXT NOT NULL UNIQUE
);
CREATE INDEX account_metric_samples_account ON account_metric_samples
    (account_id, metric, recorded_at);
CREATE INDEX account_metric_samples_execution ON account_metric_samples (execution_id);

-- A post's counts (views, likes, comments, shares, saves) as an execution read them; the
-- day's post_metrics row holds the day's latest of each.
CREATE TABLE post_metric_samples (
    sample_id BIGSERIAL PRIMARY KEY,
    post_id BIGINT NOT NULL REFERENCES content_posts(post_id),
    metric TEXT NOT NULL,
    value BIGINT NOT NULL,
    execution_id BIGINT REFERENCES executions(execution_id) ON DELETE SET NULL,
    recorded_at DOUBLE PRECISION NOT NULL,
    event_key TEXT NOT NULL UNIQUE
);
CREATE INDEX post_metric_samples_post ON post_metric_samples (post_id, metric, recorded_at);
CREATE INDEX post_metric_samples_execution ON post_metric_samples (execution_id);
CREATE INDEX post_metrics_post ON post_metrics (post_id);

-- What happened to an account that bears on its health: relogin (a login screen met
-- mid-run), challenge (a verification screen: the execution stopped there), post_failed.
CREATE TABLE account_health_events (
    event_id BIGSERIAL PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES accounts(account_id),
    kind TEXT NOT NULL,
    screen TEXT,
    execution_id BIGINT REFERENCES executions(execution_id) ON DELETE SET NULL,
    at DOUBLE PRECISION NOT NULL,
    event_key TEXT NOT NULL UNIQUE
);
CREATE INDEX account_health_events_account ON account_health_events (account_id, at);
CREATE INDEX account_health_events_execution ON account_health_events (execution_id);

-- The daily rollups (v5) gain the engagement rate, (likes + comments) / views, and the
-- platform rows the follower growth the client rows have.
ALTER TABLE client_daily_metrics ADD COLUMN engagement_rate DOUBLE PRECISION;
ALTER TABLE platform_daily_metrics ADD COLUMN follower_growth BIGINT;
ALTER TABLE platform_daily_metrics ADD COLUMN engagement_rate DOUBLE PRECISION;
CREATE INDEX client_daily_metrics_client ON client_daily_metrics (client_id);

ALTER TABLE account_metric_samples ENABLE ROW LEVEL SECURITY;
ALTER TABLE account_metric_samples FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON account_metric_samples USING (phonefarm_all() OR EXISTS (
    SELECT 1 FROM accounts a WHERE a.account_id = account_metric_samples.account_id));

ALTER TABLE post_metric_samples ENABLE ROW LEVEL SECURITY;
ALTER TABLE post_metric_samples FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON post_metric_samples USING (phonefarm_all() OR EXISTS (
    SELECT 1 FROM content_posts p WHERE p.post_id = post_metric_samples.post_id));

ALTER TABLE account_health_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE account_health_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON account_health_events USING (phonefarm_all() OR EXISTS (
    SELECT 1 FROM accounts a WHERE a.account_id = account_health_events.account_id));

-- The events received just before the newest one, replayed at start (EventStore.last_before_stop).
CREATE INDEX IF NOT EXISTS node_events_received ON node_events (received_at);
