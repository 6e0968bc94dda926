-- The immutable access log (internal/audit).
--
-- audit_log holds one record per request, hash-chained: hash is SHA-256 of
-- a canonical encoding of (format, seq, prev_hash, every field), prev_hash
-- the hash of record seq-1 (32 zero bytes for seq 1). Records are written
-- by one writer per gateway process, in groups, under an advisory lock, so
-- seq is contiguous from 1. No column holds PHI in plaintext: query is the
-- search string sealed with the PHI key provider (query_sealed) or, with
-- PHI encryption off, as given.
--
-- audit_checkpoints is a convenience copy of the signed checkpoints; the
-- verifier trusts only the external copy (a file or another sink the
-- database role cannot rewrite).
CREATE TABLE audit_log (
    seq            bigint      PRIMARY KEY CHECK (seq > 0),
    format         smallint    NOT NULL,
    time           timestamptz NOT NULL,
    request_id     text        NOT NULL,
    tenant         text        NOT NULL,
    subject_id     text        NOT NULL,
    subject_kind   text        NOT NULL,
    client_id      text        NOT NULL,
    token_id       text        NOT NULL,
    ip             text        NOT NULL,
    interaction    text        NOT NULL,
    resource_type  text        NOT NULL,
    resource_ids   text[]      NOT NULL,
    patient_ids    text[]      NOT NULL,
    query          bytea       NOT NULL,
    query_sealed   boolean     NOT NULL,
    purpose_of_use text        NOT NULL,
    decision_id    text        NOT NULL,
    reason         text        NOT NULL,
    break_glass    boolean     NOT NULL,
    outcome        text        NOT NULL,
    action         text        NOT NULL,
    prev_hash      bytea       NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash           bytea       NOT NULL CHECK (octet_length(hash) = 32)
);
-- Auditor queries: accounting of disclosures (patient), one user's
-- activity (agent), date ranges, break-glass uses.
CREATE INDEX audit_log_patient ON audit_log USING gin (patient_ids);
CREATE INDEX audit_log_agent ON audit_log (tenant, subject_id, seq);
CREATE INDEX audit_log_time ON audit_log (tenant, time);
CREATE INDEX audit_log_break_glass ON audit_log (tenant, seq) WHERE break_glass;

CREATE TABLE audit_checkpoints (
    seq       bigint      NOT NULL CHECK (seq > 0),
    hash      bytea       NOT NULL CHECK (octet_length(hash) = 32),
    time      timestamptz NOT NULL,
    key_id    text        NOT NULL,
    signature bytea       NOT NULL
);
CREATE INDEX audit_checkpoints_seq ON audit_checkpoints (seq);

-- Append-only, for every role, the owner and superusers included: UPDATE,
-- DELETE and TRUNCATE raise. Statement triggers, so that they fire even
-- when no row matches. (A superuser can still bypass triggers, with
-- session_replication_role = replica or ALTER TABLE ... DISABLE TRIGGER:
-- that is what the hash chain and the external checkpoints detect.)
CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit: % on % refused: the audit log is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

-- Privileges. In production the gateway connects as a login role that is a
-- member of fhirgate_app and does NOT own the tables (the owner, used only
-- to migrate, can ALTER and DROP them). fhirgate_app may INSERT and SELECT
-- the audit tables and nothing else on them.
--
-- Roles are cluster-wide while this runs in every database (each test
-- database too, possibly two migrators at once): create the role only if
-- it is missing, and treat losing the race to another migrator as success
-- (a concurrent CREATE ROLE fails with duplicate_object, or unique_violation
-- on pg_authid when both inserted before either committed). A migrator
-- without CREATEROLE skips the role with a notice; the grants then wait for
-- an administrator to create it and re-run them.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fhirgate_app') THEN
        BEGIN
            CREATE ROLE fhirgate_app NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL; -- another migrator created it
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'audit: cannot create role fhirgate_app (no CREATEROLE): create it and grant INSERT, SELECT on audit_log, audit_checkpoints';
        END;
    END IF;
END
$$;

REVOKE ALL ON audit_log, audit_checkpoints FROM PUBLIC;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fhirgate_app') THEN
        REVOKE ALL ON audit_log, audit_checkpoints FROM fhirgate_app;
        GRANT INSERT, SELECT ON audit_log, audit_checkpoints TO fhirgate_app;
    END IF;
END
$$;
