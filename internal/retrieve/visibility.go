package retrieve

import (
	"strconv"
	"strings"
)

// Visibility is what an access decision lets one request see of a resource
// type, in the terms the index can test (see authz.Filter). The zero value
// hides everything; Unrestricted shows everything.
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
}

// Unrestricted is the visibility of a request that may see everything.
var Unrestricted = &Visibility{AnyPatient: true, NonCompartment: true}

// condition renders the visibility as SQL over the current-version row
// aliased a (columns rid, tenant, type, id), appending its arguments. It
// reads the same index rows that search uses: the "patient" reference
// parameter for compartments, Patient "organization" for the managing
// organization, and "_security" tokens for labels.
func (v *Visibility) condition(a string, args *[]any) string {
	if v == nil {
		return "FALSE"
	}
	bind := func(x any) string {
		*args = append(*args, x)
		return "$" + strconv.Itoa(len(*args))
	}
	var parts []string
	if !v.AnyPatient {
		// The Patients a request may see: listed, or managed by a listed
		// organization.
		var pats []string
		if len(v.Patients) > 0 {
			pats = append(pats, "SELECT unnest("+bind(v.Patients)+"::text[])")
		}
		if len(v.Organizations) > 0 {
			pats = append(pats, `SELECT p.id FROM resources p JOIN idx_reference o ON o.rid = p.rid
				WHERE p.tenant = `+a+`.tenant AND p.type = 'Patient' AND NOT p.deleted
					AND o.param = 'organization' AND o.target_type = 'Organization' AND o.target_id = ANY(`+bind(v.Organizations)+`::text[])`)
		}
		var ors []string
		if len(pats) > 0 {
			set := "(" + strings.Join(pats, " UNION ") + ")"
			ors = append(ors,
				"("+a+".type = 'Patient' AND "+a+".id IN "+set+")",
				"EXISTS (SELECT 1 FROM idx_reference c WHERE c.rid = "+a+".rid AND c.param = 'patient' AND c.target_type = 'Patient' AND c.target_id IN "+set+")")
		}
		if v.NonCompartment {
			ors = append(ors, "("+a+".type <> 'Patient' AND NOT EXISTS (SELECT 1 FROM idx_reference c WHERE c.rid = "+a+".rid AND c.param = 'patient'))")
		}
		if len(ors) == 0 {
			return "FALSE"
		}
		parts = append(parts, "("+strings.Join(ors, " OR ")+")")
	} else if !v.NonCompartment {
		parts = append(parts, "("+a+".type = 'Patient' OR EXISTS (SELECT 1 FROM idx_reference c WHERE c.rid = "+a+".rid AND c.param = 'patient'))")
	}
	if len(v.ExcludeLabels) > 0 {
		parts = append(parts, "NOT EXISTS (SELECT 1 FROM idx_token s WHERE s.rid = "+a+".rid AND s.param = '_security' AND s.code = ANY("+bind(v.ExcludeLabels)+"::text[]))")
	}
	if len(parts) == 0 {
		return "TRUE"
	}
	return strings.Join(parts, " AND ")
}
