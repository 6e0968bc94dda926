package audit

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Record is one audited request. It holds no PHI values: ids, codes and
// reasons only, and the search query, which Append seals when a Sealer is
// configured.
type Record struct {
	Time      time.Time // when the request was received; zero: now (stored to the microsecond)
	RequestID string
	Tenant    string
	// Who.
	SubjectID   string // the token's subject, or the client certificate's subject
	SubjectKind string // user, patient, system, emr; "" when unauthenticated
	ClientID    string
	TokenID     string // the token's jti
	IP          string
	// What.
	Interaction  string   // an Interaction* constant, or another documented code
	ResourceType string   // "" when none (login-failed, key-rotate, transaction)
	ResourceIDs  []string // logical ids returned or touched
	PatientIDs   []string // Patient ids (without "Patient/") of the compartments of every resource returned or touched
	Query        string   // search parameters; may hold PHI: sealed at rest
	// Why.
	PurposeOfUse string // HL7 PurposeOfUse code
	DecisionID   string // the policy decision id
	Reason       string // the policy's reason, or the error
	BreakGlass   bool
	// Outcome.
	Outcome string // HTTP status ("200", "403") or HL7 ACK code ("AA", "AE", "AR")
	Action  string // BALP / AuditEvent action: C, R, U, D, E (or "")
}

// Interaction codes. Others may be used; these are the ones reports know.
const (
	InteractionRead        = "read"
	InteractionVRead       = "vread"
	InteractionSearch      = "search"
	InteractionHistory     = "history"
	InteractionCreate      = "create"
	InteractionUpdate      = "update"
	InteractionDelete      = "delete"
	InteractionTransaction = "transaction"
	InteractionBatch       = "batch"
	InteractionHL7         = "hl7"
	InteractionPush        = "push"
	InteractionExport      = "export"
	InteractionLoginFailed = "login-failed"
	InteractionAuditQuery  = "audit-query"
	InteractionKeyRotate   = "key-rotate"
	InteractionBreakGlass  = "break-glass"
)

// AuditEvent.action codes.
const (
	ActionCreate  = "C"
	ActionRead    = "R"
	ActionUpdate  = "U"
	ActionDelete  = "D"
	ActionExecute = "E"
)

// HTTPOutcome is the Outcome of an HTTP status.
func HTTPOutcome(status int) string { return strconv.Itoa(status) }

// Success reports whether an Outcome is a success: an HTTP status 1xx to
// 3xx, or the HL7 ACK codes AA and CA.
func Success(outcome string) bool {
	switch outcome {
	case "AA", "CA":
		return true
	}
	n, err := strconv.Atoi(outcome)
	return err == nil && len(outcome) == 3 && n >= 100 && n < 400
}

// Format is the current canonical encoding version.
const Format = 1

// HashSize is the size of a record hash.
const HashSize = sha256.Size

// field limits: what is longer is cut (at a rune boundary).
const (
	maxField = 16 << 10
	maxQuery = 64 << 10
)

// normalize returns the record as it will be stored and hashed: time in
// UTC to the microsecond (PostgreSQL's precision), strings valid UTF-8
// without NUL (PostgreSQL text refuses NUL), over-long values cut, empty
// lists nil. It refuses a record without an interaction or with an unknown
// action: a programming error, and a record that would mislead an auditor.
func (r Record) normalize(now time.Time) (Record, error) {
	if r.Time.IsZero() {
		r.Time = now
	}
	r.Time = r.Time.UTC().Truncate(time.Microsecond)
	for _, p := range []*string{&r.RequestID, &r.Tenant, &r.SubjectID, &r.SubjectKind, &r.ClientID, &r.TokenID,
		&r.IP, &r.Interaction, &r.ResourceType, &r.PurposeOfUse, &r.DecisionID, &r.Reason, &r.Outcome, &r.Action} {
		*p = clean(*p, maxField)
	}
	r.Query = clean(r.Query, maxQuery)
	r.ResourceIDs = cleanList(r.ResourceIDs)
	r.PatientIDs = cleanList(r.PatientIDs)
	if r.Interaction == "" {
		return r, errors.New("audit: record without an interaction")
	}
	switch r.Action {
	case "", ActionCreate, ActionRead, ActionUpdate, ActionDelete, ActionExecute:
	default:
		return r, fmt.Errorf("audit: action %q: want C, R, U, D, E or empty", r.Action)
	}
	return r, nil
}

func clean(s string, limit int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "\uFFFD")
	}
	if len(s) > limit {
		cut := limit
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}

func cleanList(ss []string) []string {
	if len(ss) == 0 {
		return nil
	}
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = clean(s, maxField)
	}
	return out
}

// stored is a record as stored: the query as bytes (ciphertext when
// sealed) and the chain fields.
type stored struct {
	Record
	seq         int64
	format      int
	query       []byte
	querySealed bool
	prevHash    []byte
	hash        []byte
}

var domainV1 = []byte("fhirgate.audit.v1\x00")

// computeHash returns the hash of the stored record with the given seq and
// previous hash, under its format.
func (s *stored) computeHash(seq int64, prev []byte) ([]byte, error) {
	if s.format != 1 {
		return nil, fmt.Errorf("audit: unknown record format %d", s.format)
	}
	if len(prev) != HashSize {
		return nil, fmt.Errorf("audit: previous hash of %d bytes", len(prev))
	}
	b := make([]byte, 0, 256+len(s.query))
	b = append(b, domainV1...)
	b = binary.BigEndian.AppendUint64(b, uint64(seq))
	b = append(b, prev...)
	b = binary.BigEndian.AppendUint64(b, uint64(s.Time.UnixMicro()))
	for _, v := range []string{s.RequestID, s.Tenant, s.SubjectID, s.SubjectKind, s.ClientID, s.TokenID,
		s.IP, s.Interaction, s.ResourceType} {
		b = appendString(b, v)
	}
	b = appendList(b, s.ResourceIDs)
	b = appendList(b, s.PatientIDs)
	b = appendBytes(b, s.query)
	b = appendBool(b, s.querySealed)
	for _, v := range []string{s.PurposeOfUse, s.DecisionID, s.Reason} {
		b = appendString(b, v)
	}
	b = appendBool(b, s.BreakGlass)
	b = appendString(b, s.Outcome)
	b = appendString(b, s.Action)
	h := sha256.Sum256(b)
	return h[:], nil
}

func appendBytes(b, v []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

func appendString(b []byte, v string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

func appendList(b []byte, vs []string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(vs)))
	for _, v := range vs {
		b = appendString(b, v)
	}
	return b
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// genesis is the prev_hash of record 1.
var genesis = make([]byte, HashSize)

// Entry is a stored record as read back: the Record (with Query decrypted
// when possible), its place in the chain and what the hash covers.
type Entry struct {
	Record
	Seq      int64
	Format   int
	PrevHash []byte
	Hash     []byte
	// StoredQuery is the query as stored (ciphertext when QuerySealed): an
	// exported chain proof carries it so that the hash can be recomputed
	// without the PHI key.
	StoredQuery []byte
	QuerySealed bool
	// QueryUnreadable: the query is sealed and could not be opened (no
	// Sealer configured, or the tenant's key was destroyed); Query is "".
	QueryUnreadable bool
}

// ComputeHash recomputes the entry's hash from its fields, StoredQuery and
// PrevHash (not from Hash): equal to Hash for an intact record.
func (e *Entry) ComputeHash() ([]byte, error) {
	s := e.stored()
	return s.computeHash(e.Seq, e.PrevHash)
}

func (e *Entry) stored() *stored {
	return &stored{Record: e.Record, seq: e.Seq, format: e.Format, query: e.StoredQuery, querySealed: e.QuerySealed,
		prevHash: e.PrevHash, hash: e.Hash}
}

// arrayLiteral encodes a list as a PostgreSQL text[] literal (every element
// quoted, so "NULL" and "" stay strings).
func arrayLiteral(ss []string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, s := range ss {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		for j := 0; j < len(s); j++ {
			c := s[j]
			if c == '"' || c == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(c)
		}
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}
