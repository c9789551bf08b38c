-- v1: core tables (7.5.1), content for variables (15.1), execution records (7.5.3).

CREATE TABLE clients (
    client_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT,
    contact_email TEXT,
    contact_discord TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE UNIQUE INDEX clients_name ON clients (name);

CREATE TABLE users (
    user_id INTEGER PRIMARY KEY,
    username TEXT UNIQUE NOT NULL,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    client_id INTEGER,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (client_id) REFERENCES clients(client_id)
);
CREATE INDEX users_client ON users (client_id);

CREATE TABLE agents (
    agent_id INTEGER PRIMARY KEY,
    name TEXT UNIQUE NOT NULL,
    address TEXT,
    status TEXT,
    last_seen TIMESTAMP,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE phones (
    phone_id INTEGER PRIMARY KEY,
    serial_number TEXT UNIQUE NOT NULL,
    phone_number TEXT,
    model TEXT,
    client_id INTEGER,
    agent_id INTEGER,
    status TEXT DEFAULT 'active',
    last_connected TIMESTAMP,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (client_id) REFERENCES clients(client_id),
    FOREIGN KEY (agent_id) REFERENCES agents(agent_id)
);
CREATE INDEX phones_client ON phones (client_id);
CREATE INDEX phones_agent ON phones (agent_id);

CREATE TABLE profiles (
    profile_id INTEGER PRIMARY KEY,
    first_name TEXT,
    last_name TEXT,
    birth_month INTEGER,
    birth_day INTEGER,
    birth_year INTEGER,
    gender TEXT,
    profile_password TEXT,
    interests TEXT,
    client_id INTEGER,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (client_id) REFERENCES clients(client_id)
);
CREATE INDEX profiles_client ON profiles (client_id);

CREATE TABLE accounts (
    account_id INTEGER PRIMARY KEY,
    platform TEXT NOT NULL,
    account_number TEXT NOT NULL,
    username TEXT,
    password TEXT,
    bio TEXT,
    profile_id INTEGER,
    phone_id INTEGER,
    status TEXT DEFAULT 'warming',
    warming_start_date TIMESTAMP,
    warming_phase INTEGER DEFAULT 1,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (profile_id) REFERENCES profiles(profile_id),
    FOREIGN KEY (phone_id) REFERENCES phones(phone_id),
    UNIQUE(platform, account_number, phone_id)
);
CREATE INDEX accounts_phone ON accounts (phone_id);
CREATE INDEX accounts_profile ON accounts (profile_id);

CREATE TABLE hashtag_sets (
    hashtag_set_id INTEGER PRIMARY KEY,
    name TEXT UNIQUE NOT NULL,
    client_id INTEGER,
    tags TEXT NOT NULL,
    FOREIGN KEY (client_id) REFERENCES clients(client_id)
);
CREATE INDEX hashtag_sets_client ON hashtag_sets (client_id);

CREATE TABLE caption_templates (
    caption_template_id INTEGER PRIMARY KEY,
    name TEXT UNIQUE NOT NULL,
    client_id INTEGER,
    template TEXT NOT NULL,
    FOREIGN KEY (client_id) REFERENCES clients(client_id)
);
CREATE INDEX caption_templates_client ON caption_templates (client_id);

CREATE TABLE media_files (
    media_id INTEGER PRIMARY KEY,
    folder TEXT NOT NULL,
    path TEXT NOT NULL,
    used_count INTEGER NOT NULL DEFAULT 0,
    last_used TIMESTAMP,
    UNIQUE(folder, path)
);
CREATE INDEX media_files_pick ON media_files (folder, used_count, path);

CREATE TABLE custom_variables (
    custom_variable_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    client_id INTEGER,
    FOREIGN KEY (client_id) REFERENCES clients(client_id)
);
-- client_id NULL is "every client"; IFNULL makes the pair unique with NULLs too.
CREATE UNIQUE INDEX custom_variables_name ON custom_variables (name, IFNULL(client_id, 0));
CREATE INDEX custom_variables_client ON custom_variables (client_id);

CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);

CREATE TABLE tasks (
    task_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT,
    sequence_file TEXT,
    schedule_type TEXT,
    scheduled_time TIMESTAMP,
    window_start TIMESTAMP,
    window_end TIMESTAMP,
    repetitions INTEGER DEFAULT 1,
    client_id INTEGER,
    created_by INTEGER,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (client_id) REFERENCES clients(client_id),
    FOREIGN KEY (created_by) REFERENCES users(user_id)
);
CREATE INDEX tasks_client ON tasks (client_id);

CREATE TABLE executions (
    execution_id INTEGER PRIMARY KEY,
    task_id INTEGER,
    phone_id INTEGER,
    account_id INTEGER,
    start_time TIMESTAMP,
    end_time TIMESTAMP,
    status TEXT,
    error_message TEXT,
    execution_key TEXT UNIQUE,
    run_id TEXT,
    serial TEXT,
    sequence TEXT,
    error_reason TEXT,
    current_step INTEGER,
    FOREIGN KEY (task_id) REFERENCES tasks(task_id),
    FOREIGN KEY (phone_id) REFERENCES phones(phone_id),
    FOREIGN KEY (account_id) REFERENCES accounts(account_id)
);
CREATE INDEX executions_run ON executions (run_id);
CREATE INDEX executions_serial ON executions (serial, start_time);
CREATE INDEX executions_task ON executions (task_id);
CREATE INDEX executions_phone ON executions (phone_id);
CREATE INDEX executions_account ON executions (account_id);

CREATE TABLE execution_steps (
    step_id INTEGER PRIMARY KEY,
    execution_id INTEGER,
    step_number INTEGER,
    action_type TEXT,
    screen_name TEXT,
    start_time TIMESTAMP,
    end_time TIMESTAMP,
    status TEXT,
    path TEXT,
    error TEXT,
    screenshot TEXT,
    FOREIGN KEY (execution_id) REFERENCES executions(execution_id)
);
CREATE INDEX execution_steps_execution ON execution_steps (execution_id, step_id);
