package retrieve

import (
	"sort"
	"strconv"
	"strings"

	"github.com/fhirgate/fhirgate/internal/search"
)

// Visibility is what an access decision lets one request see of a
// resource type (search.Visibility, the terms the index can test).
type Visibility = search.Visibility

// Unrestricted is the visibility of a request that may see everything.
var Unrestricted = &Visibility{AnyPatient: true, NonCompartment: true, AnySource: true}

// condition renders the visibility as SQL over the current-version row
// aliased a (columns rid, tenant, type, id), appending its arguments. It
// reads the same index rows that search uses: the "patient" reference
// parameter for compartments, Patient "organization" for the managing
// organization, and "_security" tokens for labels.
func condition(v *Visibility, a string, args *[]any) string {
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
	if !v.AnySource {
		parts = append(parts, "EXISTS (SELECT 1 FROM idx_uri u WHERE u.rid = "+a+".rid AND u.param = '_source' AND u.uri = ANY("+bind(v.Sources)+"::text[]))")
	}
	keys := make([]string, 0, len(v.Params))
	for k := range v.Params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, val := range v.Params[k] {
			var ors []string
			for _, alt := range strings.Split(val, ",") {
				system, code, hasBar := strings.Cut(alt, "|")
				switch {
				case !hasBar:
					ors = append(ors, "x.code = "+bind(alt))
				case system == "":
					ors = append(ors, "(x.system = '' AND x.code = "+bind(code)+")")
				case code == "":
					ors = append(ors, "x.system = "+bind(system))
				default:
					ors = append(ors, "(x.system = "+bind(system)+" AND x.code = "+bind(code)+")")
				}
			}
			parts = append(parts, "EXISTS (SELECT 1 FROM idx_token x WHERE x.rid = "+a+".rid AND x.param = "+bind(k)+" AND ("+strings.Join(ors, " OR ")+"))")
		}
	}
	if len(v.ExcludeLabels) > 0 {
		parts = append(parts, "NOT EXISTS (SELECT 1 FROM idx_token s WHERE s.rid = "+a+".rid AND s.param = '_security' AND s.code = ANY("+bind(v.ExcludeLabels)+"::text[]))")
	}
	if len(parts) == 0 {
		return "TRUE"
	}
	return strings.Join(parts, " AND ")
}
