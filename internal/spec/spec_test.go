package spec

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLookup(t *testing.T) {
	t.Parallel()
	tests := []struct {
		path string
		want Element
	}{
		{"Observation.value[x]", Element{Path: "Observation.value[x]", Name: "value", Choice: true, Max: 1,
			Types: []string{"Quantity", "CodeableConcept", "string", "boolean", "integer", "Range", "Ratio", "SampledData", "time", "dateTime", "Period"}}},
		{"Observation.status", Element{Path: "Observation.status", Name: "status", Min: 1, Max: 1, Types: []string{"code"}}},
		{"Observation.subject", Element{Path: "Observation.subject", Name: "subject", Max: 1, Types: []string{"Reference"},
			TargetProfiles: []string{"Patient", "Group", "Device", "Location"}}},
		{"Patient.name", Element{Path: "Patient.name", Name: "name", Max: -1, Types: []string{"HumanName"}}},
		{"HumanName.given", Element{Path: "HumanName.given", Name: "given", Max: -1, Types: []string{"string"}}},
		// FHIRPath system types are normalised to FHIR type names.
		{"Patient.id", Element{Path: "Patient.id", Name: "id", Max: 1, Types: []string{"string"}}},
		{"Extension.url", Element{Path: "Extension.url", Name: "url", Min: 1, Max: 1, Types: []string{"uri"}}},
		{"Patient.contained", Element{Path: "Patient.contained", Name: "contained", Max: -1, Types: []string{"Resource"}}},
		{"Questionnaire.item.item", Element{Path: "Questionnaire.item.item", Name: "item", Max: -1, Types: []string{"BackboneElement"}, ContentRef: "Questionnaire.item"}},
		{"Bundle.entry.response.outcome", Element{Path: "Bundle.entry.response.outcome", Name: "outcome", Max: 1, Types: []string{"OperationOutcome"}}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			t.Parallel()
			got, ok := Lookup(tt.path)
			if !ok {
				t.Fatalf("Lookup(%q) not found", tt.path)
			}
			if diff := cmp.Diff(tt.want, *got, cmp.AllowUnexported(Element{}), cmp.FilterPath(func(p cmp.Path) bool {
				return p.Last().String() == ".jsonNames"
			}, cmp.Ignore())); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	if _, ok := Lookup("Observation.valueQuantity"); ok {
		t.Error("Lookup takes definition paths, not JSON names")
	}
}

func names(els []*Element) []string {
	var out []string
	for _, e := range els {
		out = append(out, e.Name)
	}
	return out
}

func TestChildren(t *testing.T) {
	t.Parallel()
	tests := []struct {
		typeOrPath string
		want       []string
	}{
		{"Patient", []string{"id", "meta", "implicitRules", "language", "text", "contained", "extension", "modifierExtension",
			"identifier", "active", "name", "telecom", "gender", "birthDate", "deceased", "address", "maritalStatus",
			"multipleBirth", "photo", "contact", "communication", "generalPractitioner", "managingOrganization", "link"}},
		{"Binary", []string{"id", "meta", "implicitRules", "language", "contentType", "securityContext", "data"}},
		{"Resource", []string{"id", "meta", "implicitRules", "language"}},
		{"Patient.link", []string{"id", "extension", "modifierExtension", "other", "type"}},
		{"Questionnaire.item.item", names(Children("Questionnaire.item"))},
		{"Observation.subject", []string{"id", "extension", "reference", "type", "identifier", "display"}},
		{"HumanName", []string{"id", "extension", "use", "text", "family", "given", "prefix", "suffix", "period"}},
		{"string", []string{"id", "extension"}},
		{"NoSuchType", nil},
	}
	for _, tt := range tests {
		t.Run(tt.typeOrPath, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tt.want, names(Children(tt.typeOrPath))); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestKinds(t *testing.T) {
	t.Parallel()
	rt := ResourceTypes()
	if !slices.IsSorted(rt) || len(rt) != 146 {
		t.Errorf("ResourceTypes: %d types, sorted %v; want 146 sorted", len(rt), slices.IsSorted(rt))
	}
	for _, tt := range []struct {
		name                      string
		resource, data, primitive bool
	}{
		{"Patient", true, false, false},
		{"Bundle", true, false, false},
		{"Resource", false, false, false},
		{"DomainResource", false, false, false},
		{"MetadataResource", false, false, false},
		{"HumanName", false, true, false},
		{"SimpleQuantity", false, false, false}, // a profile, not a type
		{"Element", false, true, false},
		{"dateTime", false, true, true},
		{"xhtml", false, true, true},
		{"patient", false, false, false},
	} {
		if got := IsResourceType(tt.name); got != tt.resource {
			t.Errorf("IsResourceType(%q) = %v", tt.name, got)
		}
		if got := IsDataType(tt.name); got != tt.data {
			t.Errorf("IsDataType(%q) = %v", tt.name, got)
		}
		if got := IsPrimitive(tt.name); got != tt.primitive {
			t.Errorf("IsPrimitive(%q) = %v", tt.name, got)
		}
	}
}

func TestMembers(t *testing.T) {
	t.Parallel()
	obs, ok := StructOf("Observation")
	if !ok || obs.Kind != KindResource {
		t.Fatal("StructOf(Observation)")
	}
	tests := []struct {
		json, typ, structName string
		primitive             bool
	}{
		{"valueQuantity", "Quantity", "Quantity", false},
		{"valueDateTime", "dateTime", "dateTime", true},
		{"status", "code", "code", true},
		{"component", "BackboneElement", "Observation.component", false},
		{"contained", "Resource", "Resource", false},
	}
	for _, tt := range tests {
		m, ok := obs.Member(tt.json)
		if !ok {
			t.Errorf("Member(%q) not found", tt.json)
			continue
		}
		if m.Type != tt.typ || m.Struct.Name != tt.structName || m.Primitive != tt.primitive {
			t.Errorf("Member(%q) = type %s struct %s primitive %v", tt.json, m.Type, m.Struct.Name, m.Primitive)
		}
	}
	for _, bad := range []string{"value", "value[x]", "valueReference", "_status", "resourceType"} {
		if _, ok := obs.Member(bad); ok {
			t.Errorf("Member(%q) found", bad)
		}
	}
	q, _ := StructOf("Questionnaire.item")
	if m, _ := q.Member("item"); m.Struct != q {
		t.Error("Questionnaire.item.item does not resolve to Questionnaire.item")
	}
	el, _ := Lookup("MedicationRequest.medication[x]")
	if diff := cmp.Diff([]string{"medicationCodeableConcept", "medicationReference"}, el.JSONNames()); diff != "" {
		t.Errorf("JSONNames (-want +got):\n%s", diff)
	}
	var req []string
	for _, e := range obs.Required {
		req = append(req, e.Name)
	}
	if diff := cmp.Diff([]string{"status", "code"}, req); diff != "" {
		t.Errorf("Observation required (-want +got):\n%s", diff)
	}
}

// TestTableUpToDate regenerates the table from the shared definitions and
// compares it with the embedded one.
func TestTableUpToDate(t *testing.T) {
	if testing.Short() {
		t.Skip("regenerating parses 37 MB of definitions")
	}
	defs := "../../../shared/fhir-r4"
	if _, err := os.Stat(filepath.Join(defs, "profiles-resources.json")); err != nil {
		t.Skipf("shared FHIR definitions not present at %s: %v", defs, err)
	}
	out := filepath.Join(t.TempDir(), "r4.tsv.gz")
	cmd := exec.Command("go", "run", "./gen", "-defs", defs, "-out", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gen: %v\n%s", err, b)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(unzip(t, got), unzip(t, table)) {
		t.Error("r4.tsv.gz is stale: run go generate ./internal/spec")
	}
}

func unzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func BenchmarkLoad(b *testing.B) {
	for b.Loop() {
		if _, err := load(table); err != nil {
			b.Fatal(err)
		}
	}
}
