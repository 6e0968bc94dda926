-- Blind-index rows are stored once per patient compartment, like token and
-- date rows (0004), so that "patient=P&date=ge2020" over an encrypted date
-- is one index range over (param, compartment, token) rather than every
-- matching token of the tenant intersected with P's rows.
ALTER TABLE idx_blind ADD COLUMN compartment text NOT NULL DEFAULT '';
CREATE INDEX idx_blind_compartment ON idx_blind (tenant, type, param, compartment, token, rid) WHERE compartment <> '';
