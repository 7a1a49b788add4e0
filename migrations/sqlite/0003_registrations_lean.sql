-- Bindings are rewritten on every refresh (thousands a second on a busy server), so the table
-- carries only what that write needs: a clustered primary key (WITHOUT ROWID: one b-tree, not a
-- rowid table plus a key index) and the phone index the foreign key's cascade uses. Expired rows
-- are found by the registrar in memory; the one scan by expiry happens at start.

CREATE TABLE registrations_new (
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
) WITHOUT ROWID;
INSERT INTO registrations_new SELECT aor, contact, phone_id, user_id, expires_at, q, call_id,
    cseq, source, transport, user_agent, instance, reg_id, updated_at FROM registrations;
DROP TABLE registrations;
ALTER TABLE registrations_new RENAME TO registrations;
CREATE INDEX registrations_phone_idx ON registrations (phone_id);
