-- Controller users (`iotctl user`): operators (admin) and applications (app). The password is
-- kept only as an Argon2id PHC string. Written in the SQL subset SQLite and PostgreSQL share.
CREATE TABLE users (
    name VARCHAR(64) PRIMARY KEY NOT NULL,
    role VARCHAR(16) NOT NULL,
    password_hash TEXT NOT NULL,
    created_time DOUBLE PRECISION NOT NULL
);
