# SMART on FHIR scopes limit the types and interactions of clinicians and
# patient-facing apps (and of EMR senders whose credential carries scopes).
#
# internal/authz turns v1 scopes (.read, .write, .*) and v2 letters
# (.cruds) into the booleans c, r, u, d, s, and drops granular scopes it
# cannot evaluate exactly (parameters that are not token parameters of the
# type, modifiers, escapes), so a scope here is always exact.
package fhirgate.authz

# The letters each interaction needs (any one of them).
letters := {
	"read": {"r"},
	"vread": {"r"},
	"history": {"r"},
	"search": {"s"},
	"create": {"c"},
	"update": {"u"},
	"delete": {"d"},
	"transaction": {"c", "u", "d"},
}

# The scope context each kind of subject uses: user/ for clinicians,
# patient/ for patient-facing apps, system/ for services and EMR senders.
scope_contexts := {"user": "user", "patient": "patient", "system": "system", "emr": "system"}

# A transaction as a whole (type "" or "Bundle") needs some write scope;
# each of its entries is then authorized on its own.
whole_transaction if {
	interaction == "transaction"
	input.action.type in {"", "Bundle"}
}

scope_type_matches(s) if s.type == "*"

scope_type_matches(s) if s.type == input.action.type

scope_type_matches(_) if whole_transaction

granting_scopes contains s if {
	some s in input.subject.scopes
	s.context == scope_contexts[input.subject.kind]
	scope_type_matches(s)
	some l in letters[interaction]
	s[l] == true
}

default scoped := false

scoped if count(granting_scopes) > 0

needs_scope if app_interaction

needs_scope if {
	is_emr
	interaction in emr_writes
	not interaction in ingest
	count(input.subject.scopes) > 0
}

deny contains "scope-missing" if {
	needs_scope
	not scoped
}

# Granular scopes (v2 "patient/Observation.rs?category=laboratory"): the
# resources must also match the scope's search parameters. Several granting
# scopes are alternatives; one without parameters lifts the restriction.

unrestricted(s) if s.params == null

unrestricted(s) if {
	is_object(s.params)
	count(s.params) == 0
}

default some_unrestricted := false

some_unrestricted if {
	some s in granting_scopes
	unrestricted(s)
}

some_unrestricted if whole_transaction

restricting := [s.params | some s in granting_scopes; not unrestricted(s)]

# Alternatives on one parameter with one value each merge into that
# parameter's comma-separated value list (an OR in FHIR search).
merge_key := key if {
	keys := {k | some p in restricting; some k, _ in p}
	count(keys) == 1
	every p in restricting {
		count(p) == 1
		every _, vs in p {
			count(vs) == 1
		}
	}
	some key in keys
}

default params := null

params := restricting[0] if {
	not some_unrestricted
	count(restricting) == 1
}

params := {merge_key: [concat(",", sort(vals))]} if {
	not some_unrestricted
	count(restricting) > 1
	vals := {v | some p in restricting; some v in p[merge_key]}
}

# Alternatives that no single conjunction of parameters expresses: refused
# rather than widened.
deny contains "granular-scope-combination" if {
	not some_unrestricted
	count(restricting) > 1
	not merge_key
}

# Every parameter (and every repetition of it) must match; within a value,
# comma-separated alternatives are ORed. Token values: "code" (any system),
# "system|code", "|code" (no system), "system|" (any code of the system).
resource_denials contains "granular-scope" if {
	f.params != null
	not params_match
}

params_match if {
	every k, vs in f.params {
		every v in vs {
			value_matches(k, v)
		}
	}
}

value_matches(k, v) if {
	some alt in split(v, ",")
	some t in res.tokens
	t.param == k
	token_matches(alt, t)
}

token_matches(alt, t) if {
	not contains(alt, "|")
	t.code == alt
}

token_matches(alt, t) if {
	[system, code] := split(alt, "|")
	system == ""
	t.system == ""
	t.code == code
}

token_matches(alt, t) if {
	[system, code] := split(alt, "|")
	system != ""
	code == ""
	t.system == system
}

token_matches(alt, t) if {
	[system, code] := split(alt, "|")
	system != ""
	code != ""
	t.system == system
	t.code == code
}
