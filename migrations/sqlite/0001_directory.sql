-- The directory: users, their external numbers, phones, locations and API tokens.
-- Ids and timestamps are plain integers (unix milliseconds) so the same SQL runs on PostgreSQL.

CREATE TABLE users (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    extension           TEXT    NOT NULL,
    display_name        TEXT    NOT NULL,
    email               TEXT    NOT NULL,
    fax_number          TEXT,
    current_location_id INTEGER REFERENCES locations(id) ON DELETE SET NULL,
    created_at          INTEGER NOT NULL,
    CONSTRAINT users_extension_key UNIQUE (extension),
    CONSTRAINT users_fax_number_key UNIQUE (fax_number)
);

CREATE TABLE user_numbers (
    user_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    label    TEXT    NOT NULL,
    number   TEXT    NOT NULL,
    PRIMARY KEY (user_id, number)
);

CREATE TABLE phones (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    sip_username TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    realm        TEXT    NOT NULL,
    ha1_md5      TEXT    NOT NULL,
    ha1_sha256   TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    CONSTRAINT phones_sip_username_key UNIQUE (sip_username)
);
CREATE INDEX phones_user_idx ON phones (user_id, id);

CREATE TABLE locations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    CONSTRAINT locations_user_name_key UNIQUE (user_id, name)
);

CREATE TABLE location_phones (
    location_id INTEGER NOT NULL REFERENCES locations(id) ON DELETE CASCADE,
    phone_id    INTEGER NOT NULL REFERENCES phones(id) ON DELETE CASCADE,
    PRIMARY KEY (location_id, phone_id)
);

CREATE TABLE location_numbers (
    location_id INTEGER NOT NULL REFERENCES locations(id) ON DELETE CASCADE,
    number      TEXT    NOT NULL,
    PRIMARY KEY (location_id, number)
);

CREATE TABLE api_tokens (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash TEXT    NOT NULL,
    scope      TEXT    NOT NULL CHECK (scope IN ('admin', 'user')),
    user_id    INTEGER REFERENCES users(id) ON DELETE CASCADE,
    label      TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    CONSTRAINT api_tokens_hash_key UNIQUE (token_hash)
);
