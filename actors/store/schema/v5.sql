-- v5: the rest of the spec's tables (7.5.3 task_dependencies/task_targets, 7.5.4-7.5.11,
-- 12.2 definitions, 16.4 api_keys) and the audit trail (16.3.1); see the module docstring
-- for where they differ from the spec. Indexes on every foreign key left unindexed.

CREATE TABLE task_dependencies (
    dependency_id INTEGER PRIMARY KEY,
    task_id INTEGER,
    depends_on_task_id INTEGER,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (task_id) REFERENCES tasks(task_id),
    FOREIGN KEY (depends_on_task_id) REFERENCES tasks(task_id)
);
CREATE INDEX task_dependencies_task ON task_dependencies (task_id);
CREATE INDEX task_dependencies_depends_on ON task_dependencies (depends_on_task_id);

CREATE TABLE task_targets (
    target_id INTEGER PRIMARY KEY,
    task_id INTEGER,
    target_type TEXT,
    target_id_value INTEGER,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (task_id) REFERENCES tasks(task_id)
);
CREATE INDEX task_targets_task ON task_targets (task_id);
CREATE INDEX task_targets_target ON task_targets (target_type, target_id_value);

CREATE INDEX tasks_created_by ON tasks (created_by);
CREATE INDEX groups_parent ON groups (parent_id);
CREATE INDEX groups_client ON groups (client_id);
CREATE INDEX group_relationships_group_1 ON group_relationships (group_id_1);
CREATE INDEX group_relationships_group_2 ON group_relationships (group_id_2);

CREATE TABLE content_posts (
    post_id INTEGER PRIMARY KEY,
    account_id INTEGER,
    platform TEXT,
    platform_post_id TEXT,
    post_type TEXT,
    caption TEXT,
    hashtags TEXT,
    link_in_bio_active BOOLEAN,
    post_url TEXT,
    media_path TEXT,
    posted_at TIMESTAMP,
    status TEXT DEFAULT 'active',
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (account_id) REFERENCES accounts(account_id)
);
CREATE INDEX content_posts_account ON content_posts (account_id, posted_at);
CREATE INDEX content_posts_platform_post ON content_posts (platform, platform_post_id);

CREATE TABLE post_metrics (
    metric_id INTEGER PRIMARY KEY,
    post_id INTEGER,
    metric_date DATE,
    views INTEGER DEFAULT 0,
    likes INTEGER DEFAULT 0,
    comments INTEGER DEFAULT 0,
    shares INTEGER DEFAULT 0,
    saves INTEGER DEFAULT 0,
    link_clicks INTEGER DEFAULT 0,
    profile_visits INTEGER DEFAULT 0,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (post_id) REFERENCES content_posts(post_id),
    UNIQUE(post_id, metric_date)
);
CREATE INDEX post_metrics_date ON post_metrics (metric_date);

CREATE TABLE post_analytics_sources (
    source_id INTEGER PRIMARY KEY,
    post_id INTEGER,
    source_type TEXT,
    views INTEGER DEFAULT 0,
    metric_date DATE,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (post_id) REFERENCES content_posts(post_id),
    UNIQUE(post_id, source_type, metric_date)
);

CREATE TABLE content_analysis (
    analysis_id INTEGER PRIMARY KEY,
    post_id INTEGER,
    frame_timestamp REAL,
    frame_path TEXT,
    scene_type TEXT,
    objects TEXT,
    text_content TEXT,
    sentiment REAL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (post_id) REFERENCES content_posts(post_id)
);
CREATE INDEX content_analysis_post ON content_analysis (post_id, frame_timestamp);

CREATE TABLE content_tags (
    tag_id INTEGER PRIMARY KEY,
    post_id INTEGER,
    tag_type TEXT,
    tag_value TEXT,
    confidence REAL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (post_id) REFERENCES content_posts(post_id)
);
CREATE INDEX content_tags_post ON content_tags (post_id);
CREATE INDEX content_tags_value ON content_tags (tag_type, tag_value);

CREATE TABLE conversations (
    conversation_id INTEGER PRIMARY KEY,
    account_id INTEGER,
    platform TEXT,
    external_user_id TEXT,
    external_username TEXT,
    conversation_type TEXT,
    started_at TIMESTAMP,
    last_message_at TIMESTAMP,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (account_id) REFERENCES accounts(account_id),
    UNIQUE(account_id, platform, external_user_id, conversation_type)
);
CREATE INDEX conversations_last_message ON conversations (account_id, last_message_at);

CREATE TABLE messages (
    message_id INTEGER PRIMARY KEY,
    conversation_id INTEGER,
    post_id INTEGER NULL,
    sender_type TEXT,
    message_text TEXT,
    media_url TEXT,
    sent_at TIMESTAMP,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (conversation_id) REFERENCES conversations(conversation_id),
    FOREIGN KEY (post_id) REFERENCES content_posts(post_id)
);
CREATE INDEX messages_conversation ON messages (conversation_id, sent_at);
CREATE INDEX messages_post ON messages (post_id);

CREATE TABLE message_responses (
    response_id INTEGER PRIMARY KEY,
    message_id INTEGER,
    response_message_id INTEGER,
    response_template_id INTEGER,
    ai_generated BOOLEAN DEFAULT FALSE,
    ai_prompt TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (message_id) REFERENCES messages(message_id),
    FOREIGN KEY (response_message_id) REFERENCES messages(message_id)
);
CREATE INDEX message_responses_message ON message_responses (message_id);
CREATE INDEX message_responses_response ON message_responses (response_message_id);

CREATE TABLE link_in_bio (
    link_id INTEGER PRIMARY KEY,
    account_id INTEGER,
    url TEXT,
    title TEXT,
    active_from TIMESTAMP,
    active_to TIMESTAMP,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (account_id) REFERENCES accounts(account_id)
);
CREATE INDEX link_in_bio_account ON link_in_bio (account_id, active_from);

CREATE TABLE link_clicks (
    click_id INTEGER PRIMARY KEY,
    link_id INTEGER,
    click_date DATE,
    click_count INTEGER DEFAULT 0,
    source TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (link_id) REFERENCES link_in_bio(link_id),
    UNIQUE(link_id, click_date, source)
);

CREATE TABLE client_daily_metrics (
    metric_id INTEGER PRIMARY KEY,
    client_id INTEGER,
    metric_date DATE,
    platform TEXT,
    total_posts INTEGER,
    total_views INTEGER,
    total_likes INTEGER,
    total_comments INTEGER,
    total_link_clicks INTEGER,
    follower_growth INTEGER,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (client_id) REFERENCES clients(client_id),
    UNIQUE(client_id, metric_date, platform)
);

CREATE TABLE platform_daily_metrics (
    metric_id INTEGER PRIMARY KEY,
    metric_date DATE,
    platform TEXT,
    total_posts INTEGER,
    total_views INTEGER,
    total_likes INTEGER,
    total_comments INTEGER,
    total_link_clicks INTEGER,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    UNIQUE(metric_date, platform)
);

CREATE TABLE organizations (
    organization_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT DEFAULT 'active',
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX organizations_name ON organizations (name);

ALTER TABLE clients ADD COLUMN organization_id INTEGER
    REFERENCES organizations(organization_id);
CREATE INDEX clients_organization ON clients (organization_id);
CREATE INDEX clients_status ON clients (status);

ALTER TABLE users ADD COLUMN organization_id INTEGER
    REFERENCES organizations(organization_id);
ALTER TABLE users ADD COLUMN email TEXT;
ALTER TABLE users ADD COLUMN status TEXT DEFAULT 'active';
ALTER TABLE users ADD COLUMN updated_at TIMESTAMP;
CREATE INDEX users_organization ON users (organization_id);
CREATE INDEX users_email ON users (email);

CREATE TABLE user_client_access (
    access_id INTEGER PRIMARY KEY,
    user_id INTEGER,
    client_id INTEGER,
    access_level TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (user_id) REFERENCES users(user_id),
    FOREIGN KEY (client_id) REFERENCES clients(client_id),
    UNIQUE(user_id, client_id)
);
CREATE INDEX user_client_access_client ON user_client_access (client_id);

CREATE TABLE app_registry (
    app_id INTEGER PRIMARY KEY,
    app_name TEXT NOT NULL,
    package_name TEXT NOT NULL,
    description TEXT,
    default_version TEXT,
    status TEXT DEFAULT 'active',
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    UNIQUE(app_name),
    UNIQUE(package_name)
);

CREATE TABLE apk_files (
    apk_id INTEGER PRIMARY KEY,
    app_id INTEGER,
    version TEXT NOT NULL,
    file_path TEXT NOT NULL,
    file_size INTEGER,
    is_split BOOLEAN DEFAULT FALSE,
    split_info TEXT,
    upload_date TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    status TEXT DEFAULT 'active',
    FOREIGN KEY (app_id) REFERENCES app_registry(app_id)
);
CREATE INDEX apk_files_app ON apk_files (app_id, version);

CREATE TABLE phone_apps (
    installation_id INTEGER PRIMARY KEY,
    phone_id INTEGER,
    app_id INTEGER,
    installed_version TEXT,
    installation_date TIMESTAMP,
    last_used_date TIMESTAMP,
    status TEXT DEFAULT 'installed',
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (phone_id) REFERENCES phones(phone_id),
    FOREIGN KEY (app_id) REFERENCES app_registry(app_id),
    UNIQUE(phone_id, app_id)
);
CREATE INDEX phone_apps_app ON phone_apps (app_id);

CREATE TABLE active_apps (
    active_id INTEGER PRIMARY KEY,
    phone_id INTEGER,
    app_id INTEGER,
    active_since TIMESTAMP,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (phone_id) REFERENCES phones(phone_id),
    FOREIGN KEY (app_id) REFERENCES app_registry(app_id),
    UNIQUE(phone_id)
);
CREATE INDEX active_apps_app ON active_apps (app_id);

CREATE TABLE active_accounts (
    active_account_id INTEGER PRIMARY KEY,
    phone_id INTEGER,
    app_id INTEGER,
    account_id INTEGER,
    active_since TIMESTAMP,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (phone_id) REFERENCES phones(phone_id),
    FOREIGN KEY (app_id) REFERENCES app_registry(app_id),
    FOREIGN KEY (account_id) REFERENCES accounts(account_id),
    UNIQUE(phone_id, app_id)
);
CREATE INDEX active_accounts_app ON active_accounts (app_id);
CREATE INDEX active_accounts_account ON active_accounts (account_id);

CREATE TABLE task_definitions (
    task_def_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT,
    action_type TEXT NOT NULL,
    default_parameters TEXT,
    status TEXT DEFAULT 'active',
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX task_definitions_name ON task_definitions (name);

CREATE TABLE sequence_definitions (
    sequence_def_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT,
    json_path TEXT,
    recovery_prompt TEXT,
    version INTEGER DEFAULT 1,
    client_id INTEGER,
    created_by INTEGER,
    status TEXT DEFAULT 'active',
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (client_id) REFERENCES clients(client_id),
    FOREIGN KEY (created_by) REFERENCES users(user_id)
);
CREATE INDEX sequence_definitions_client ON sequence_definitions (client_id, status);
CREATE INDEX sequence_definitions_created_by ON sequence_definitions (created_by);
CREATE INDEX sequence_definitions_name ON sequence_definitions (name);

CREATE TABLE workflow_definitions (
    workflow_def_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT,
    client_id INTEGER,
    created_by INTEGER,
    is_template BOOLEAN DEFAULT FALSE,
    status TEXT DEFAULT 'active',
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (client_id) REFERENCES clients(client_id),
    FOREIGN KEY (created_by) REFERENCES users(user_id)
);
CREATE INDEX workflow_definitions_client ON workflow_definitions (client_id, status);
CREATE INDEX workflow_definitions_created_by ON workflow_definitions (created_by);
CREATE INDEX workflow_definitions_name ON workflow_definitions (name);

CREATE TABLE workflow_sequences (
    workflow_sequence_id INTEGER PRIMARY KEY,
    workflow_def_id INTEGER,
    sequence_def_id INTEGER,
    execution_order INTEGER,
    conditional_execution TEXT,
    retry_policy TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (workflow_def_id) REFERENCES workflow_definitions(workflow_def_id),
    FOREIGN KEY (sequence_def_id) REFERENCES sequence_definitions(sequence_def_id)
);
CREATE INDEX workflow_sequences_workflow ON workflow_sequences
    (workflow_def_id, execution_order);
CREATE INDEX workflow_sequences_sequence ON workflow_sequences (sequence_def_id);

CREATE TABLE scheduled_workflows (
    scheduled_workflow_id INTEGER PRIMARY KEY,
    workflow_def_id INTEGER,
    schedule_type TEXT,
    scheduled_time TIMESTAMP,
    window_start TIMESTAMP,
    window_end TIMESTAMP,
    recurrence_pattern TEXT,
    target_selector TEXT,
    status TEXT,
    created_by INTEGER,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (workflow_def_id) REFERENCES workflow_definitions(workflow_def_id),
    FOREIGN KEY (created_by) REFERENCES users(user_id)
);
CREATE INDEX scheduled_workflows_workflow ON scheduled_workflows (workflow_def_id);
CREATE INDEX scheduled_workflows_status ON scheduled_workflows (status, scheduled_time);
CREATE INDEX scheduled_workflows_created_by ON scheduled_workflows (created_by);

CREATE TABLE workflow_executions (
    workflow_execution_id INTEGER PRIMARY KEY,
    scheduled_workflow_id INTEGER,
    workflow_def_id INTEGER,
    start_time TIMESTAMP,
    end_time TIMESTAMP,
    status TEXT,
    error_message TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (scheduled_workflow_id)
        REFERENCES scheduled_workflows(scheduled_workflow_id),
    FOREIGN KEY (workflow_def_id) REFERENCES workflow_definitions(workflow_def_id)
);
CREATE INDEX workflow_executions_scheduled ON workflow_executions (scheduled_workflow_id);
CREATE INDEX workflow_executions_workflow ON workflow_executions (workflow_def_id);
CREATE INDEX workflow_executions_status ON workflow_executions (status);

CREATE TABLE sequence_executions (
    sequence_execution_id INTEGER PRIMARY KEY,
    workflow_execution_id INTEGER,
    sequence_def_id INTEGER,
    phone_id INTEGER,
    account_id INTEGER,
    execution_order INTEGER,
    start_time TIMESTAMP,
    end_time TIMESTAMP,
    status TEXT,
    error_message TEXT,
    recovery_attempts INTEGER DEFAULT 0,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (workflow_execution_id)
        REFERENCES workflow_executions(workflow_execution_id),
    FOREIGN KEY (sequence_def_id) REFERENCES sequence_definitions(sequence_def_id),
    FOREIGN KEY (phone_id) REFERENCES phones(phone_id),
    FOREIGN KEY (account_id) REFERENCES accounts(account_id)
);
CREATE INDEX sequence_executions_workflow ON sequence_executions
    (workflow_execution_id, execution_order);
CREATE INDEX sequence_executions_sequence ON sequence_executions (sequence_def_id);
CREATE INDEX sequence_executions_phone ON sequence_executions (phone_id, status);
CREATE INDEX sequence_executions_account ON sequence_executions (account_id);

CREATE TABLE task_executions (
    task_execution_id INTEGER PRIMARY KEY,
    sequence_execution_id INTEGER,
    task_def_id INTEGER,
    execution_order INTEGER,
    start_time TIMESTAMP,
    end_time TIMESTAMP,
    status TEXT,
    parameters TEXT,
    result TEXT,
    screenshot_before TEXT,
    screenshot_after TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (sequence_execution_id)
        REFERENCES sequence_executions(sequence_execution_id),
    FOREIGN KEY (task_def_id) REFERENCES task_definitions(task_def_id)
);
CREATE INDEX task_executions_sequence ON task_executions
    (sequence_execution_id, execution_order);
CREATE INDEX task_executions_task ON task_executions (task_def_id);

CREATE TABLE recovery_attempts (
    recovery_id INTEGER PRIMARY KEY,
    sequence_execution_id INTEGER,
    task_execution_id INTEGER,
    attempt_number INTEGER,
    start_time TIMESTAMP,
    end_time TIMESTAMP,
    status TEXT,
    recovery_prompt TEXT,
    ai_response TEXT,
    actions_taken TEXT,
    screenshot_before TEXT,
    screenshot_after TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (sequence_execution_id)
        REFERENCES sequence_executions(sequence_execution_id),
    FOREIGN KEY (task_execution_id) REFERENCES task_executions(task_execution_id)
);
CREATE INDEX recovery_attempts_sequence ON recovery_attempts
    (sequence_execution_id, attempt_number);
CREATE INDEX recovery_attempts_task ON recovery_attempts (task_execution_id);

CREATE TABLE api_keys (
    key_id INTEGER PRIMARY KEY,
    organization_id INTEGER,
    client_id INTEGER NULL,
    service_name TEXT NOT NULL,
    key_identifier TEXT NOT NULL,
    encrypted_key TEXT NOT NULL,
    is_active BOOLEAN DEFAULT TRUE,
    status TEXT DEFAULT 'active',
    created_by INTEGER,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    expires_at TIMESTAMP NULL,
    last_used_at TIMESTAMP NULL,
    FOREIGN KEY (organization_id) REFERENCES organizations(organization_id),
    FOREIGN KEY (client_id) REFERENCES clients(client_id),
    FOREIGN KEY (created_by) REFERENCES users(user_id)
);
CREATE INDEX api_keys_organization ON api_keys (organization_id, service_name);
CREATE INDEX api_keys_client ON api_keys (client_id, service_name);
CREATE INDEX api_keys_created_by ON api_keys (created_by);

CREATE TABLE audit_log (
    audit_id INTEGER PRIMARY KEY,
    at TIMESTAMP NOT NULL,
    actor TEXT,
    entity_type TEXT NOT NULL,
    entity_id TEXT,
    action TEXT NOT NULL CHECK (action IN ('create', 'update', 'delete')),
    before_state TEXT,
    after_state TEXT,
    reason TEXT
);
CREATE INDEX audit_log_entity ON audit_log (entity_type, entity_id, audit_id);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_actor ON audit_log (actor);
