# Break-glass: a user with role "break-glass" who declares purpose of use
# ETREAT (emergency treatment) or BTG (break the glass) may reach any
# patient's compartment, and sensitivity labels (HIV, PSY, ETH, SUD) no
# longer hide resources. Confidentiality R and V still need role
# "restricted", and SMART scopes still limit the types and interactions:
# break-glass widens whose records, not what the app was granted. Every
# decision made under break-glass, allowed or denied, has break_glass set so
# the gateway flags and audits it.
package fhirgate.authz

break_glass_purposes := {"ETREAT", "BTG"}

grants contains {"rule": "break-glass", "any_patient": true, "patients": [], "organizations": [], "non_compartment": true} if {
	input.subject.purpose_of_use in break_glass_purposes
	"break-glass" in roles
	input.subject.kind == "user"
	app_interaction
	scoped
}

default break_glass_active := false

break_glass_active if {
	some g in grants
	g.rule == "break-glass"
}
