-- v22: coordinator content data (issue 21; actors/coordinator/content_data/): what the
-- phones read off the screen (node events metric_recorded, post_recorded, health_signal)
-- and the daily rollups' missing columns. Every row an event makes carries the event's
-- key (event_key: '<event>:<execution_id>:<seq>'), UNIQUE, so a replayed event is a no-op.
-- execution_id references outlive an execution's record (kept 1 year): ON DELETE SET NULL.

-- content_posts (v5): a post_recorded event's row. status 'active' (posted) or 'failed'.
ALTER TABLE content_posts ADD COLUMN execution_id INTEGER
    REFERENCES executions(execution_id) ON DELETE SET NULL;
ALTER TABLE content_posts ADD COLUMN app TEXT;
ALTER TABLE content_posts ADD COLUMN media_id TEXT;
ALTER TABLE content_posts ADD COLUMN reason TEXT;
ALTER TABLE content_posts ADD COLUMN event_key TEXT;
CREATE UNIQUE INDEX content_posts_event ON content_posts (event_key);
CREATE INDEX content_posts_execution ON content_posts (execution_id);

-- An account's counts (followers, following, posts) as an execution read them.
CREATE TABLE account_metric_samples (
    sample_id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(account_id),
    metric TEXT NOT NULL,
    value INTEGER NOT NULL,
    execution_id INTEGER REFERENCES executions(execution_id) ON DELETE SET NULL,
    phone_id INTEGER,
    recorded_at REAL NOT NULL,
    event_key TEXT NOT NULL UNIQUE
);
CREATE INDEX account_metric_samples_account ON account_metric_samples
    (account_id, metric, recorded_at);
CREATE INDEX account_metric_samples_execution ON account_metric_samples (execution_id);

-- A post's counts (views, likes, comments, shares, saves) as an execution read them; the
-- day's post_metrics row holds the day's latest of each.
CREATE TABLE post_metric_samples (
    sample_id INTEGER PRIMARY KEY,
    post_id INTEGER NOT NULL REFERENCES content_posts(post_id),
    metric TEXT NOT NULL,
    value INTEGER NOT NULL,
    execution_id INTEGER REFERENCES executions(execution_id) ON DELETE SET NULL,
    recorded_at REAL NOT NULL,
    event_key TEXT NOT NULL UNIQUE
);
CREATE INDEX post_metric_samples_post ON post_metric_samples (post_id, metric, recorded_at);
CREATE INDEX post_metric_samples_execution ON post_metric_samples (execution_id);
CREATE INDEX post_metrics_post ON post_metrics (post_id);

-- What happened to an account that bears on its health: relogin (a login screen met
-- mid-run), challenge (a verification screen: the execution stopped there), post_failed.
CREATE TABLE account_health_events (
    event_id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(account_id),
    kind TEXT NOT NULL,
    screen TEXT,
    execution_id INTEGER REFERENCES executions(execution_id) ON DELETE SET NULL,
    at REAL NOT NULL,
    event_key TEXT NOT NULL UNIQUE
);
CREATE INDEX account_health_events_account ON account_health_events (account_id, at);
CREATE INDEX account_health_events_execution ON account_health_events (execution_id);

-- The daily rollups (v5) gain the engagement rate, (likes + comments) / views, and the
-- platform rows the follower growth the client rows have.
ALTER TABLE client_daily_metrics ADD COLUMN engagement_rate REAL;
ALTER TABLE platform_daily_metrics ADD COLUMN follower_growth INTEGER;
ALTER TABLE platform_daily_metrics ADD COLUMN engagement_rate REAL;
CREATE INDEX client_daily_metrics_client ON client_daily_metrics (client_id);
