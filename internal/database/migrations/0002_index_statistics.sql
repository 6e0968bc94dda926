-- Multi-column statistics for the search index. Without them the planner
-- multiplies the selectivities of type, param and value as if they were
-- independent and underestimates common values (a frequent LOINC code) by
-- orders of magnitude, which leads it to drive a search from the wrong
-- condition.
CREATE STATISTICS idx_token_stats (mcv, dependencies) ON type, param, code FROM idx_token;
CREATE STATISTICS idx_reference_stats (mcv, dependencies) ON type, param, target_type FROM idx_reference;
CREATE STATISTICS idx_string_stats (dependencies) ON type, param, norm FROM idx_string;
CREATE STATISTICS idx_date_stats (dependencies) ON type, param FROM idx_date;
