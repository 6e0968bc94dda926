-- HL7 v2 intake: every accepted message is archived with the ACK it got, so
-- a re-send of the same sender + control id (a retry after a lost ACK) is
-- answered with the original ACK and creates nothing; every rejected
-- message goes to the dead letters with the reason, for replay after a
-- mapping fix. Both hold PHI (the raw message).

CREATE TABLE hl7_messages (
    tenant          text        NOT NULL,
    sender          text        NOT NULL, -- MSH-3.1 ^ MSH-4.1
    control_id      text        NOT NULL, -- MSH-10
    received_at     timestamptz NOT NULL,
    message_type    text        NOT NULL, -- MSH-9, e.g. ADT^A01^ADT_A01
    mapping_version text        NOT NULL,
    resources       integer     NOT NULL, -- resources written
    provenance_id   text        NOT NULL,
    ack             bytea       NOT NULL, -- the ACK sent, replayed to duplicates
    raw             bytea       NOT NULL, -- the message as received
    PRIMARY KEY (tenant, sender, control_id)
);
CREATE INDEX hl7_messages_received ON hl7_messages (tenant, received_at);

CREATE TABLE hl7_dead_letters (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant       text        NOT NULL,
    sender       text        NOT NULL,
    control_id   text        NOT NULL,
    received_at  timestamptz NOT NULL,
    ack_code     text        NOT NULL, -- AE, AR, CE or CR
    reason       text        NOT NULL, -- locations and rules only, never field values
    raw          bytea       NOT NULL,
    replayed_at  timestamptz,          -- set when a replay accepted it
    attempts     integer     NOT NULL DEFAULT 0
);
CREATE INDEX hl7_dead_letters_pending ON hl7_dead_letters (tenant, id) WHERE replayed_at IS NULL;
