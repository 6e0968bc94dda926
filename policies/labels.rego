# Security labels (meta.security codes): confidentiality R (restricted) and
# V (very restricted) need role "restricted"; sensitivity HIV, PSY and ETH
# need role "restricted" or break-glass; SUD (42 CFR Part 2 substance-use
# records) needs the subject's consent "42CFRPart2" or break-glass.
#
# Denial reasons never name the label: that a patient has an HIV- or
# SUD-labeled record is itself sensitive.
package fhirgate.authz

confidentiality_labels := {"R", "V"}

sensitivity_labels := {"HIV", "PSY", "ETH"}

part2_labels := {"SUD"}

# Labels hold for clinicians, patient apps and break-glass users; EMR
# senders write labeled data of their sources, and the audit and admin
# interactions carry no clinical data.
label_rules_apply if app_interaction

exclude_labels contains l if {
	label_rules_apply
	some l in confidentiality_labels
	not "restricted" in roles
}

exclude_labels contains l if {
	label_rules_apply
	some l in sensitivity_labels
	not "restricted" in roles
	not break_glass_active
}

exclude_labels contains l if {
	label_rules_apply
	some l in part2_labels
	not "42CFRPart2" in input.subject.consents
	not break_glass_active
}

resource_denials contains "label-restricted" if {
	some l in res.security
	l in f.exclude_labels
	l in confidentiality_labels
}

resource_denials contains "label-sensitive" if {
	some l in res.security
	l in f.exclude_labels
	not l in confidentiality_labels
}
