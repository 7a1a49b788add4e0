-- Bindings are rewritten on every refresh, so the table keeps only the indexes that write and
-- the phone cascade need. Expired rows are found by the registrar in memory; the one scan by
-- expiry happens at start.

DROP INDEX registrations_expiry_idx;
