# fhirgate authorization: who may do what to which FHIR resources.
#
# Loaded by internal/authz (every *.rego here except *_test.rego). Two
# entry points:
#
#   data.fhirgate.authz.filter    what the subject may do to one resource
#                                 type, whatever the resource: the type-level
#                                 decision, the grants, and the compartment,
#                                 label, scope and source restrictions that
#                                 the gateway compiles into SQL (searches,
#                                 history, includes, counts). Reads
#                                 input.subject, input.action and input.env,
#                                 never input.resource.
#   data.fhirgate.authz.decision  the decision for one resource
#                                 (input.resource): the filter, applied. The
#                                 gateway may pass a filter it computed for
#                                 the same subject and action as input.filter
#                                 (it caches filters); the rules below read
#                                 input.resource, input.action and the filter
#                                 only, never input.subject, so the answer is
#                                 the same either way (the tests check both).
#
# A resource is therefore allowed by `decision` exactly when the filter
# admits it (internal/authz Filter.Allows, and the SQL built from it).
#
# Input (built by internal/authz; every list is present, possibly empty,
# and the subject's lists hold no empty strings):
#   subject:  id, kind (user|patient|system|emr), roles[], scopes[] ({context,
#             type, c, r, u, d, s, params: {name: [value]} | null}), patient,
#             organization, care_team[], purpose_of_use, consents[], sources[]
#   action:   interaction, type, id, params {name: [value]}
#   resource: type, id, patients[], organization, patient_organizations[],
#             security[], source, tokens[] ({param, system, code})
#   env:      time (RFC 3339), client_ip
#
# Reasons are rule names only: never ids, codes or values (they are audited).
package fhirgate.authz

# Interactions on clinical data.
clinical_reads := {"read", "vread", "search", "history"}

clinical := {"read", "vread", "search", "history", "create", "update", "delete", "transaction", "hl7", "push"}

# Ingest interactions (HL7 v2 messages, pushed bundles): EMR senders only.
ingest := {"hl7", "push"}

known_interactions := {"read", "vread", "search", "history", "create", "update", "delete", "transaction", "hl7", "push", "audit", "admin"}

interaction := input.action.interaction

roles := input.subject.roles

default is_emr := false

is_emr if "emr" in roles

is_emr if input.subject.kind == "emr"

# Interactions that clinicians, patient apps and break-glass users may use.
default app_interaction := false

app_interaction if {
	interaction in clinical
	not interaction in ingest
	not is_emr
}

# ---------------------------------------------------------------------------
# Type-level denials: whatever any grant says, these refuse the action.

deny contains "anonymous" if input.subject.id == ""

deny contains "unknown-interaction" if not interaction in known_interactions

# Auditors see audit data only, never clinical data, whatever their scopes.
deny contains "auditor-no-clinical" if {
	"auditor" in roles
	interaction in clinical
}

# Administrators manage keys and the gateway, never clinical data.
deny contains "admin-no-clinical" if {
	"admin" in roles
	interaction in clinical
}

# EMR senders write; they read nothing.
deny contains "emr-no-read" if {
	is_emr
	interaction in clinical_reads
}

# ---------------------------------------------------------------------------
# Grants. Each grant names its rule and the part of the patient space it
# opens: any_patient, patients (and those Patients' compartments),
# organizations (the Patients they manage, and their compartments),
# non_compartment (resources in no patient's compartment). A resource is
# admitted when some grant admits it; the restrictions (labels, granular
# scopes, sources) hold whatever the grant.

# Auditors: the audit log through the auditor API (interaction "audit").
grants contains {"rule": "auditor", "any_patient": true, "patients": [], "organizations": [], "non_compartment": true} if {
	interaction == "audit"
	"auditor" in roles
}

# Administrators: key and admin operations (interaction "admin").
grants contains {"rule": "admin", "any_patient": true, "patients": [], "organizations": [], "non_compartment": true} if {
	interaction == "admin"
	"admin" in roles
}

# Clinicians (user/ scopes): patients of their organization.
grants contains {"rule": "clinician-organization", "any_patient": false, "patients": [], "organizations": [input.subject.organization], "non_compartment": false} if {
	clinician
	input.subject.organization != ""
}

# Clinicians: patients whose care team they are on.
grants contains {"rule": "clinician-care-team", "any_patient": false, "patients": input.subject.care_team, "organizations": [], "non_compartment": false} if {
	clinician
	count(input.subject.care_team) > 0
}

# Clinicians: resources outside every patient compartment (Practitioner,
# Organization, Medication, ...).
grants contains {"rule": "clinician-non-compartment", "any_patient": false, "patients": [], "organizations": [], "non_compartment": true} if clinician

default clinician := false

clinician if {
	"clinician" in roles
	input.subject.kind == "user"
	app_interaction
	scoped
}

# Backend services (SMART system/ scopes, client credentials, no
# exclusive role): every patient, within their scopes and the label rules.
grants contains {"rule": "backend-service", "any_patient": true, "patients": [], "organizations": [], "non_compartment": true} if {
	input.subject.kind == "system"
	app_interaction
	scoped
}

# Patient-facing apps (patient/ scopes and a launch patient): their own
# compartment, and non-compartment resources except Group (a Group lists
# other patients).
grants contains {"rule": "patient-app", "any_patient": false, "patients": [input.subject.patient], "organizations": [], "non_compartment": patient_non_compartment} if {
	input.subject.kind == "patient"
	input.subject.patient != ""
	app_interaction
	scoped
}

patient_hidden_types := {"Group"}

default patient_non_compartment := false

patient_non_compartment if not input.action.type in patient_hidden_types

# EMR senders: writes of their own sources only (see `sources`), in any
# patient's compartment. HL7 v2 and pushed bundles need no SMART scope; a
# FHIR write does when the credential carries scopes (a mutual-TLS identity
# carries none and is bounded by its sources alone).
emr_writes := {"create", "update", "transaction", "hl7", "push"}

grants contains {"rule": "emr-source", "any_patient": true, "patients": [], "organizations": [], "non_compartment": true} if {
	is_emr
	interaction in emr_writes
	count(input.subject.sources) > 0
	emr_scoped
}

deny contains "emr-no-sources" if {
	is_emr
	interaction in emr_writes
	count(input.subject.sources) == 0
}

emr_scoped if interaction in ingest

emr_scoped if count(input.subject.scopes) == 0

emr_scoped if scoped

# ---------------------------------------------------------------------------
# The filter: one type, one interaction, any resource.

default type_allowed := false

type_allowed if {
	count(deny) == 0
	count(grants) > 0
}

# EMR senders are bounded by their sources; everyone else by nothing.
default any_source := true

any_source := false if is_emr

sources := input.subject.sources if is_emr

else := []

type_reasons := sort({g.rule | some g in grants}) if type_allowed

else := sort(deny) if count(deny) > 0

else := ["no-grant"]

filter := {
	"allow": type_allowed,
	"reasons": type_reasons,
	"break_glass": break_glass_active,
	"grants": [g | some g in grants],
	"any_patient": any_patient,
	"patients": sort({p | some g in grants; some p in g.patients}),
	"organizations": sort({o | some g in grants; some o in g.organizations}),
	"non_compartment": non_compartment,
	"exclude_labels": sort(exclude_labels),
	"params": params,
	"any_source": any_source,
	"sources": sort(sources),
}

default any_patient := false

any_patient if {
	some g in grants
	g.any_patient
}

default non_compartment := false

non_compartment if {
	some g in grants
	g.non_compartment
}

# ---------------------------------------------------------------------------
# The decision for one resource: reads the filter (passed in, or computed),
# the action and the resource only.

f := input.filter if input.filter

else := filter

res := input.resource

# A Patient is always in its own compartment; other resources in those of
# the Patients their "patient" search parameter refers to.
default compartment_resource := false

compartment_resource if res.type == "Patient"

compartment_resource if count(res.patients) > 0

res_patients contains p if {
	some p in res.patients
	p != ""
}

res_patients contains res.id if {
	res.type == "Patient"
	res.id != ""
}

res_organizations contains o if {
	some o in res.patient_organizations
	o != ""
}

res_organizations contains res.organization if {
	res.type == "Patient"
	res.organization != ""
}

admitting contains g.rule if {
	not compartment_resource
	some g in f.grants
	g.non_compartment
}

admitting contains g.rule if {
	compartment_resource
	some g in f.grants
	g.any_patient
}

admitting contains g.rule if {
	compartment_resource
	some g in f.grants
	some p in g.patients
	p in res_patients
}

admitting contains g.rule if {
	compartment_resource
	some g in f.grants
	some o in g.organizations
	o in res_organizations
}

resource_denials contains "type-mismatch" if res.type != input.action.type

resource_denials contains "compartment" if count(admitting) == 0

resource_denials contains "source-not-owned" if {
	not f.any_source
	not res.source in f.sources
}

decision := {"allow": false, "reasons": f.reasons, "break_glass": f.break_glass} if not f.allow

else := {"allow": false, "reasons": sort(resource_denials), "break_glass": f.break_glass} if count(resource_denials) > 0

else := {"allow": true, "reasons": sort(admitting), "break_glass": f.break_glass}
