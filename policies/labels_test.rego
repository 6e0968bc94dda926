package fhirgate.authz_test

restricted_clinician := object.union(clinician, {"roles": ["clinician", "restricted"]})

team_obs := obs("p-team", "org1")

test_confidentiality_needs_restricted if {
	every l in ["R", "V"] {
		denied_for(clinician, read_obs, labeled(team_obs, [l]), "label-restricted")
		allowed(restricted_clinician, read_obs, labeled(team_obs, [l]))
		# break-glass does not lift confidentiality labels
		denied_for(breaker, read_obs, labeled(team_obs, [l]), "label-restricted")
	}
}

test_sensitivity_needs_restricted_or_break_glass if {
	every l in ["HIV", "PSY", "ETH"] {
		denied_for(clinician, read_obs, labeled(team_obs, [l]), "label-sensitive")
		allowed(restricted_clinician, read_obs, labeled(team_obs, [l]))
		allowed(breaker, read_obs, labeled(team_obs, [l]))
	}
}

test_part2_needs_consent_or_break_glass if {
	denied_for(clinician, read_obs, labeled(team_obs, ["SUD"]), "label-sensitive")
	# the restricted role alone is not consent
	denied_for(restricted_clinician, read_obs, labeled(team_obs, ["SUD"]), "label-sensitive")
	allowed(object.union(clinician, {"consents": ["42CFRPart2"]}), read_obs, labeled(team_obs, ["SUD"]))
	allowed(breaker, read_obs, labeled(team_obs, ["SUD"]))
}

test_labels_for_patient_apps if {
	denied_for(patient_app, read_obs, labeled(obs("p1", "org9"), ["PSY"]), "label-sensitive")
	allowed(patient_app, read_obs, labeled(obs("p1", "org9"), ["N"]))
}

test_unlabeled_and_other_labels if {
	allowed(clinician, read_obs, labeled(team_obs, ["N", "NORMAL"]))
}

test_filter_labels if {
	filter(restricted_clinician, act("search", "Observation")).exclude_labels == ["SUD"]
	filter(object.union(restricted_clinician, {"consents": ["42CFRPart2"]}), act("search", "Observation")).exclude_labels == []
	filter(breaker, act("search", "Observation")).exclude_labels == ["R", "V"]
	filter(auditor, act("audit", "AuditEvent")).exclude_labels == []
}
