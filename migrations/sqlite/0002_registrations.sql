-- Registrar bindings (RFC 3261 §10) and brute-force bans. Written before the 200 OK / the ban
-- takes effect, reloaded at start.

CREATE TABLE registrations (
    aor         TEXT   NOT NULL,
    contact     TEXT   NOT NULL,
    phone_id    INTEGER NOT NULL REFERENCES phones(id) ON DELETE CASCADE,
    user_id     INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    q           INTEGER,
    call_id     TEXT   NOT NULL,
    cseq        INTEGER NOT NULL,
    source      TEXT   NOT NULL,
    transport   TEXT   NOT NULL,
    user_agent  TEXT,
    instance    TEXT,
    reg_id      INTEGER,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (aor, contact)
);
CREATE INDEX registrations_phone_idx ON registrations (phone_id);
CREATE INDEX registrations_expiry_idx ON registrations (expires_at);

CREATE TABLE bans (
    ip         TEXT   PRIMARY KEY,
    until_ms   INTEGER NOT NULL,
    failures   INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
