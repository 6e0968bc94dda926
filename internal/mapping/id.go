package mapping

import (
	"crypto/sha256"
	"encoding/hex"
)

// StableID derives a deterministic, valid FHIR id (32 lowercase hex
// digits) from parts: the first 16 bytes of the SHA-256 of the parts
// joined by 0x1f. The same parts always give the same id, so a re-sent
// message updates rather than duplicates.
func StableID(parts ...string) string {
	h := sha256.New()
	for i, p := range parts {
		if i > 0 {
			h.Write([]byte{0x1f})
		}
		h.Write([]byte(p))
	}
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])[:16])
}
