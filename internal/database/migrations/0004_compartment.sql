-- Token and date index rows carry the patient compartment of their
-- resource (the Patient its "patient" parameter refers to; '' for none),
-- one row per compartment, so that the most common clinical search,
-- [type]?patient=P&code=C (or &date=, &category=, &status=), is a single
-- index range scan.
ALTER TABLE idx_token ADD COLUMN compartment text NOT NULL DEFAULT '';
ALTER TABLE idx_date ADD COLUMN compartment text NOT NULL DEFAULT '';
CREATE INDEX idx_token_compartment ON idx_token (tenant, type, param, compartment, code, system, rid) WHERE compartment <> '';
CREATE INDEX idx_date_compartment ON idx_date (tenant, type, param, compartment, lo, hi, rid) WHERE compartment <> '';
