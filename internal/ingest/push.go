package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/mapping"
	"github.com/fhirgate/fhirgate/internal/search"
	"github.com/fhirgate/fhirgate/internal/store"
)

// Normalizer is what EMR pushes need of the mappings: the same source
// profiles the HL7 v2 path applies, and the same identity rules.
type Normalizer interface {
	HasProfile(name string) bool
	NormalizeFHIR(r *fhir.Resource, profile string) (*fhir.Resource, []string, error)
	IdentityOf(r *fhir.Resource, tenant string) (string, bool)
	Version() string
}

// Push is the intake of FHIR resources pushed by an EMR (a Bundle or an
// NDJSON bulk load): the same pipeline as HL7 v2 — source-profile
// normalization, identity resolution to stable ids (so a patient pushed as
// FHIR and the same patient sent over HL7 v2 are one resource), validation,
// storage and a Provenance naming the source — instead of the REST API's
// create semantics.
type Push struct {
	svc      *Service
	mappings func() Normalizer
}

// NewPush returns EMR push intake; mappings returns the current mappings
// (they may be reloaded).
func NewPush(svc *Service, mappings func() Normalizer) *Push {
	return &Push{svc: svc, mappings: mappings}
}

// Pushed is one resource of a push, as received.
type Pushed struct {
	FullURL  string // the entry's fullUrl, "" for NDJSON
	Resource *fhir.Resource
}

// PushResult reports what a push stored, in input order.
type PushResult struct {
	Versions   []store.Version
	Created    []bool
	Provenance []string // one per committed chunk
}

// MaxPushChunk is how many resources one transaction of a push holds: a
// bulk load commits in chunks, each all-or-nothing with its own Provenance.
const MaxPushChunk = 500

// Store stores resources pushed by source (a source profile name; "" is
// the default profile). origin describes the upload for the Provenance
// (e.g. "Bundle/123" or "ndjson"). Every resource is normalized and
// validated before anything is written; an invalid one fails the whole
// push with 400 naming it (at expression prefix[i]).
func (p *Push) Store(ctx context.Context, tenant, source, origin, prefix string, in []Pushed) (*PushResult, error) {
	n := p.mappings()
	if !n.HasProfile(source) {
		return nil, fhir.Errorf(fhir.KindInvalid, "", "unknown source profile %q", source).WithCode("not-found")
	}
	res := make([]*fhir.Resource, len(in))
	refs := map[string]string{}
	for i, e := range in {
		expr := fmt.Sprintf("%s[%d]", prefix, i)
		r, _, err := n.NormalizeFHIR(e.Resource, source)
		if err != nil {
			return nil, prefixExpr(err, expr)
		}
		orig := r.ID
		id, ok := n.IdentityOf(r, tenant)
		switch {
		case ok:
		case orig != "":
			// The sender's own id, kept apart from other senders' ids.
			id = mapping.StableID(tenant, "push", source, r.Type, orig)
		default:
			id = NewID()
		}
		r.SetID(id)
		res[i] = r
		if orig != "" {
			refs[r.Type+"/"+orig] = r.Type + "/" + id
		}
		if e.FullURL != "" {
			refs[e.FullURL] = r.Type + "/" + id
		}
	}
	entries := make([]search.Entries, len(res))
	for i, r := range res {
		if len(refs) > 0 {
			r.RewriteStrings(refs)
		}
		if p.svc.validate != nil {
			if err := p.svc.validate(r); err != nil {
				return nil, prefixExpr(err, fmt.Sprintf("%s[%d]", prefix, i))
			}
		}
		entries[i] = search.Extract(r.Type, r.Content)
	}
	seen := map[string]int{}
	for i, r := range res {
		k := r.Type + "/" + r.ID
		if j, dup := seen[k]; dup {
			return nil, fhir.Errorf(fhir.KindConflict, fmt.Sprintf("%s[%d]", prefix, i),
				"resolves to the same resource as entry %d", j).WithCode("duplicate")
		}
		seen[k] = i
	}

	out := &PushResult{Versions: make([]store.Version, len(res)), Created: make([]bool, len(res))}
	version := n.Version()
	for start := 0; start < len(res); start += MaxPushChunk {
		end := min(start+MaxPushChunk, len(res))
		provID := NewID()
		err := p.svc.inTx(ctx, tenant, func(tx *store.Tx) error {
			keys := make([]store.Key, 0, end-start)
			for _, r := range res[start:end] {
				keys = append(keys, store.Key{Type: r.Type, ID: r.ID})
			}
			if err := tx.Prefetch(ctx, keys, false); err != nil {
				return err
			}
			targets := make([]string, 0, end-start)
			for i := start; i < end; i++ {
				r := res[i]
				v, err := tx.Put(ctx, store.Write{Resource: r, Entries: entries[i], Method: "PUT", SkipUnchanged: true})
				if err != nil {
					return prefixExpr(err, fmt.Sprintf("%s[%d]", prefix, i))
				}
				out.Versions[i] = v
				out.Created[i] = v.Version == 1
				targets = append(targets, fmt.Sprintf("%s/%s/_history/%d", v.Type, v.ID, v.Version))
			}
			prov, err := buildProvenance(provenanceSpec{ID: provID, Targets: targets, AgentSystem: "urn:fhirgate:source", Agent: sourceName(source),
				EntitySystem: "urn:fhirgate:push", Entity: origin, EntityDisplay: "FHIR push " + origin,
				Assembler: "fhirgate FHIR normalization " + version, At: tx.Now()})
			if err != nil {
				return err
			}
			_, err = tx.Put(ctx, store.Write{Resource: prov, Entries: search.Extract(prov.Type, prov.Content), Method: "PUT", New: true})
			return err
		})
		if err != nil {
			if start > 0 {
				fe := fhir.AsError(err)
				var why []string
				for _, is := range fe.Issues {
					why = append(why, is.Diagnostics) // diagnostics never quote values; the cause may
				}
				return out, fhir.Errorf(fe.Kind, "", "the first %d of %d resources were stored; the chunk starting at %s[%d] failed: %s",
					start, len(res), prefix, start, strings.Join(why, "; ")).Wrap(err)
			}
			return nil, err
		}
		out.Provenance = append(out.Provenance, provID)
	}
	return out, nil
}

func sourceName(s string) string {
	if s == "" {
		return "default"
	}
	return s
}

// ParsePushBundle reads the resources of a Bundle an EMR pushed (any
// Bundle type; in a transaction or batch only POST and PUT entries are
// allowed, since a push stores resources). origin is "Bundle/<id>" when the
// Bundle has an id or identifier.
func ParsePushBundle(body []byte) (in []Pushed, origin string, err error) {
	h, err := parseBundleHead(body, "a push takes a Bundle or NDJSON")
	if err != nil {
		return nil, "", err
	}
	entries := h.entries
	origin = "Bundle"
	if h.id != "" {
		origin = "Bundle/" + h.id
	}
	for i, raw := range fhir.Elements(entries) {
		path := fmt.Sprintf("Bundle.entry[%d]", i)
		if raw[0] != '{' {
			return nil, "", fhir.Errorf(fhir.KindInvalid, path, "entry must be an object").WithCode("structure")
		}
		var p Pushed
		var resource []byte
		for _, m := range fhir.Members(raw) {
			switch m.Key {
			case "fullUrl":
				_ = json.Unmarshal(m.Value, &p.FullURL)
			case "resource":
				resource = m.Value
			case "request":
				var req struct{ Method string }
				_ = json.Unmarshal(m.Value, &req)
				if req.Method != "" && req.Method != "POST" && req.Method != "PUT" {
					return nil, "", fhir.Errorf(fhir.KindInvalid, path+".request.method", "a push stores resources: only POST and PUT entries are allowed").WithCode("not-supported")
				}
			}
		}
		if resource == nil {
			return nil, "", fhir.Errorf(fhir.KindInvalid, path+".resource", "entry has no resource").WithCode("required")
		}
		r, err := fhir.ParseCompacted(resource)
		if err != nil {
			return nil, "", prefixExpr(err, path+".resource")
		}
		p.Resource = r
		in = append(in, p)
	}
	return in, origin, nil
}

// ParseNDJSON reads a bulk load: one resource per line (blank lines
// skipped), as the FHIR Bulk Data format.
func ParseNDJSON(body []byte) ([]Pushed, error) {
	var in []Pushed
	for i, line := range bytes.Split(body, []byte{'\n'}) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		r, err := fhir.Parse(line)
		if err != nil {
			return nil, prefixExpr(err, fmt.Sprintf("line %d", i+1))
		}
		in = append(in, Pushed{Resource: r})
	}
	if len(in) == 0 {
		return nil, fhir.Errorf(fhir.KindInvalid, "", "the NDJSON body holds no resources").WithCode("required")
	}
	return in, nil
}
