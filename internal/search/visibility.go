package search

import "net/url"

// Visibility is what an access decision lets one request see of a resource
// type, in the terms the index can test: authz.Filter carries it from the
// policy, and the read path (retrieve) turns it into SQL over the index.
// The zero value hides everything.
type Visibility struct {
	// AnyPatient: no restriction by patient compartment.
	AnyPatient bool
	// Patients and Organizations: else a resource is visible when it is in
	// the compartment of one of Patients, or of a Patient whose
	// managingOrganization is one of Organizations (Patients themselves
	// included).
	Patients      []string
	Organizations []string
	// NonCompartment: resources outside every patient compartment
	// (Practitioner, Organization, Medication...) are visible.
	NonCompartment bool
	// ExcludeLabels hides resources carrying any of these meta.security
	// codes.
	ExcludeLabels []string
	// AnySource, else only resources whose meta.source is one of Sources.
	AnySource bool
	Sources   []string
	// Params restricts to resources matching token conditions (granular
	// SMART scopes): for every key, every value's comma-separated
	// alternatives ("code", "system|code", "|code", "system|") must match
	// one of the resource's index rows for that parameter.
	Params url.Values
}
