package fhir

import (
	"bytes"
	"encoding/json"
	"testing"
)

// AppendString must write what encoding/json writes without HTML escaping.
func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "plain", `quo"te and back\slash`, "tab\there\nnew\rcr", "\x00\x1f\x7f",
		"<b>&amp;</b>", "é😀中", "line\u2028para\u2029", "bad \xff utf8 \xc3", "http://x/fhir/Patient?a=1&b=2"} {
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(s); err != nil {
			t.Fatal(err)
		}
		if got := string(AppendString(nil, s)); got != string(bytes.TrimSuffix(want.Bytes(), []byte("\n"))) {
			t.Errorf("AppendString(%q) = %s, want %s", s, got, want.Bytes())
		}
	}
}
