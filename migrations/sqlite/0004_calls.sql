-- Call records (one row per call attempt) and the per-user view of each call that the call
-- history reads. Written once, at the end of the call, in one transaction.

CREATE TABLE calls (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    call_ref       TEXT    NOT NULL,
    started_at     INTEGER NOT NULL,
    answered_at    INTEGER,
    ended_at       INTEGER NOT NULL,
    outcome        TEXT    NOT NULL
        CHECK (outcome IN ('answered', 'no_answer', 'busy', 'failed', 'cancelled')),
    hangup_cause   TEXT    NOT NULL,
    caller_number  TEXT    NOT NULL,
    caller_name    TEXT    NOT NULL,
    dialled_number TEXT    NOT NULL,
    callee_number  TEXT    NOT NULL,
    callee_name    TEXT    NOT NULL,
    click_to_call  INTEGER NOT NULL CHECK (click_to_call IN (0, 1)),
    trunk          TEXT,
    CONSTRAINT calls_call_ref_key UNIQUE (call_ref)
);

-- One row per user involved in a call. started_at, answered_at, duration_ms, outcome and
-- click_to_call repeat the call's values (outcome as this user sees it) so that the history
-- query reads this table alone. other_name_key is other_name case-folded (by Switchboard, not
-- the database, so both databases sort names alike).
CREATE TABLE call_parties (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id        INTEGER NOT NULL REFERENCES calls(id) ON DELETE CASCADE,
    user_id        INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    direction      TEXT    NOT NULL CHECK (direction IN ('incoming', 'outgoing')),
    other_number   TEXT    NOT NULL,
    other_name     TEXT    NOT NULL,
    other_name_key TEXT    NOT NULL,
    answered_by    TEXT,
    started_at     INTEGER NOT NULL,
    answered_at    INTEGER,
    duration_ms    INTEGER NOT NULL,
    outcome        TEXT    NOT NULL
        CHECK (outcome IN ('answered', 'missed', 'no_answer', 'busy', 'failed', 'cancelled')),
    click_to_call  INTEGER NOT NULL CHECK (click_to_call IN (0, 1))
);
-- One index per history sort, each ending in (started_at, id): the keyset order of that sort.
-- The outcome index also serves the answered/missed filters under the default (time) sort.
CREATE INDEX call_parties_user_time_idx ON call_parties (user_id, started_at, id);
CREATE INDEX call_parties_user_outcome_idx ON call_parties (user_id, outcome, started_at, id);
CREATE INDEX call_parties_user_number_idx ON call_parties (user_id, other_number, started_at, id);
CREATE INDEX call_parties_user_name_idx ON call_parties (user_id, other_name_key, started_at, id);
CREATE INDEX call_parties_user_duration_idx ON call_parties (user_id, duration_ms, started_at, id);
CREATE INDEX call_parties_call_idx ON call_parties (call_id);
