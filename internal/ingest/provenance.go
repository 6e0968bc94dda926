package ingest

import (
	"encoding/json"
	"time"

	"github.com/fhirgate/fhirgate/internal/fhir"
)

// provenanceSpec says where a set of resources came from.
type provenanceSpec struct {
	ID            string
	Targets       []string // versioned references: Type/id/_history/n
	AgentSystem   string   // the source (sender, EMR) as an identifier
	Agent         string
	EntitySystem  string // the message or upload they came in
	Entity        string
	EntityDisplay string
	Assembler     string // what turned the input into FHIR (mapping version)
	At            time.Time
}

type identifier struct {
	System string `json:"system"`
	Value  string `json:"value"`
}

type reference struct {
	Reference  string      `json:"reference,omitempty"`
	Identifier *identifier `json:"identifier,omitempty"`
	Display    string      `json:"display,omitempty"`
}

// buildProvenance renders a Provenance resource: the source as author,
// the gateway's mapping as assembler, the message or upload as the source
// entity. It carries identifiers and versions, never clinical content.
func buildProvenance(p provenanceSpec) (*fhir.Resource, error) {
	tgt := make([]reference, len(p.Targets))
	for i, t := range p.Targets {
		tgt[i] = reference{Reference: t}
	}
	participant := func(code string) map[string]any {
		return map[string]any{"coding": []map[string]string{{
			"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": code}}}
	}
	doc := map[string]any{
		"resourceType": "Provenance",
		"id":           p.ID,
		"target":       tgt,
		"recorded":     fhir.FormatInstant(p.At),
		"activity": map[string]any{"coding": []map[string]string{{
			"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "UPDATE"}}},
		"agent": []map[string]any{
			{"type": participant("author"), "who": reference{Identifier: &identifier{p.AgentSystem, p.Agent}}},
			{"type": participant("assembler"), "who": reference{Display: p.Assembler}},
		},
		"entity": []map[string]any{{"role": "source",
			"what": reference{Identifier: &identifier{p.EntitySystem, p.Entity}, Display: p.EntityDisplay}}},
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	return fhir.Parse(b)
}
