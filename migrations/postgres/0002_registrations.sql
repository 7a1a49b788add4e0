-- Registrar bindings (RFC 3261 §10) and brute-force bans. Written before the 200 OK / the ban
-- takes effect, reloaded at start.

CREATE TABLE registrations (
    aor         TEXT   NOT NULL,
    contact     TEXT   NOT NULL,
    phone_id    BIGINT NOT NULL REFERENCES phones(id) ON DELETE CASCADE,
    user_id     BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    q           BIGINT,
    call_id     TEXT   NOT NULL,
    cseq        BIGINT NOT NULL,
    source      TEXT   NOT NULL,
    transport   TEXT   NOT NULL,
    user_agent  TEXT,
    instance    TEXT,
    reg_id      BIGINT,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (aor, contact)
);
CREATE INDEX registrations_phone_idx ON registrations (phone_id);
CREATE INDEX registrations_expiry_idx ON registrations (expires_at);

CREATE TABLE bans (
    ip         TEXT   PRIMARY KEY,
    until_ms   BIGINT NOT NULL,
    failures   BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
