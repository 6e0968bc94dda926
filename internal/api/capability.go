package api

import (
	"encoding/json"
	"sort"

	"github.com/fhirgate/fhirgate/internal/search"
	"github.com/fhirgate/fhirgate/internal/spec"
)

// Version is the gateway's version, set at build time.
var Version = "dev"

// capabilityStatement states exactly what the API supports: every R4
// resource type with the interactions implemented for all of them, and per
// type only the search parameters the index can serve.
func capabilityStatement() []byte {
	type param struct {
		Name string `json:"name"`
		Type string `json:"type"`
	}
	type interaction struct {
		Code string `json:"code"`
	}
	type resource struct {
		Type              string        `json:"type"`
		Interaction       []interaction `json:"interaction"`
		Versioning        string        `json:"versioning"`
		ReadHistory       bool          `json:"readHistory"`
		UpdateCreate      bool          `json:"updateCreate"`
		ConditionalCreate bool          `json:"conditionalCreate"`
		ConditionalRead   string        `json:"conditionalRead"`
		ConditionalUpdate bool          `json:"conditionalUpdate"`
		ConditionalDelete string        `json:"conditionalDelete"`
		SearchInclude     []string      `json:"searchInclude,omitempty"`
		SearchRevInclude  []string      `json:"searchRevInclude,omitempty"`
		SearchParam       []param       `json:"searchParam,omitempty"`
	}
	ints := []interaction{{"read"}, {"vread"}, {"update"}, {"delete"}, {"history-instance"},
		{"history-type"}, {"create"}, {"search-type"}}
	// revincludes[T] lists "Source:param" for every reference parameter
	// that can point at T.
	revincludes := map[string][]string{}
	for _, src := range spec.ResourceTypes() {
		for _, p := range search.Parameters(src) {
			if p.Unsupported != "" || p.Type != search.TypeReference {
				continue
			}
			for _, target := range p.Targets {
				revincludes[target] = append(revincludes[target], src+":"+p.Code)
			}
		}
	}
	var resources []resource
	for _, t := range spec.ResourceTypes() {
		r := resource{Type: t, Interaction: ints, Versioning: "versioned-update", ReadHistory: true,
			UpdateCreate: true, ConditionalCreate: true, ConditionalRead: "full-support",
			ConditionalUpdate: true, ConditionalDelete: "single"}
		var refs []string
		for _, p := range search.Parameters(t) {
			if p.Unsupported != "" {
				continue
			}
			r.SearchParam = append(r.SearchParam, param{Name: p.Code, Type: p.Type.String()})
			if p.Type == search.TypeReference {
				refs = append(refs, t+":"+p.Code)
			}
		}
		sort.Slice(r.SearchParam, func(i, j int) bool { return r.SearchParam[i].Name < r.SearchParam[j].Name })
		sort.Strings(refs)
		r.SearchInclude = refs
		r.SearchRevInclude = revincludes[t]
		sort.Strings(r.SearchRevInclude)
		resources = append(resources, r)
	}
	cs := map[string]any{
		"resourceType": "CapabilityStatement",
		"status":       "active",
		"date":         "2026-11-26",
		"kind":         "instance",
		"software":     map[string]string{"name": "fhirgate", "version": Version},
		"fhirVersion":  "4.0.1",
		"format":       []string{"application/fhir+json", "json"},
		"rest": []map[string]any{{
			"mode":          "server",
			"documentation": "Search supports token, string, date, reference, number, quantity and uri parameters; _count, _sort, _total, _include and _revinclude. Chained parameters, _has, composite parameters, _elements and PATCH are not supported.",
			"resource":      resources,
			"interaction":   []interaction{{"transaction"}, {"batch"}, {"history-system"}},
		}},
	}
	b, err := json.Marshal(cs)
	if err != nil {
		panic(err) // static content
	}
	return b
}
