package phi

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/goccy/go-yaml"

	"github.com/fhirgate/fhirgate/internal/search"
	"github.com/fhirgate/fhirgate/internal/spec"
)

// Policy says which elements are PHI. It is loaded from policies/phi.yaml
// (see that file for the format) and is immutable once loaded.
type Policy struct {
	// Version of the file format.
	Version int
	// datatypes whose every occurrence is PHI.
	datatypes map[string]bool
	// members maps a structure name (resource type or datatype) to its PHI
	// JSON member names: a choice element "deceased[x]" puts every
	// "deceased<Type>"; "valueString" only that one.
	members map[string]map[string]bool
	exts    map[string]bool
	// TokenBytes is the length of blind-index tokens.
	TokenBytes int
	// MinYear bounds open date ranges on blind-indexed dates.
	MinYear int
	// unblinded lists search parameters (codes) that read PHI but are not
	// blind-indexed: searching them under encryption is refused.
	unblinded map[string]bool
	// Digest identifies the policy text (for status output).
	Digest string
}

type policyFile struct {
	Version          int                 `yaml:"version"`
	Datatypes        []string            `yaml:"datatypes"`
	DatatypeElements map[string][]string `yaml:"datatype_elements"`
	Resources        map[string][]string `yaml:"resources"`
	Extensions       []string            `yaml:"extensions"`
	BlindIndex       struct {
		TokenBytes int      `yaml:"token_bytes"`
		MinYear    int      `yaml:"min_year"`
		Refuse     []string `yaml:"refuse"`
	} `yaml:"blind_index"`
}

// LoadPolicy reads and checks a policy file.
func LoadPolicy(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("phi policy: %w", err)
	}
	p, err := ParsePolicy(b)
	if err != nil {
		return nil, fmt.Errorf("phi policy %s: %w", path, err)
	}
	return p, nil
}

// ParsePolicy parses and checks a policy. Every type, element and setting
// is checked against FHIR R4, so a typo is an error naming it rather than
// an element silently left in plaintext.
func ParsePolicy(b []byte) (*Policy, error) {
	var f policyFile
	if err := yaml.UnmarshalWithOptions(b, &f, yaml.Strict()); err != nil {
		return nil, fmt.Errorf("%s", yaml.FormatError(err, false, true))
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("version: %d is not a known policy format (want 1)", f.Version)
	}
	p := &Policy{
		Version:    f.Version,
		datatypes:  map[string]bool{},
		members:    map[string]map[string]bool{},
		exts:       map[string]bool{},
		TokenBytes: f.BlindIndex.TokenBytes,
		MinYear:    f.BlindIndex.MinYear,
	}
	if p.TokenBytes == 0 {
		p.TokenBytes = 12
	}
	if p.TokenBytes < 8 || p.TokenBytes > 32 {
		return nil, fmt.Errorf("blind_index.token_bytes: %d is outside 8..32", p.TokenBytes)
	}
	if p.MinYear == 0 {
		p.MinYear = 1850
	}
	if p.MinYear < 1 || p.MinYear > 2100 {
		return nil, fmt.Errorf("blind_index.min_year: %d is outside 1..2100", p.MinYear)
	}
	p.unblinded = map[string]bool{}
	for _, code := range f.BlindIndex.Refuse {
		if !search.KnownCode(code) {
			return nil, fmt.Errorf("blind_index.refuse: %q is not a FHIR R4 search parameter", code)
		}
		p.unblinded[code] = true
	}
	for _, t := range f.Datatypes {
		st, ok := spec.StructOf(t)
		if !ok || st.Kind != spec.KindComplex {
			return nil, fmt.Errorf("datatypes: %q is not a FHIR R4 complex datatype", t)
		}
		p.datatypes[t] = true
	}
	add := func(section, owner string, names []string, wantKind func(spec.Kind) bool) error {
		st, ok := spec.StructOf(owner)
		if !ok || !wantKind(st.Kind) {
			return fmt.Errorf("%s: %q is not a FHIR R4 %s", section, owner, strings.TrimSuffix(section, "s"))
		}
		if p.members[owner] == nil {
			p.members[owner] = map[string]bool{}
		}
		for _, n := range names {
			var jsonNames []string
			if name, choice := strings.CutSuffix(n, "[x]"); choice {
				for _, el := range st.Elements {
					if el.Name == name && el.Choice {
						jsonNames = el.JSONNames()
					}
				}
			} else if _, ok := st.Member(n); ok {
				jsonNames = []string{n}
			}
			if len(jsonNames) == 0 {
				return fmt.Errorf("%s.%s: %q is not an element of %s", section, owner, n, owner)
			}
			for _, j := range jsonNames {
				p.members[owner][j] = true
			}
		}
		return nil
	}
	for _, owner := range sortedKeys(f.DatatypeElements) {
		if err := add("datatype_elements", owner, f.DatatypeElements[owner], func(k spec.Kind) bool { return k == spec.KindComplex }); err != nil {
			return nil, err
		}
	}
	for _, owner := range sortedKeys(f.Resources) {
		if err := add("resources", owner, f.Resources[owner], func(k spec.Kind) bool { return k == spec.KindResource }); err != nil {
			return nil, err
		}
	}
	for _, u := range f.Extensions {
		if !strings.Contains(u, "://") && !strings.HasPrefix(u, "urn:") {
			return nil, fmt.Errorf("extensions: %q is not an absolute URL", u)
		}
		p.exts[u] = true
	}
	p.Digest = digest(b)
	return p, nil
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// isPHI reports whether JSON member name of structure owner, whose value
// has type typ, is PHI.
func (p *Policy) isPHI(owner, name, typ string) bool {
	return p.datatypes[typ] || p.members[owner][name]
}

// Datatype reports whether every occurrence of datatype t is PHI.
func (p *Policy) Datatype(t string) bool { return p.datatypes[t] }

// Extension reports whether an extension with this URL is PHI.
func (p *Policy) Extension(url string) bool { return p.exts[url] }

// ElementPHI reports whether the element at a path of member names under a
// resource type (["name","family"], ["birthDate"]) lies in PHI: the
// element itself or one of its ancestors is PHI. Search parameters reading
// such elements are served from blind indexes.
func (p *Policy) ElementPHI(resourceType string, steps []string) bool {
	st, ok := spec.StructOf(resourceType)
	for _, name := range steps {
		if !ok || st == nil {
			return false
		}
		m, found := st.Member(name)
		if !found {
			return false
		}
		if p.isPHI(st.Name, name, m.Type) {
			return true
		}
		st, ok = m.Struct, m.Struct != nil
	}
	return false
}

func digest(b []byte) string {
	sum := sha256.Sum256(bytes.TrimSpace(b))
	return hex.EncodeToString(sum[:8])
}
