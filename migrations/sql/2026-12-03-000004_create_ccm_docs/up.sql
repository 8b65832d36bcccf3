-- The configuration manager's data (docs/ccm.md): device features, device models, the function
-- library (each function with all its versions) and projects, one JSON document each, written
-- whole on every change. `kind` is `feature`, `model`, `function` or `project`; `name` is the
-- entity's name (a project's numeric id). Written in the SQL subset SQLite and PostgreSQL share.
CREATE TABLE ccm_docs (
    kind VARCHAR(16) NOT NULL,
    name VARCHAR(128) NOT NULL,
    doc TEXT NOT NULL,
    updated_time DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (kind, name)
);
