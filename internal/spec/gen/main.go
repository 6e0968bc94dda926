// Command gen turns the FHIR R4 StructureDefinition snapshots
// (profiles-resources.json, profiles-types.json) into the compact table
// that package spec embeds, so no binary parses 37 MB of JSON at start-up.
//
// The shared definitions are Medplum's copy of R4, which adds a few
// elements (Meta.project, Meta.author, ..., ObservationDefinition.publisher,
// Binary.url), reference targets (AuditEvent.source.observer) and the R4B
// SubscriptionStatus resource; gen drops them so the table is the base R4
// standard.
//
// Output format (one record a line, tab-separated, gzip-compressed):
//
//	T kind name          kind: r resource, a abstract resource, c complex datatype, p primitive
//	E path min max types targets contentRef
//
// types and targets are comma-separated; max is "*" or a number. Element
// lines follow the T line of the structure they belong to, in snapshot order.
package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

type bundle struct {
	Entry []struct {
		Resource json.RawMessage `json:"resource"`
	} `json:"entry"`
}

type structureDefinition struct {
	FHIRVersion string `json:"fhirVersion"`
	Type        string `json:"type"`
	Kind        string `json:"kind"`
	Abstract    bool   `json:"abstract"`
	Derivation  string `json:"derivation"`
	Snapshot    struct {
		Element []elementDefinition `json:"element"`
	} `json:"snapshot"`
}

type elementDefinition struct {
	ID               string `json:"id"`
	Path             string `json:"path"`
	Min              int    `json:"min"`
	Max              string `json:"max"`
	ContentReference string `json:"contentReference"`
	IsModifier       *bool  `json:"isModifier"`
	Type             []struct {
		Code      string `json:"code"`
		Extension []struct {
			URL      string `json:"url"`
			ValueURL string `json:"valueUrl"`
		} `json:"extension"`
		TargetProfile []string `json:"targetProfile"`
	} `json:"type"`
}

// fhirVersion is the only version whose definitions are kept: the Medplum
// copy of the definitions also carries a few later (R4B) resources.
const fhirVersion = "4.0.1"

// medplumAdditions are elements Medplum added to the R4 definitions that
// cannot be told apart by a missing isModifier.
var medplumAdditions = map[string]bool{
	"Binary.url": true,
}

// medplumTargets are reference targets Medplum added to R4 elements (its
// own Bot and ClientApplication, which are not FHIR types, are dropped
// because they name no R4 type).
var medplumTargets = map[string]map[string]bool{
	"AuditEvent.source.observer": {"Subscription": true},
}

const fhirTypeExt = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"

// systemTypes maps FHIRPath system types (used for the value of primitives,
// Element.id and Extension.url) to FHIR type names when no fhir-type
// extension says otherwise.
var systemTypes = map[string]string{
	"http://hl7.org/fhirpath/System.String":   "string",
	"http://hl7.org/fhirpath/System.Boolean":  "boolean",
	"http://hl7.org/fhirpath/System.Date":     "date",
	"http://hl7.org/fhirpath/System.DateTime": "dateTime",
	"http://hl7.org/fhirpath/System.Decimal":  "decimal",
	"http://hl7.org/fhirpath/System.Integer":  "integer",
	"http://hl7.org/fhirpath/System.Time":     "time",
}

func main() {
	defs := flag.String("defs", defaultPath("../../../shared/fhir-r4", "../shared/fhir-r4"), "folder holding profiles-resources.json and profiles-types.json")
	out := flag.String("out", defaultOut(), "output file")
	flag.Parse()
	if err := run(*defs, *out); err != nil {
		log.Fatal(err)
	}
}

// defaultPath returns the first candidate that exists, so the tool works
// both from the package folder (go generate) and from the repository root.
func defaultPath(candidates ...string) string {
	for _, c := range candidates {
		if _, err := os.Stat(c); err == nil {
			return c
		}
	}
	return candidates[0]
}

func defaultOut() string {
	if _, err := os.Stat("spec.go"); err == nil {
		return "r4.tsv.gz"
	}
	return filepath.Join("internal", "spec", "r4.tsv.gz")
}

func run(defs, out string) error {
	var sds []structureDefinition
	for _, f := range []string{"profiles-types.json", "profiles-resources.json"} {
		b, err := os.ReadFile(filepath.Join(defs, f))
		if err != nil {
			return err
		}
		var bun bundle
		if err := json.Unmarshal(b, &bun); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		for _, e := range bun.Entry {
			var head struct {
				ResourceType string `json:"resourceType"`
			}
			if err := json.Unmarshal(e.Resource, &head); err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			if head.ResourceType != "StructureDefinition" {
				continue
			}
			var sd structureDefinition
			if err := json.Unmarshal(e.Resource, &sd); err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			if sd.Derivation == "constraint" || sd.Kind == "logical" || sd.FHIRVersion != fhirVersion {
				continue // profiles, logical models, and Medplum's later-version additions
			}
			sds = append(sds, sd)
		}
	}
	sort.Slice(sds, func(i, j int) bool { return sds[i].Type < sds[j].Type })
	known := map[string]bool{}
	for _, sd := range sds {
		known[sd.Type] = true
	}

	var buf bytes.Buffer
	for _, sd := range sds {
		kind := "c"
		switch {
		case sd.Kind == "primitive-type":
			kind = "p"
		case sd.Kind == "resource" && sd.Abstract:
			kind = "a"
		case sd.Kind == "resource":
			kind = "r"
		}
		fmt.Fprintf(&buf, "T\t%s\t%s\n", kind, sd.Type)
		for _, el := range sd.Snapshot.Element[1:] {
			if strings.Contains(el.ID, ":") {
				continue // slices: none in the base spec, but never ours to model
			}
			if el.IsModifier == nil || medplumAdditions[el.Path] {
				continue // not R4: Medplum's additions (every R4 element states isModifier)
			}
			if kind == "p" && strings.HasSuffix(el.Path, ".value") {
				continue // a primitive's value is the JSON value itself, not a member
			}
			var types, targets []string
			for _, t := range el.Type {
				types = append(types, typeName(t.Code, t.Extension))
				for _, p := range t.TargetProfile {
					name := p[strings.LastIndexByte(p, '/')+1:]
					if known[name] && !medplumTargets[el.Path][name] {
						targets = append(targets, name)
					}
				}
			}
			fmt.Fprintf(&buf, "E\t%s\t%d\t%s\t%s\t%s\t%s\n", el.Path, el.Min, el.Max,
				strings.Join(types, ","), strings.Join(targets, ","), strings.TrimPrefix(el.ContentReference, "#"))
		}
	}

	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if err != nil {
		return err
	}
	if _, err := zw.Write(buf.Bytes()); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(out, gz.Bytes(), 0o644)
}

func typeName(code string, ext []struct {
	URL      string `json:"url"`
	ValueURL string `json:"valueUrl"`
}) string {
	if !strings.HasPrefix(code, "http://hl7.org/fhirpath/") {
		return code
	}
	for _, e := range ext {
		if e.URL == fhirTypeExt && e.ValueURL != "" {
			return e.ValueURL
		}
	}
	if t, ok := systemTypes[code]; ok {
		return t
	}
	return "string"
}
