package fhirgate.authz_test

# --- type-level denials

test_anonymous_denied if {
	denied_for(object.union(clinician, {"id": ""}), read_obs, obs("p-team", "org1"), "anonymous")
}

test_unknown_interaction_denied if {
	denied_for(clinician, act("patch", "Observation"), obs("p-team", "org1"), "unknown-interaction")
}

test_no_grant_reason if {
	d := filter(object.union(base_subject, {"scopes": [scope("user", "*", "rs")]}), read_obs)
	not d.allow
	d.reasons == ["no-grant"]
}

# --- auditors

test_auditor_reads_audit if {
	f := filter(auditor, act("audit", "AuditEvent"))
	f.allow
	f.reasons == ["auditor"]
	allowed(auditor, act("audit", "AuditEvent"), object.union(base_resource, {"type": "AuditEvent"}))
}

test_auditor_never_clinical if {
	denied_for(auditor, read_obs, obs("p-team", "org1"), "auditor-no-clinical")
	# not even as a clinician of the patient's organization
	a := object.union(clinician, {"roles": ["clinician", "auditor"]})
	denied_for(a, read_obs, obs("p-team", "org1"), "auditor-no-clinical")
	denied_for(a, act("search", "Observation"), obs("p-team", "org1"), "auditor-no-clinical")
}

test_audit_needs_auditor if {
	not filter(clinician, act("audit", "AuditEvent")).allow
}

# --- administrators

test_admin_operations if {
	f := filter(admin, act("admin", ""))
	f.allow
	f.reasons == ["admin"]
}

test_admin_never_clinical if {
	denied_for(admin, read_obs, obs("p-team", "org1"), "admin-no-clinical")
}

test_admin_needs_admin if {
	not filter(clinician, act("admin", "")).allow
	not filter(auditor, act("admin", "")).allow
}

# --- clinicians

test_clinician_organization if {
	d := decide(clinician, read_obs, obs("p-other", "org1"))
	d.allow
	d.reasons == ["clinician-organization"]
	allowed(clinician, act("read", "Patient"), patient_res("p-other", "org1"))
	denied_for(clinician, read_obs, obs("p-other", "org2"), "compartment")
	denied_for(clinician, act("read", "Patient"), patient_res("p-other", "org2"), "compartment")
}

test_clinician_care_team if {
	d := decide(clinician, read_obs, obs("p-team", "org2"))
	d.allow
	d.reasons == ["clinician-care-team"]
	allowed(clinician, act("read", "Patient"), patient_res("p-team", "org2"))
	denied_for(object.union(clinician, {"care_team": []}), read_obs, obs("p-team", "org2"), "compartment")
}

test_clinician_without_organization if {
	c := object.union(clinician, {"organization": ""})
	f := filter(c, act("search", "Observation"))
	f.organizations == []
	f.patients == ["p-team"]
	denied_for(c, read_obs, obs("p-x", ""), "compartment")
}

test_clinician_non_compartment if {
	d := decide(clinician, act("read", "Practitioner"), practitioner)
	d.allow
	d.reasons == ["clinician-non-compartment"]
}

test_clinician_writes_in_compartment if {
	allowed(clinician, act("create", "Observation"), obs("p-team", "org2"))
	allowed(clinician, act("update", "Observation"), obs("p-x", "org1"))
	allowed(clinician, act("delete", "Observation"), obs("p-x", "org1"))
	denied_for(clinician, act("create", "Observation"), obs("p-x", "org2"), "compartment")
	# a new Patient (no id yet) only in the clinician's organization
	allowed(clinician, act("create", "Patient"), patient_res("", "org1"))
	denied_for(clinician, act("create", "Patient"), patient_res("", "org2"), "compartment")
}

test_clinician_needs_user_kind if {
	# with system/ scopes a clinician-role client is a backend service, not
	# a clinician: no clinician grant applies
	s := object.union(clinician, {"kind": "system", "scopes": [scope("system", "*", "rs")]})
	filter(s, read_obs).reasons == ["backend-service"]
	s2 := object.union(clinician, {"kind": "patient", "scopes": [scope("user", "*", "rs")]})
	not filter(s2, read_obs).allow
}

test_clinician_no_ingest if {
	not filter(clinician, act("hl7", "")).allow
	not filter(clinician, act("push", "Bundle")).allow
}

test_clinician_filter if {
	f := filter(clinician, act("search", "Observation"))
	f.allow
	f.reasons == ["clinician-care-team", "clinician-non-compartment", "clinician-organization"]
	not f.any_patient
	f.patients == ["p-team"]
	f.organizations == ["org1"]
	f.non_compartment
	f.exclude_labels == ["ETH", "HIV", "PSY", "R", "SUD", "V"]
	f.params == null
	f.any_source
	not f.break_glass
}

test_type_mismatch if {
	denied_for(clinician, act("read", "Condition"), obs("p-team", "org1"), "type-mismatch")
}

# --- patient-facing apps

test_patient_app_own_compartment if {
	d := decide(patient_app, read_obs, obs("p1", "org9"))
	d.allow
	d.reasons == ["patient-app"]
	allowed(patient_app, act("read", "Patient"), patient_res("p1", "org9"))
	allowed(patient_app, act("search", "Practitioner"), object.union(practitioner, {"type": "Practitioner"}))
}

test_patient_app_other_patient_denied if {
	denied_for(patient_app, read_obs, obs("p2", "org9"), "compartment")
	denied_for(patient_app, act("read", "Patient"), patient_res("p2", "org9"), "compartment")
}

test_patient_app_no_groups if {
	g := object.union(base_resource, {"type": "Group", "id": "g1"})
	denied_for(patient_app, act("read", "Group"), g, "compartment")
	not filter(patient_app, act("search", "Group")).non_compartment
}

test_patient_app_needs_patient_context if {
	s := object.union(patient_app, {"patient": ""})
	denied_for(s, read_obs, obs("p1", "org9"), "no-grant")
}

test_patient_app_needs_patient_scopes if {
	s := object.union(patient_app, {"scopes": [scope("user", "*", "cruds")]})
	denied_for(s, read_obs, obs("p1", "org9"), "scope-missing")
}

# --- EMR senders

emr_obs(source) := object.union(obs("p5", "org5"), {"source": source})

test_emr_writes_own_source if {
	every i in ["create", "update", "transaction", "hl7", "push"] {
		d := decide(emr, act(i, "Observation"), emr_obs("emr-a"))
		d.allow
		d.reasons == ["emr-source"]
	}
	f := filter(emr, act("create", "Observation"))
	not f.any_source
	f.sources == ["emr-a"]
	f.exclude_labels == []
}

test_emr_other_source_denied if {
	denied_for(emr, act("create", "Observation"), emr_obs("emr-b"), "source-not-owned")
	denied_for(emr, act("update", "Observation"), emr_obs(""), "source-not-owned")
}

test_emr_reads_nothing if {
	every i in ["read", "vread", "search", "history"] {
		denied_for(emr, act(i, "Observation"), emr_obs("emr-a"), "emr-no-read")
	}
}

test_emr_no_delete if {
	denied_for(emr, act("delete", "Observation"), emr_obs("emr-a"), "no-grant")
}

test_emr_without_sources if {
	denied_for(object.union(emr, {"sources": []}), act("create", "Observation"), emr_obs("emr-a"), "emr-no-sources")
}

test_emr_role_on_a_token if {
	s := object.union(emr, {"kind": "system", "scopes": [scope("system", "Observation", "cu")]})
	allowed(s, act("create", "Observation"), emr_obs("emr-a"))
	denied_for(s, act("create", "Condition"), object.union(emr_obs("emr-a"), {"type": "Condition"}), "scope-missing")
	# HL7 v2 needs no FHIR scope
	allowed(s, act("hl7", "Condition"), object.union(emr_obs("emr-a"), {"type": "Condition"}))
}

test_emr_kind_without_role if {
	allowed(object.union(emr, {"roles": []}), act("create", "Observation"), emr_obs("emr-a"))
}

test_emr_labels_do_not_apply if {
	allowed(emr, act("create", "Observation"), labeled(emr_obs("emr-a"), ["SUD", "V"]))
}

# --- backend services

service := object.union(base_subject, {"id": "svc1", "kind": "system", "scopes": [scope("system", "Observation", "rs")]})

test_backend_service_any_patient if {
	f := filter(service, read_obs)
	f.allow
	f.reasons == ["backend-service"]
	allowed(service, read_obs, obs("p-other", "org9"))
}

test_backend_service_bounded_by_scopes if {
	not filter(service, act("read", "Patient")).allow
	not filter(service, act("create", "Observation")).allow
}
