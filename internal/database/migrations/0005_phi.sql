-- PHI field-level encryption (internal/phi).
--
-- phi_keys holds each tenant's data keys ONLY in wrapped form (wrapped by
-- the key provider: Vault Transit or the local keyring); the plaintext of a
-- key never reaches the database. Purpose 'data' keys encrypt PHI values,
-- one per epoch (a new epoch on `fhirgate keys reencrypt`); the 'index' key
-- derives the blind-index keys. Deleting a tenant's rows crypto-shreds its
-- PHI.
CREATE TABLE phi_keys (
    tenant   text        NOT NULL,
    purpose  text        NOT NULL CHECK (purpose IN ('data', 'index')),
    epoch    integer     NOT NULL CHECK (epoch > 0),
    wrapped  text        NOT NULL,
    created  timestamptz NOT NULL,
    PRIMARY KEY (tenant, purpose, epoch)
);

-- The data-key epoch each stored body or raw message is sealed under (0:
-- nothing sealed), so status can count data per epoch and re-encryption
-- can find what is left to move.
ALTER TABLE resources ADD COLUMN phi_epoch integer NOT NULL DEFAULT 0;
ALTER TABLE resource_history ADD COLUMN phi_epoch integer NOT NULL DEFAULT 0;
ALTER TABLE hl7_messages ADD COLUMN phi_epoch integer NOT NULL DEFAULT 0;
ALTER TABLE hl7_dead_letters ADD COLUMN phi_epoch integer NOT NULL DEFAULT 0;
CREATE INDEX resources_phi_epoch ON resources (tenant, phi_epoch, rid);
CREATE INDEX resource_history_phi_epoch ON resource_history (tenant, phi_epoch);

-- Blind index: keyed-HMAC tokens of the values of search parameters that
-- read encrypted elements (see internal/search/blind.go).
CREATE TABLE idx_blind (
    rid    bigint NOT NULL,
    tenant text   NOT NULL,
    type   text   NOT NULL,
    param  text   NOT NULL,
    token  bytea  NOT NULL
);
CREATE INDEX idx_blind_lookup ON idx_blind (tenant, type, param, token, rid);
CREATE INDEX idx_blind_rid ON idx_blind (rid);
