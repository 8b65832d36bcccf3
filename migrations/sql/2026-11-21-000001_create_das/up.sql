-- Registered device applications. JSON columns hold the lists and profile exactly as sent.
-- Written in the SQL subset SQLite and PostgreSQL share.
CREATE TABLE das (
    id VARCHAR(36) PRIMARY KEY NOT NULL,
    rev VARCHAR(64) NOT NULL,
    name TEXT NOT NULL,
    register_time DOUBLE PRECISION NOT NULL,
    accept_protos TEXT NOT NULL,
    idf_list TEXT NOT NULL,
    odf_list TEXT NOT NULL,
    profile TEXT NOT NULL,
    username TEXT,
    password_hash TEXT
);
