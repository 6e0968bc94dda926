package mapping

import (
	"bytes"
	"encoding/json"
)

// Bundle renders the output as a FHIR transaction Bundle: one PUT
// Type/id entry per resource, fullUrl urn:uuid: of the id when the id is
// a StableID (32 hex digits), else the relative URL.
func (o *Output) Bundle() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString(`{"resourceType":"Bundle","type":"transaction","entry":[`)
	for i, r := range o.Resources {
		if i > 0 {
			buf.WriteByte(',')
		}
		body := r.Bytes()
		url := r.Type + "/" + r.ID
		full := url
		if len(r.ID) == 32 && isHex(r.ID) {
			id := r.ID
			full = "urn:uuid:" + id[:8] + "-" + id[8:12] + "-" + id[12:16] + "-" + id[16:20] + "-" + id[20:]
		}
		fu, _ := json.Marshal(full)
		u, _ := json.Marshal(url)
		buf.WriteString(`{"fullUrl":`)
		buf.Write(fu)
		buf.WriteString(`,"resource":`)
		buf.Write(body)
		buf.WriteString(`,"request":{"method":"PUT","url":`)
		buf.Write(u)
		buf.WriteString(`}}`)
	}
	buf.WriteString(`]}`)
	return buf.Bytes(), nil
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
