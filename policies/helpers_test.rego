# Shared fixtures of the policy unit tests (internal/authz/rego_test.go runs
# them with coverage).
package fhirgate.authz_test

import data.fhirgate.authz

# scope("user", "Observation", "rs") is user/Observation.rs.
scope(ctx, typ, letters) := {
	"context": ctx, "type": typ, "params": null,
	"c": contains(letters, "c"), "r": contains(letters, "r"), "u": contains(letters, "u"),
	"d": contains(letters, "d"), "s": contains(letters, "s"),
}

granular(ctx, typ, letters, params) := object.union(scope(ctx, typ, letters), {"params": params})

base_subject := {
	"id": "s1", "kind": "user", "roles": [], "scopes": [], "patient": "", "organization": "",
	"care_team": [], "purpose_of_use": "TREAT", "consents": [], "sources": [],
}

clinician := object.union(base_subject, {
	"id": "dr1", "roles": ["clinician"], "organization": "org1", "care_team": ["p-team"],
	"scopes": [scope("user", "*", "cruds")],
})

patient_app := object.union(base_subject, {
	"id": "pat1", "kind": "patient", "patient": "p1",
	"scopes": [scope("patient", "*", "cruds")],
})

emr := object.union(base_subject, {
	"id": "emr1", "kind": "emr", "roles": ["emr"], "sources": ["emr-a"],
})

auditor := object.union(base_subject, {"id": "aud1", "roles": ["auditor"], "scopes": [scope("user", "*", "cruds")]})

admin := object.union(base_subject, {"id": "adm1", "roles": ["admin"], "scopes": [scope("user", "*", "cruds")]})

breaker := object.union(clinician, {"roles": ["clinician", "break-glass"], "purpose_of_use": "ETREAT"})

act(interaction, typ) := {"interaction": interaction, "type": typ, "id": "", "params": {}}

base_resource := {
	"type": "Observation", "id": "r1", "patients": [], "organization": "", "patient_organizations": [],
	"security": [], "source": "", "tokens": [],
}

# An Observation in patient p's compartment, p managed by org.
obs(p, org) := object.union(base_resource, {"patients": [p], "patient_organizations": [org]})

labeled(r, labels) := object.union(r, {"security": labels})

patient_res(id, org) := object.union(base_resource, {"type": "Patient", "id": id, "organization": org})

practitioner := object.union(base_resource, {"type": "Practitioner", "id": "pr1"})

env := {"time": "2026-01-01T00:00:00Z", "client_ip": "127.0.0.1"}

# decide evaluates the decision both ways, with the filter computed and with
# the filter passed in without the subject (as the gateway does with cached
# filters), and is undefined unless they agree.
decide(s, a, r) := d if {
	d := authz.decision with input as {"subject": s, "action": a, "resource": r, "env": env}
	pre := filter(s, a)
	d == authz.decision with input as {"action": a, "resource": r, "env": env, "filter": pre}
}

filter(s, a) := f if {
	f := authz.filter with input as {"subject": s, "action": a, "env": env}
}

allowed(s, a, r) if decide(s, a, r).allow

# denied_for(s, a, r, reason): denied, and reason is among the reasons.
denied_for(s, a, r, reason) if {
	d := decide(s, a, r)
	not d.allow
	reason in d.reasons
}

read_obs := act("read", "Observation")
