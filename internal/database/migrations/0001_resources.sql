-- Resource store: the current version of every resource, its prior versions,
-- and the search index. Every table is keyed by tenant.

CREATE SEQUENCE resource_seq;

-- One row per resource: its current version (a tombstone after delete).
-- rid is the internal key the search index refers to; seq orders writes
-- globally (system history, stable paging).
CREATE TABLE resources (
    rid          bigint      PRIMARY KEY, -- the seq of the version that created the resource
    tenant       text        NOT NULL,
    type         text        NOT NULL,
    id           text        NOT NULL,
    version      bigint      NOT NULL,
    seq          bigint      NOT NULL,
    last_updated timestamptz NOT NULL,
    deleted      boolean     NOT NULL DEFAULT false,
    method       text        NOT NULL, -- POST, PUT or DELETE: the interaction that wrote this version
    body         bytea,                -- compact JSON; NULL for a tombstone
    UNIQUE (tenant, type, id)
);
CREATE INDEX resources_type_updated ON resources (tenant, type, last_updated, id);
CREATE INDEX resources_seq ON resources (tenant, seq);

-- Every version that is no longer current.
CREATE TABLE resource_history (
    tenant       text        NOT NULL,
    type         text        NOT NULL,
    id           text        NOT NULL,
    version      bigint      NOT NULL,
    seq          bigint      NOT NULL,
    last_updated timestamptz NOT NULL,
    deleted      boolean     NOT NULL,
    method       text        NOT NULL,
    body         bytea,
    PRIMARY KEY (tenant, type, id, version)
);
CREATE INDEX resource_history_seq ON resource_history (tenant, seq);

-- Search index, current versions only. One table per search parameter type;
-- rows are replaced whenever a resource is written. tenant and type are
-- repeated so that the index scans start from the parameter, not the resource.
CREATE TABLE idx_token (
    rid    bigint NOT NULL,
    tenant text   NOT NULL,
    type   text   NOT NULL,
    param  text   NOT NULL,
    system text   NOT NULL DEFAULT '', -- '' when the value has no system
    code   text   NOT NULL
);
CREATE INDEX idx_token_lookup ON idx_token (tenant, type, param, code, system, rid);
CREATE INDEX idx_token_rid ON idx_token (rid);

CREATE TABLE idx_string (
    rid    bigint NOT NULL,
    tenant text   NOT NULL,
    type   text   NOT NULL,
    param  text   NOT NULL,
    norm   text   NOT NULL, -- case-folded, accents stripped: default and :contains
    exact  text   NOT NULL  -- as written: :exact
);
CREATE INDEX idx_string_lookup ON idx_string (tenant, type, param, norm text_pattern_ops, rid);
CREATE INDEX idx_string_rid ON idx_string (rid);

-- A date, dateTime, instant or Period as the closed range [lo, hi] it covers
-- at its precision; a Period without start or end is open, stored as the
-- sentinels 0001-01-01 and 9999-12-31T23:59:59.999999Z.
CREATE TABLE idx_date (
    rid    bigint      NOT NULL,
    tenant text        NOT NULL,
    type   text        NOT NULL,
    param  text        NOT NULL,
    lo     timestamptz NOT NULL,
    hi     timestamptz NOT NULL
);
CREATE INDEX idx_date_lookup ON idx_date (tenant, type, param, lo, hi, rid);
CREATE INDEX idx_date_rid ON idx_date (rid);

-- A reference to [target_type]/[target_id] (a relative literal reference),
-- or to an absolute URL (target_type '' and target_id the URL).
CREATE TABLE idx_reference (
    rid         bigint NOT NULL,
    tenant      text   NOT NULL,
    type        text   NOT NULL,
    param       text   NOT NULL,
    target_type text   NOT NULL,
    target_id   text   NOT NULL
);
CREATE INDEX idx_reference_lookup ON idx_reference (tenant, type, param, target_id, target_type, rid);
CREATE INDEX idx_reference_rid ON idx_reference (rid);

CREATE TABLE idx_number (
    rid    bigint  NOT NULL,
    tenant text    NOT NULL,
    type   text    NOT NULL,
    param  text    NOT NULL,
    lo     numeric NOT NULL,
    hi     numeric NOT NULL
);
CREATE INDEX idx_number_lookup ON idx_number (tenant, type, param, lo, hi, rid);
CREATE INDEX idx_number_rid ON idx_number (rid);

CREATE TABLE idx_quantity (
    rid    bigint  NOT NULL,
    tenant text    NOT NULL,
    type   text    NOT NULL,
    param  text    NOT NULL,
    system text    NOT NULL DEFAULT '',
    code   text    NOT NULL DEFAULT '', -- unit code, or the unit text when there is no code
    lo     numeric NOT NULL,
    hi     numeric NOT NULL
);
CREATE INDEX idx_quantity_lookup ON idx_quantity (tenant, type, param, lo, hi, rid);
CREATE INDEX idx_quantity_rid ON idx_quantity (rid);

CREATE TABLE idx_uri (
    rid    bigint NOT NULL,
    tenant text   NOT NULL,
    type   text   NOT NULL,
    param  text   NOT NULL,
    uri    text   NOT NULL
);
CREATE INDEX idx_uri_lookup ON idx_uri (tenant, type, param, uri text_pattern_ops, rid);
CREATE INDEX idx_uri_rid ON idx_uri (rid);
