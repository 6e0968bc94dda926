package mapping

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/fhirgate/fhirgate/internal/hl7v2"
	"github.com/fhirgate/fhirgate/internal/validate"
)

func loadEngine(t testing.TB) *Engine {
	t.Helper()
	e, err := Load(filepath.Join("..", "..", "mappings"))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestCorpusMapsOrRejects maps every corpus message: each one is either
// mapped into resources that all pass validate.Resource, or refused with
// a *MapError; never a panic or another error.
func TestCorpusMapsOrRejects(t *testing.T) {
	t.Parallel()
	e := loadEngine(t)
	files, err := filepath.Glob(filepath.Join("testdata", "messages", "*.hl7"))
	if err != nil || len(files) != 82 {
		t.Fatalf("corpus: %d files, %v", len(files), err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			m, err := hl7v2.Parse(data)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			out, err := e.Map(m, "t1")
			if err != nil {
				var me *MapError
				if !errors.As(err, &me) || len(me.Errs) == 0 {
					t.Fatalf("Map returned %T %v, want *MapError with errors", err, err)
				}
				t.Logf("refused: %v", err)
				return
			}
			if len(out.Resources) == 0 {
				t.Fatal("no resources")
			}
			ids := map[string]bool{}
			for _, r := range out.Resources {
				ids[r.Type+"/"+r.ID] = true
			}
			for _, r := range out.Resources {
				if err := validate.Resource(r); err != nil {
					t.Errorf("%s/%s invalid: %v", r.Type, r.ID, err)
				}
				for _, ref := range references(r.Content) {
					if !ids[ref] {
						t.Errorf("%s/%s refers to %s, not in the output", r.Type, r.ID, ref)
					}
				}
			}
		})
	}
}

func references(v any) []string {
	var out []string
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			if s, ok := c.(string); ok && k == "reference" {
				out = append(out, s)
				continue
			}
			out = append(out, references(c)...)
		}
	case []any:
		for _, c := range x {
			out = append(out, references(c)...)
		}
	}
	sort.Strings(out)
	return out
}
