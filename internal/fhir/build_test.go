package fhir

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestBuildMatchesParse: a resource built from Go values has the bytes
// and the decoded content that parsing those bytes gives.
func TestBuildMatchesParse(t *testing.T) {
	t.Parallel()
	content := func() map[string]any {
		return map[string]any{
			"name":      []map[string]any{{"family": "Ünal\x80x", "given": []string{"A\"b", "c\\d\n"}}},
			"active":    true,
			"deceased":  nil,
			"count":     3,
			"big":       int64(1) << 40,
			"ratio":     0.25,
			"exact":     json.Number("1.50"),
			"extension": []any{map[string]any{"url": "u", "valueInteger": int32(-7)}},
			"empty":     map[string]any{},
			"line":      "a\u2028b<&>",
		}
	}
	r, err := Build("Patient", "p1", content())
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := Parse(r.Bytes())
	if err != nil {
		t.Fatalf("the built bytes do not parse: %v\n%s", err, r.Bytes())
	}
	if !reflect.DeepEqual(r.Content, parsed.Content) {
		t.Errorf("content differs from the parse of its bytes:\nbuilt  %#v\nparsed %#v", r.Content, parsed.Content)
	}
	if r.Type != "Patient" || r.ID != "p1" || !strings.HasPrefix(string(r.Bytes()), `{"resourceType":"Patient","id":"p1","active":true,`) {
		t.Errorf("type %q id %q bytes %s", r.Type, r.ID, r.Bytes())
	}
	if !strings.Contains(string(r.Bytes()), `"ratio":0.25`) || !strings.Contains(string(r.Bytes()), `"exact":1.50`) {
		t.Errorf("numbers: %s", r.Bytes())
	}
	r.SetMeta("1", time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC))
	if _, err := Parse(r.Bytes()); err != nil {
		t.Errorf("after SetMeta: %v", err)
	}

	for name, bad := range map[string]map[string]any{
		"channel":       {"x": make(chan int)},
		"NaN number":    {"x": json.Number("NaN")},
		"true number":   {"x": json.Number("true")},
		"string number": {"x": json.Number(`"Doe"`)},
		"object number": {"x": json.Number("{}")},
		"id in content": {"id": "x"},
	} {
		if _, err := Build("Patient", "p1", bad); err == nil {
			t.Errorf("%s: no error", name)
		} else if strings.Contains(err.Error(), "Doe") {
			t.Errorf("%s: the error quotes the value: %v", name, err)
		}
	}
}

func BenchmarkBuildVsParse(b *testing.B) {
	content := func() map[string]any {
		return map[string]any{
			"name":       []any{map[string]any{"family": "Everyman", "given": []any{"Adam", "A"}}},
			"identifier": []any{map[string]any{"system": "urn:oid:1.2.3", "value": "12345"}},
			"address":    []any{map[string]any{"line": []any{"1 Main St"}, "city": "Town", "postalCode": "12345"}},
			"birthDate":  "1980-01-01",
			"gender":     "male",
		}
	}
	b.Run("Build", func(b *testing.B) {
		for b.Loop() {
			if _, err := Build("Patient", "p1", content()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Parse", func(b *testing.B) {
		r, _ := Build("Patient", "p1", content())
		raw := r.Bytes()
		for b.Loop() {
			_ = content()
			if _, err := ParseCompacted(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestBuildLeavesContentAlone: Build only reads its content, so content
// shared between resources built at once (constants of a mapping) is safe.
func TestBuildLeavesContentAlone(t *testing.T) {
	t.Parallel()
	shared := map[string]any{"coding": []map[string]any{{"system": "s", "code": "c"}}, "n": 1}
	content := map[string]any{"code": shared, "valueInteger": 2}
	done := make(chan error, 8)
	for range 8 {
		go func() {
			_, err := Build("Observation", "o", content)
			done <- err
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := shared["n"].(int); !ok {
		t.Errorf("Build changed its input: n is %T", shared["n"])
	}
	if _, ok := content["resourceType"]; ok {
		t.Error("Build added resourceType to its input")
	}
}

// TestAppendJSON checks that the encoder of Build writes exactly what
// encoding/json (HTML escaping off) writes for the values mappings build.
func TestAppendJSON(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		v    any
	}{
		{"scalars", map[string]any{"s": "x", "b": true, "n": json.Number("5.40"), "i": 3, "i64": int64(-2), "u": uint64(7), "f": 1.5, "nil": nil}},
		{"nested", map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": "2345-7"}}, "text": "Glucose"}},
		{"escapes", map[string]any{"q": "a\"b\\c\nd\re\tf\x01g<h>&i\u2028j\u2029k", "bad": "x\xffy", "ü": "é"}},
		{"empty", map[string]any{"m": map[string]any{}, "a": []any{}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var want bytes.Buffer
			enc := json.NewEncoder(&want)
			enc.SetEscapeHTML(false)
			if err := enc.Encode(tc.v); err != nil {
				t.Fatal(err)
			}
			got, err := AppendJSON(nil, tc.v)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(bytes.TrimSpace(want.Bytes())), string(got)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestIsJSONNumber(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]bool{
		"0": true, "-0": true, "12": true, "1.50": true, "-3.2e10": true, "1E+2": true, "0.5e-3": true,
		"": false, "-": false, "01": false, "1.": false, ".5": false, "1e": false, "+1": false, "NaN": false,
		"true": false, `"1"`: false, "1 ": false, "0x10": false,
	} {
		if got := isJSONNumber(s); got != want {
			t.Errorf("isJSONNumber(%q) = %v, want %v", s, got, want)
		}
	}
}
