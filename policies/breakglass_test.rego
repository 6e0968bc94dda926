package fhirgate.authz_test

stranger_obs := obs("p-stranger", "org-far")

test_break_glass_any_patient_flagged if {
	every p in ["ETREAT", "BTG"] {
		s := object.union(breaker, {"purpose_of_use": p})
		d := decide(s, read_obs, stranger_obs)
		d.allow
		d.break_glass
		d.reasons == ["break-glass"]
		f := filter(s, act("search", "Observation"))
		f.any_patient
		f.break_glass
	}
}

test_break_glass_flagged_with_other_grants if {
	d := decide(breaker, read_obs, obs("p-team", "org2"))
	d.allow
	d.break_glass
	d.reasons == ["break-glass", "clinician-care-team"]
}

test_break_glass_flagged_when_denied if {
	d := decide(breaker, read_obs, labeled(stranger_obs, ["V"]))
	not d.allow
	d.break_glass
}

test_break_glass_needs_role if {
	s := object.union(clinician, {"purpose_of_use": "ETREAT"})
	d := decide(s, read_obs, stranger_obs)
	not d.allow
	not d.break_glass
}

test_break_glass_needs_purpose if {
	s := object.union(breaker, {"purpose_of_use": "TREAT"})
	d := decide(s, read_obs, stranger_obs)
	not d.allow
	not d.break_glass
}

test_break_glass_still_scoped if {
	s := object.union(breaker, {"scopes": [scope("user", "Condition", "rs")]})
	d := decide(s, read_obs, stranger_obs)
	not d.allow
	"scope-missing" in d.reasons
	not d.break_glass
}

test_break_glass_users_only if {
	s := object.union(patient_app, {"roles": ["break-glass"], "purpose_of_use": "BTG"})
	d := decide(s, read_obs, stranger_obs)
	not d.allow
	not d.break_glass
}

test_break_glass_without_clinician_role if {
	s := object.union(breaker, {"roles": ["break-glass"], "care_team": []})
	allowed(s, read_obs, stranger_obs)
}
