-- v14 (PostgreSQL): JSON columns as JSONB, and row-level security on every client-owned
-- table, so that a read made for a caller reaching only some clients returns nothing of
-- another client's even when its query forgot the filter (spec 16.1, issue 18.2).
--
-- Every transaction of the coordinator says whose rows it may touch in the setting
-- phonefarm.clients: '*' (the farm: super users, the coordinator's own work; the session
-- default of its connections) or the caller's client ids, comma-separated, set with
-- SET LOCAL (actors/store/pg.py). Unset or empty: no client at all, so another program
-- connecting as the farm's role sees no client's rows unless it says '*'
-- (PGOPTIONS='-c phonefarm.clients=*', as `farm backup` runs pg_dump).
-- The policies are FORCEd: the farm's role owns the tables and would otherwise bypass them.
-- Rows without a client (the farm's shared sequence and workflow library, shared content)
-- are visible to every caller where the scoped views show them too; an unassigned phone or
-- profile only to the farm. Identity tables (organizations, users, tokens) and farm-wide
-- ones (agents, node keys, the scheduler's rows, the registry) have no client.

-- The event store's table (actors/store/event_store.py, which on PostgreSQL runs these
-- migrations when it opens first) lives in this database.
CREATE TABLE IF NOT EXISTS node_events (
    node TEXT NOT NULL,
    seq BIGINT NOT NULL,
    event TEXT NOT NULL,
    serial TEXT,
    data BYTEA NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (node, seq)
);
CREATE INDEX IF NOT EXISTS node_events_serial ON node_events (serial, received_at);

ALTER TABLE audit_log ALTER COLUMN before_state TYPE JSONB USING before_state::jsonb;
ALTER TABLE audit_log ALTER COLUMN after_state TYPE JSONB USING after_state::jsonb;
ALTER TABLE schedule_events ALTER COLUMN detail TYPE JSONB USING detail::jsonb;
ALTER TABLE screen_proposals ALTER COLUMN proposal TYPE JSONB USING proposal::jsonb;
ALTER TABLE group_relationships ALTER COLUMN parameters TYPE JSONB USING parameters::jsonb;
ALTER TABLE workflow_sequences ALTER COLUMN conditional_execution TYPE JSONB
    USING conditional_execution::jsonb;
ALTER TABLE workflow_sequences ALTER COLUMN retry_policy TYPE JSONB USING retry_policy::jsonb;
ALTER TABLE workflow_executions ALTER COLUMN client_ids TYPE JSONB USING client_ids::jsonb;

-- Each function keeps the search_path it was created with: pg_dump and pg_restore run with
-- an empty one, and the tables and functions named in a body are looked up when it runs.
CREATE FUNCTION phonefarm_all() RETURNS BOOLEAN LANGUAGE sql STABLE
    SET search_path FROM CURRENT AS $$
    SELECT current_setting('phonefarm.clients', true) = '*'
$$;

CREATE FUNCTION phonefarm_sees(client BIGINT) RETURNS BOOLEAN LANGUAGE sql STABLE
    SET search_path FROM CURRENT AS $$
    SELECT phonefarm_all() OR COALESCE(client = ANY (string_to_array(
        NULLIF(current_setting('phonefarm.clients', true), ''), ',')::BIGINT[]), false)
$$;

-- The client of a phone, by id or serial (NULL: unassigned or unknown).
CREATE FUNCTION phonefarm_phone_client(phone BIGINT, serial TEXT) RETURNS BIGINT
    LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT client_id FROM phones WHERE phone_id = phone OR serial_number = serial LIMIT 1
$$;

ALTER TABLE clients ENABLE ROW LEVEL SECURITY;
ALTER TABLE clients FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON clients USING (phonefarm_sees(client_id));

ALTER TABLE phones ENABLE ROW LEVEL SECURITY;
ALTER TABLE phones FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON phones USING (phonefarm_sees(client_id));

ALTER TABLE profiles ENABLE ROW LEVEL SECURITY;
ALTER TABLE profiles FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON profiles USING (phonefarm_sees(client_id));

-- An account is its profile's client's, else its phone's (as FarmDB.owner_of).
ALTER TABLE accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE accounts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON accounts USING (phonefarm_all() OR phonefarm_sees(COALESCE(
    (SELECT p.client_id FROM profiles p WHERE p.profile_id = accounts.profile_id),
    phonefarm_phone_client(accounts.phone_id, NULL))));

ALTER TABLE executions ENABLE ROW LEVEL SECURITY;
ALTER TABLE executions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON executions USING (phonefarm_all() OR phonefarm_sees(
    phonefarm_phone_client(executions.phone_id, executions.serial)));

ALTER TABLE execution_steps ENABLE ROW LEVEL SECURITY;
ALTER TABLE execution_steps FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON execution_steps USING (phonefarm_all() OR EXISTS (
    SELECT 1 FROM executions e WHERE e.execution_id = execution_steps.execution_id));

ALTER TABLE recovery_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE recovery_attempts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON recovery_attempts USING (phonefarm_all() OR phonefarm_sees(
    phonefarm_phone_client(NULL, recovery_attempts.serial)));

ALTER TABLE schedule_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE schedule_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON schedule_events USING (phonefarm_all() OR phonefarm_sees(
    phonefarm_phone_client(NULL, schedule_events.serial)));

-- A workflow execution belongs to the clients of the caller who started it: visible to a
-- caller reaching every one of them (actors/access/scope.py owned_by); a super user's to
-- the farm only.
ALTER TABLE workflow_executions ENABLE ROW LEVEL SECURITY;
ALTER TABLE workflow_executions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON workflow_executions USING (phonefarm_all() OR (
    jsonb_typeof(client_ids) = 'array' AND jsonb_array_length(client_ids) > 0
    AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements_text(client_ids) AS owner(id)
                    WHERE NOT phonefarm_sees(owner.id::BIGINT))));

ALTER TABLE sequence_executions ENABLE ROW LEVEL SECURITY;
ALTER TABLE sequence_executions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON sequence_executions USING (phonefarm_all() OR phonefarm_sees(
    phonefarm_phone_client(sequence_executions.phone_id, NULL)));

ALTER TABLE groups ENABLE ROW LEVEL SECURITY;
ALTER TABLE groups FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON groups USING (phonefarm_sees(client_id));

ALTER TABLE group_memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE group_memberships FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON group_memberships USING (phonefarm_all() OR EXISTS (
    SELECT 1 FROM groups g WHERE g.group_id = group_memberships.group_id));

ALTER TABLE group_relationships ENABLE ROW LEVEL SECURITY;
ALTER TABLE group_relationships FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON group_relationships USING (phonefarm_all() OR EXISTS (
    SELECT 1 FROM groups g WHERE g.group_id = group_relationships.group_id_1));

ALTER TABLE active_accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE active_accounts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON active_accounts USING (phonefarm_all() OR phonefarm_sees(
    phonefarm_phone_client(active_accounts.phone_id, NULL)));

ALTER TABLE active_apps ENABLE ROW LEVEL SECURITY;
ALTER TABLE active_apps FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON active_apps USING (phonefarm_all() OR phonefarm_sees(
    phonefarm_phone_client(active_apps.phone_id, NULL)));

ALTER TABLE phone_apps ENABLE ROW LEVEL SECURITY;
ALTER TABLE phone_apps FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON phone_apps USING (phonefarm_all() OR phonefarm_sees(
    phonefarm_phone_client(phone_apps.phone_id, NULL)));

ALTER TABLE content_posts ENABLE ROW LEVEL SECURITY;
ALTER TABLE content_posts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON content_posts USING (phonefarm_all() OR EXISTS (
    SELECT 1 FROM accounts a WHERE a.account_id = content_posts.account_id));

ALTER TABLE conversations ENABLE ROW LEVEL SECURITY;
ALTER TABLE conversations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON conversations USING (phonefarm_all() OR EXISTS (
    SELECT 1 FROM accounts a WHERE a.account_id = conversations.account_id));

ALTER TABLE link_in_bio ENABLE ROW LEVEL SECURITY;
ALTER TABLE link_in_bio FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON link_in_bio USING (phonefarm_all() OR EXISTS (
    SELECT 1 FROM accounts a WHERE a.account_id = link_in_bio.account_id));

ALTER TABLE client_daily_metrics ENABLE ROW LEVEL SECURITY;
ALTER TABLE client_daily_metrics FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON client_daily_metrics USING (phonefarm_sees(client_id));

ALTER TABLE tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE tasks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON tasks USING (client_id IS NULL OR phonefarm_sees(client_id));

ALTER TABLE sequence_definitions ENABLE ROW LEVEL SECURITY;
ALTER TABLE sequence_definitions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON sequence_definitions USING (client_id IS NULL OR phonefarm_sees(client_id));

ALTER TABLE workflow_definitions ENABLE ROW LEVEL SECURITY;
ALTER TABLE workflow_definitions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON workflow_definitions USING (client_id IS NULL OR phonefarm_sees(client_id));

ALTER TABLE custom_variables ENABLE ROW LEVEL SECURITY;
ALTER TABLE custom_variables FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON custom_variables USING (client_id IS NULL OR phonefarm_sees(client_id));

ALTER TABLE hashtag_sets ENABLE ROW LEVEL SECURITY;
ALTER TABLE hashtag_sets FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON hashtag_sets USING (client_id IS NULL OR phonefarm_sees(client_id));

ALTER TABLE caption_templates ENABLE ROW LEVEL SECURITY;
ALTER TABLE caption_templates FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON caption_templates USING (client_id IS NULL OR phonefarm_sees(client_id));

-- An AI key of a client, of an organization (client NULL: visible with one of its
-- clients), or the farm's (neither).
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON api_keys USING (phonefarm_sees(client_id) OR (client_id IS NULL AND (
    organization_id IS NULL OR organization_id IN (SELECT c.organization_id FROM clients c))));

ALTER TABLE node_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE node_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON node_events USING (phonefarm_all() OR phonefarm_sees(
    phonefarm_phone_client(NULL, node_events.serial)));
