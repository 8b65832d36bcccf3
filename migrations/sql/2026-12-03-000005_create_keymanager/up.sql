-- The keymanager (docs/keymanager.md). `km_store` holds one document, the key store as JSON:
-- the Argon2id salt and parameters, and nonces with ciphertexts (never a value, a client
-- secret or a password). `km_audit` records every key request and every admin action: time,
-- action, client, key name, result, the MQTT client id it came from; never a value.
-- Written in the SQL subset SQLite and PostgreSQL share.
CREATE TABLE km_store (
    name VARCHAR(16) PRIMARY KEY NOT NULL,
    doc TEXT NOT NULL,
    updated_time DOUBLE PRECISION NOT NULL
);
CREATE TABLE km_audit (
    id VARCHAR(32) PRIMARY KEY NOT NULL,
    time DOUBLE PRECISION NOT NULL,
    action VARCHAR(16) NOT NULL,
    client VARCHAR(64) NOT NULL,
    key_name VARCHAR(64) NOT NULL,
    result VARCHAR(16) NOT NULL,
    mqtt_client VARCHAR(128) NOT NULL
);
CREATE INDEX km_audit_time ON km_audit (time);
