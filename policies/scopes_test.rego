package fhirgate.authz_test

with_scopes(s, scopes) := object.union(s, {"scopes": scopes})

test_read_needs_r if {
	s := with_scopes(clinician, [scope("user", "Observation", "s")])
	denied_for(s, read_obs, obs("p-team", "org1"), "scope-missing")
	denied_for(s, act("vread", "Observation"), obs("p-team", "org1"), "scope-missing")
	denied_for(s, act("history", "Observation"), obs("p-team", "org1"), "scope-missing")
	allowed(s, act("search", "Observation"), obs("p-team", "org1"))
}

test_search_needs_s if {
	s := with_scopes(clinician, [scope("user", "Observation", "r")])
	denied_for(s, act("search", "Observation"), obs("p-team", "org1"), "scope-missing")
	allowed(s, read_obs, obs("p-team", "org1"))
	allowed(s, act("vread", "Observation"), obs("p-team", "org1"))
	allowed(s, act("history", "Observation"), obs("p-team", "org1"))
}

test_write_letters if {
	s := with_scopes(clinician, [scope("user", "Observation", "c")])
	allowed(s, act("create", "Observation"), obs("p-team", "org1"))
	denied_for(s, act("update", "Observation"), obs("p-team", "org1"), "scope-missing")
	denied_for(s, act("delete", "Observation"), obs("p-team", "org1"), "scope-missing")
	u := with_scopes(clinician, [scope("user", "Observation", "ud")])
	allowed(u, act("update", "Observation"), obs("p-team", "org1"))
	allowed(u, act("delete", "Observation"), obs("p-team", "org1"))
	denied_for(u, act("create", "Observation"), obs("p-team", "org1"), "scope-missing")
}

test_scope_type if {
	s := with_scopes(clinician, [scope("user", "Observation", "rs")])
	allowed(s, read_obs, obs("p-team", "org1"))
	c := object.union(obs("p-team", "org1"), {"type": "Condition"})
	denied_for(s, act("read", "Condition"), c, "scope-missing")
}

test_scope_context if {
	s := with_scopes(clinician, [scope("patient", "*", "cruds"), scope("system", "*", "cruds")])
	denied_for(s, read_obs, obs("p-team", "org1"), "scope-missing")
}

test_transaction_as_a_whole if {
	s := with_scopes(clinician, [scope("user", "Observation", "c")])
	filter(s, act("transaction", "Bundle")).allow
	filter(s, act("transaction", "")).allow
	filter(s, act("transaction", "Bundle")).params == null
	r := with_scopes(clinician, [scope("user", "*", "rs")])
	not filter(r, act("transaction", "Bundle")).allow
	allowed(s, act("transaction", "Observation"), obs("p-team", "org1"))
}

lab := "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"

vitals := "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"

category_token(code) := {"param": "category", "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": code}

obs_with(tokens) := object.union(obs("p1", "org9"), {"tokens": tokens})

test_granular_scope if {
	s := with_scopes(patient_app, [granular("patient", "Observation", "rs", {"category": [lab]})])
	f := filter(s, act("search", "Observation"))
	f.allow
	f.params == {"category": [lab]}
	allowed(s, read_obs, obs_with([category_token("laboratory")]))
	denied_for(s, read_obs, obs_with([category_token("vital-signs")]), "granular-scope")
	denied_for(s, read_obs, obs_with([]), "granular-scope")
}

test_granular_alternatives_merge if {
	s := with_scopes(patient_app, [
		granular("patient", "Observation", "rs", {"category": [lab]}),
		granular("patient", "Observation", "rs", {"category": [vitals]}),
	])
	f := filter(s, act("search", "Observation"))
	f.allow
	f.params == {"category": [concat(",", sort([lab, vitals]))]}
	allowed(s, read_obs, obs_with([category_token("vital-signs")]))
	allowed(s, read_obs, obs_with([category_token("laboratory")]))
	denied_for(s, read_obs, obs_with([category_token("imaging")]), "granular-scope")
}

test_granular_unrestricted_scope_wins if {
	s := with_scopes(patient_app, [
		granular("patient", "Observation", "rs", {"category": [lab]}),
		scope("patient", "Observation", "rs"),
		granular("patient", "Observation", "rs", {}),
	])
	filter(s, act("search", "Observation")).params == null
	allowed(s, read_obs, obs_with([]))
}

test_granular_unmergeable_refused if {
	s := with_scopes(patient_app, [
		granular("patient", "Observation", "rs", {"category": [lab]}),
		granular("patient", "Observation", "rs", {"code": ["1234-5"]}),
	])
	f := filter(s, act("search", "Observation"))
	not f.allow
	"granular-scope-combination" in f.reasons
}

test_granular_multi_key_is_and if {
	s := with_scopes(patient_app, [granular("patient", "Observation", "rs", {"category": ["laboratory"], "code": ["http://loinc.org|1234-5"]})])
	code := {"param": "code", "system": "http://loinc.org", "code": "1234-5"}
	allowed(s, read_obs, obs_with([category_token("laboratory"), code]))
	denied_for(s, read_obs, obs_with([category_token("laboratory")]), "granular-scope")
	denied_for(s, read_obs, obs_with([code]), "granular-scope")
}

test_token_forms if {
	sys := "http://terminology.hl7.org/CodeSystem/observation-category"
	nosys := {"param": "category", "system": "", "code": "laboratory"}
	token_case("laboratory", [category_token("laboratory")])
	token_case("laboratory", [nosys])
	token_case("|laboratory", [nosys])
	not token_case("|laboratory", [category_token("laboratory")])
	token_case(concat("", [sys, "|"]), [category_token("anything")])
	not token_case(concat("", [sys, "|"]), [nosys])
	token_case(lab, [category_token("laboratory")])
	not token_case(lab, [nosys])
	not token_case("a|b|c", [category_token("laboratory")])
	# a token of another parameter never matches
	not token_case("laboratory", [{"param": "code", "system": sys, "code": "laboratory"}])
}

token_case(value, tokens) if {
	s := with_scopes(patient_app, [granular("patient", "Observation", "rs", {"category": [value]})])
	allowed(s, read_obs, obs_with(tokens))
}

test_granular_empty_params_unrestricted if {
	s := with_scopes(patient_app, [granular("patient", "Observation", "rs", {})])
	filter(s, act("search", "Observation")).params == null
	allowed(s, read_obs, obs_with([]))
}
