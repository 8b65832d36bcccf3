-- Functions, content-addressed by sha256(code).
CREATE TABLE functions (
    digest VARCHAR(64) PRIMARY KEY NOT NULL,
    code TEXT NOT NULL
);
-- Graphs ("network applications"): one JSON document each (functions added, links with
-- their settings, join function), written whole on every change.
CREATE TABLE graphs (
    gid TEXT PRIMARY KEY NOT NULL,
    doc TEXT NOT NULL
);
