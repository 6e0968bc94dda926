// Package search implements FHIR R4 search: the table of every R4
// SearchParameter compiled into path programs, the extraction of search
// index entries from resource content, and the translation of search
// requests into SQL conditions over the store's index tables.
//
// It never runs queries, opens connections or logs: callers own the
// database and the tenant/type filter. It must never put request values
// into SQL text (every value is a bind argument) and never quote values in
// errors or logs, since search values and index entries may hold PHI.
package search

import "sort"

// Type is a search parameter type.
type Type uint8

// Search parameter types, as in SearchParameter.type.
const (
	TypeNumber Type = iota + 1
	TypeDate
	TypeString
	TypeToken
	TypeReference
	TypeComposite
	TypeQuantity
	TypeURI
	TypeSpecial
)

var typeNames = [...]string{"", "number", "date", "string", "token", "reference", "composite", "quantity", "uri", "special"}

func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return "unknown"
}

// Definition is one R4 SearchParameter as generated from the specification.
type Definition struct {
	Code     string
	Type     Type
	Base     []string
	Target   []string
	Programs []Program // one per base type
}

// Program is a definition's expression compiled for one base type.
type Program struct {
	Base        string
	Paths       []Path
	Unsupported string // why the expression could not be compiled; "" when Paths are usable
}

// Path selects elements: each step names a JSON member, optionally keeping
// only elements whose child Key has the string value Value.
type Path struct {
	Steps  []Step
	Leaf   string // FHIR type of the selected elements
	Target string // for references: only targets of this resource type
}

// Step is one member name in a Path.
type Step struct {
	Name, Key, Value string
}

// Definitions returns the generated table of all R4 search parameters.
// The result must not be modified.
func Definitions() []Definition { return definitions }

// Parameter is a search parameter as it applies to one resource type.
type Parameter struct {
	Code    string
	Type    Type
	Targets []string // reference target types
	// Unsupported is why searching by this parameter is not possible ("" when it is).
	Unsupported string
	paths       []compiledPath
	column      string // "id" or "last_updated": served from the resources table
}

type compiledPath struct {
	steps    []Step
	leafType string // FHIR type of the selected elements
	leaf     leafKind
	target   string
}

// registry maps resource type -> code -> parameter.
var registry = buildRegistry()

// extractable lists, per resource type, the parameters with index entries.
var extractable = map[string][]*Parameter{}

func buildRegistry() map[string]map[string]*Parameter {
	reg := make(map[string]map[string]*Parameter, len(resourceTypes))
	for t := range resourceTypes {
		reg[t] = map[string]*Parameter{}
	}
	for di := range definitions {
		d := &definitions[di]
		for _, prog := range d.Programs {
			var types []string
			switch prog.Base {
			case "Resource":
				types = allResourceTypes
			case "DomainResource":
				for t, b := range resourceTypes {
					if b == "DomainResource" {
						types = append(types, t)
					}
				}
			default:
				types = []string{prog.Base}
			}
			for _, t := range types {
				m := reg[t]
				if m == nil {
					continue
				}
				p := m[d.Code]
				if p == nil {
					p = &Parameter{Code: d.Code, Type: d.Type, Targets: d.Target}
					m[d.Code] = p
				}
				if prog.Unsupported != "" {
					p.Unsupported = prog.Unsupported
					continue
				}
				for _, path := range prog.Paths {
					p.paths = append(p.paths, compiledPath{steps: path.Steps, leafType: path.Leaf, leaf: leafKinds[path.Leaf], target: path.Target})
				}
			}
		}
	}
	for t, m := range reg {
		// _id and _lastUpdated are served from the resources table.
		m["_id"] = &Parameter{Code: "_id", Type: TypeToken, column: "id"}
		m["_lastUpdated"] = &Parameter{Code: "_lastUpdated", Type: TypeDate, column: "last_updated"}
		var list []*Parameter
		for _, p := range m {
			if p.Unsupported == "" && p.column == "" && len(p.paths) > 0 {
				list = append(list, p)
			}
		}
		sort.Slice(list, func(i, j int) bool { return list[i].Code < list[j].Code })
		extractable[t] = list
	}
	return reg
}

// Lookup returns the parameter code of resourceType, or nil.
func Lookup(resourceType, code string) *Parameter {
	return registry[resourceType][code]
}

// KnownCode reports whether some resource type has a search parameter
// with this code (for checking configuration).
func KnownCode(code string) bool {
	for _, m := range registry {
		if _, ok := m[code]; ok {
			return true
		}
	}
	return false
}

// Parameters returns the parameters of resourceType sorted by code,
// including unsupported ones (see Parameter.Unsupported), for the
// CapabilityStatement.
func Parameters(resourceType string) []*Parameter {
	m := registry[resourceType]
	out := make([]*Parameter, 0, len(m))
	for _, p := range m {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Code < out[j].Code })
	return out
}

// IsResourceType reports whether t is a concrete R4 resource type.
func IsResourceType(t string) bool {
	_, ok := resourceTypes[t]
	return ok
}
