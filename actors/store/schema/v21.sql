-- v21: apps on the phones (issue 20.3; actors/coordinator/apps_store.py).
-- phone_packages: what each phone has installed, as its node last reported it
-- (apps_inventory events: at connect, after every install/uninstall, hourly); a report
-- replaces the phone's rows whole. Every package, system ones too.
CREATE TABLE phone_packages (
    serial TEXT NOT NULL,
    package TEXT NOT NULL,
    version_code INTEGER NOT NULL,
    version_name TEXT,
    reported_at TIMESTAMP NOT NULL,
    PRIMARY KEY (serial, package)
);
CREATE INDEX phone_packages_package ON phone_packages (package);
-- app_pins: the version of a package a client's phones, or a group's, should have.
-- target is 'client:<id>' or 'group:<book client id, 0 = shared book>:<name>'; client_id
-- is the client the pin belongs to (NULL: a pin of the shared group book, the farm's).
CREATE TABLE app_pins (
    pin_id INTEGER PRIMARY KEY,
    package TEXT NOT NULL,
    app TEXT NOT NULL,
    version TEXT NOT NULL,
    version_code INTEGER NOT NULL,
    target TEXT NOT NULL,
    client_id INTEGER,
    group_name TEXT,
    created_at TIMESTAMP NOT NULL,
    created_by TEXT,
    UNIQUE (package, target),
    FOREIGN KEY (client_id) REFERENCES clients(client_id)
);
-- app_install_phones: one row per phone of an install or uninstall (install_id shared by
-- the phones of one request, which each row repeats so a tenant's rows stand alone):
-- state pending -> sending -> installing -> ok | failed, with the node's reason.
CREATE TABLE app_install_phones (
    install_id TEXT NOT NULL,
    serial TEXT NOT NULL,
    client_id INTEGER,
    node TEXT,
    kind TEXT NOT NULL,
    app TEXT NOT NULL,
    package TEXT NOT NULL,
    version TEXT,
    version_code INTEGER,
    allow_downgrade BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMP NOT NULL,
    created_by TEXT,
    state TEXT NOT NULL,
    reason TEXT,
    splits TEXT,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (install_id, serial)
);
CREATE INDEX app_install_phones_created ON app_install_phones (created_at);

-- Every foreign key column leads an index (a client's rows are read and deleted by it).
CREATE INDEX app_pins_client ON app_pins (client_id);
