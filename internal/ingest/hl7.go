package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/hl7v2"
	"github.com/fhirgate/fhirgate/internal/mapping"
	"github.com/fhirgate/fhirgate/internal/search"
	"github.com/fhirgate/fhirgate/internal/store"
)

// HL7Store is what HL7 v2 intake needs beyond the write transaction.
type HL7Store interface {
	HL7Ack(ctx context.Context, tenant, sender, controlID string) ([]byte, bool, error)
	AddDeadLetter(ctx context.Context, tenant string, d store.DeadLetter) (int64, error)
}

// Mapper turns a parsed HL7 v2 message into FHIR resources.
type Mapper interface {
	Map(m *hl7v2.Message, tenant string) (*mapping.Output, error)
	Version() string
}

// HL7 is HL7 v2 intake: parse, de-duplicate, map, validate, store with
// Provenance, archive, ACK. The ACK it returns is positive only after the
// message and everything it produced are committed in one transaction;
// a rejected message is stored as a dead letter before its NAK is sent.
type HL7 struct {
	svc    *Service
	store  HL7Store
	mapper atomic.Pointer[Mapper]
	log    *slog.Logger
	now    func() time.Time

	commitMu   sync.Mutex
	committers map[shardKey]*committer
	counters   hl7Counters
}

// NewHL7 returns HL7 v2 intake over the write path.
func NewHL7(svc *Service, st HL7Store, m Mapper, log *slog.Logger) *HL7 {
	h := &HL7{svc: svc, store: st, log: log, now: time.Now, committers: map[shardKey]*committer{}}
	h.SetMapper(m)
	return h
}

// SetMapper swaps the mappings (a reload); messages in flight finish with
// the mappings they started with.
func (h *HL7) SetMapper(m Mapper) { h.mapper.Store(&m) }

// Source names the source profile a raw message would be mapped under
// (its sender's, per the mappings' source profiles), for the access
// decision that senders write only their own sources. ok is false when
// the message's MSH cannot be read; its intake then rejects it anyway.
func (h *HL7) Source(raw []byte) (source string, ok bool) {
	// The MSH alone: the whole message is parsed once, by Handle.
	if i := bytes.IndexAny(raw, "\r\n"); i >= 0 {
		raw = raw[:i]
	}
	msg, err := hl7v2.Parse(raw)
	if err != nil || msg.Segment("MSH") == nil {
		return "", false
	}
	app, fac := msg.Sender()
	if pf, isEngine := (*h.mapper.Load()).(interface{ ProfileFor(app, fac string) string }); isEngine {
		return pf.ProfileFor(app, fac), true
	}
	return app + "|" + fac, true
}

// masterData are the types a message only mentions (an attending
// doctor's XCN, a facility's XON, a bed's PL): intake creates them when
// unknown but never overwrites them with a message's fragment of them,
// which would make every message that names a doctor rewrite that doctor
// (version churn, and write conflicts between concurrent messages).
// Master-data feeds and the REST API update them.
var masterData = map[string]bool{"Practitioner": true, "Organization": true, "Location": true, "PractitionerRole": true}

// ackMode is how a message asks to be acknowledged: original mode, or
// enhanced mode (MSH-15 and/or MSH-16 valued) with an accept (commit)
// acknowledgment condition in MSH-15 and an application acknowledgment
// condition in MSH-16 (table 0155: AL always, NE never, ER on error or
// reject only, SU on success only).
type ackMode struct {
	enhanced    bool
	accept, app string
}

func modeOf(m *hl7v2.Message) ackMode {
	accept := strings.ToUpper(strings.TrimSpace(m.Get("MSH-15")))
	app := strings.ToUpper(strings.TrimSpace(m.Get("MSH-16")))
	if accept == "" && app == "" {
		return ackMode{}
	}
	return ackMode{enhanced: true, accept: accept, app: app}
}

// replyCode is the MSA-1 to send on the connection for an outcome given
// in original-mode terms (AA, AE, AR), or "" to send nothing. Intake
// stores a message before it answers, so acceptance and application
// processing end together and one reply is sent: the commit ACK (CA, CE,
// CR) when MSH-15 asks for one, else the application ACK (AA, AE, AR)
// when MSH-16 does (a sender that asks only for the application ACK, MSH-15
// NE and MSH-16 AL, gets it on the same connection). An MSH-15 value
// outside table 0155 is answered as AL: a reply the sender did not expect
// is safer than silence it did not ask for.
func (a ackMode) replyCode(original string) string {
	if !a.enhanced {
		return original
	}
	switch a.accept {
	case "NE", "":
	case "ER":
		if original != "AA" {
			return "C" + original[1:]
		}
	case "SU":
		if original == "AA" {
			return "C" + original[1:]
		}
	default: // AL, or not a table 0155 value
		return "C" + original[1:]
	}
	switch a.app {
	case "AL":
		return original
	case "ER":
		if original != "AA" {
			return original
		}
	case "SU":
		if original == "AA" {
			return original
		}
	}
	return ""
}

// archivedCode is the MSA-1 of the ACK archived for an accepted message
// and replayed to its re-sends: the reply the sender asked for, or, when
// it asked for none, the mode's positive code (a re-send still gets one).
func (a ackMode) archivedCode() string {
	if c := a.replyCode("AA"); c != "" {
		return c
	}
	if a.enhanced {
		return "CA"
	}
	return "AA"
}

// Handle processes one message and returns the ACK to send (nil when the
// sender asked for none, MSH-15 NE/ER/SU). A rejected message is stored as
// a dead letter before its NAK is returned. It never panics on input.
func (h *HL7) Handle(ctx context.Context, tenant string, raw []byte) []byte {
	ack, _ := h.HandleOutcome(ctx, tenant, raw)
	return ack
}

// HandleOutcome is Handle that also says how the message ended, for the
// access log: AA (stored, or a re-send of a stored one), AE or AR
// (rejected; AE also when it could not be stored and should be sent
// again) — whatever the sender asked to be told (MSH-15/16).
func (h *HL7) HandleOutcome(ctx context.Context, tenant string, raw []byte) (ack []byte, outcome string) {
	now := h.now().UTC()
	r := h.process(ctx, tenant, raw, now)
	if r.code == "AE" || r.code == "AR" {
		h.deadLetter(ctx, tenant, r.sender, r.controlID, r.code, r.reason, raw, now)
	}
	if r.code == "" {
		return r.ack, "AE"
	}
	return r.ack, r.code
}

// result is what processing one message came to.
type result struct {
	ack               []byte
	code              string // AA, AE, AR; "" for a transient failure (retry)
	sender, controlID string
	reason            string // for dead letters: locations and rules only
}

func (h *HL7) process(ctx context.Context, tenant string, raw []byte, now time.Time) result {
	j, r := h.job(ctx, tenant, raw, now)
	if j == nil {
		return r
	}
	return h.commit(tenant, j)
}

// job parses, maps and validates a message. A message that is answered
// without being stored (unparseable, unmapped, invalid, or a re-send of a
// message that then fails to map) returns no job and its result.
func (h *HL7) job(ctx context.Context, tenant string, raw []byte, now time.Time) (*hl7Job, result) {
	ackID := NewID()
	msg, err := hl7v2.Parse(raw)
	if err != nil {
		var pe *hl7v2.ParseError
		errors.As(err, &pe)
		reason := "unparseable message"
		if pe != nil {
			reason = fmt.Sprintf("unparseable message: segment %s #%d field %d at byte %d: %s", pe.Segment, pe.SegmentIndex, pe.Field, pe.Offset, pe.Reason)
		}
		return nil, result{ack: hl7v2.NAKForUnparseable(raw, pe, ackID, now), code: "AR", reason: reason}
	}
	mode := modeOf(msg)
	reply := func(original string, errs []hl7v2.AckError) []byte {
		code := mode.replyCode(original)
		if code == "" {
			return nil
		}
		return hl7v2.BuildACK(msg, code, errs, ackID, now)
	}
	app, fac := msg.Sender()
	sender := app + "^" + fac
	cid := msg.ControlID()
	if cid == "" {
		errs := []hl7v2.AckError{{Segment: "MSH", SegmentIndex: 1, Field: 10, Code: "101", Severity: "E", Text: "MSH-10 message control id is required"}}
		return nil, result{ack: reply("AR", errs), code: "AR", sender: sender, reason: describe(errs)}
	}
	// A re-send of an accepted message is recognized in the transaction
	// that would store it (one query for a whole batch); a message that
	// fails to map or validate is first checked against the archive, so
	// a retry after a lost ACK gets its original answer even when the
	// mappings changed since.
	reject := func(code string, errs []hl7v2.AckError) result {
		if ack, ok, err := h.store.HL7Ack(ctx, tenant, sender, cid); err != nil {
			return h.transient(msg, mode, ackID, now, err)
		} else if ok {
			return result{ack: ack, code: "AA", sender: sender, controlID: cid}
		}
		return result{ack: reply(code, errs), code: code, sender: sender, controlID: cid, reason: describe(errs)}
	}

	mapper := *h.mapper.Load()
	out, err := mapper.Map(msg, tenant)
	if err != nil {
		code, errs := "AE", []hl7v2.AckError{{Segment: "MSH", SegmentIndex: 1, Field: 9, Code: "207", Severity: "E", Text: "the message could not be mapped"}}
		var me *mapping.MapError
		if errors.As(err, &me) {
			if me.Reject {
				code = "AR"
			}
			if len(me.Errs) > 0 {
				errs = me.Errs
			}
		}
		return nil, reject(code, errs)
	}

	// Master data is validated and indexed only when it is going to be
	// written (it is new): most messages name doctors, wards and
	// facilities that exist already.
	j := &hl7Job{msg: msg, raw: raw, now: now, mode: mode, ackID: ackID, sender: sender, cid: cid, out: out,
		entries: make([]search.Entries, len(out.Resources)), done: make(chan result, 1)}
	for i, r := range out.Resources {
		if !masterData[r.Type] {
			if errs := h.prepare(j, i); errs != nil {
				return nil, reject("AE", errs)
			}
		}
	}
	j.mtype = msg.Get("MSH-9.1") + "^" + msg.Get("MSH-9.2")
	if s := msg.Get("MSH-9.3"); s != "" {
		j.mtype += "^" + s
	}
	j.ack = reply("AA", out.Warnings)
	j.stored = j.ack
	if j.stored == nil { // the sender asked for no ACK; duplicates still get one
		j.stored = hl7v2.BuildACK(msg, mode.archivedCode(), out.Warnings, ackID, now)
	}
	j.provID = mapping.StableID(tenant, "Provenance", "hl7v2", sender, cid)
	return j, result{}
}

// prepare validates and indexes the job's i-th resource; it returns the
// ERR segments of a mapped resource that is invalid (a mapping defect).
func (h *HL7) prepare(j *hl7Job, i int) []hl7v2.AckError {
	r := j.out.Resources[i]
	if h.svc.validate != nil {
		if err := h.svc.validate(r); err != nil {
			return validationErrs(r, err)
		}
	}
	j.entries[i] = search.Extract(r.Type, r.Content)
	return nil
}

// transient answers a failure that is not the message's fault (database
// down): AE/CE with code 207, so the sender retries; no dead letter, the
// message was not judged.
func (h *HL7) transient(msg *hl7v2.Message, mode ackMode, ackID string, now time.Time, err error) result {
	h.log.Error("hl7v2 intake failed", "kind", fhir.KindOf(err).Status(), "error_type", fmt.Sprintf("%T", err))
	errs := []hl7v2.AckError{{Segment: "MSH", SegmentIndex: 1, Code: "207", Severity: "E", Text: "application internal error; retry later"}}
	code := mode.replyCode("AE")
	if code == "" {
		return result{}
	}
	return result{ack: hl7v2.BuildACK(msg, code, errs, ackID, now)}
}

// ReplayStore is what Replay needs.
type ReplayStore interface {
	PendingDeadLetters(ctx context.Context, tenant string, afterID int64, limit int) ([]store.DeadLetter, error)
	ResolveDeadLetter(ctx context.Context, tenant string, id int64, accepted bool, reason string) error
}

// Replay runs every pending dead letter through intake again (after a
// mapping fix). An accepted one is marked replayed; one still rejected
// keeps its place with the new reason. progress, when not nil, is called
// after each message.
func (h *HL7) Replay(ctx context.Context, tenant string, st ReplayStore, progress func(id int64, code string)) (accepted, rejected int, err error) {
	var after int64
	for {
		batch, err := st.PendingDeadLetters(ctx, tenant, after, 100)
		if err != nil {
			return accepted, rejected, err
		}
		if len(batch) == 0 {
			return accepted, rejected, nil
		}
		for _, d := range batch {
			after = d.ID
			r := h.process(ctx, tenant, d.Raw, h.now().UTC())
			switch r.code {
			case "AA":
				accepted++
			case "":
				return accepted, rejected, fhir.Errorf(fhir.KindUnavailable, "", "replay stopped: the store is unavailable")
			default:
				rejected++
			}
			if err := st.ResolveDeadLetter(ctx, tenant, d.ID, r.code == "AA", r.reason); err != nil {
				return accepted, rejected, err
			}
			if progress != nil {
				progress(d.ID, r.code)
			}
		}
	}
}

func (h *HL7) deadLetter(ctx context.Context, tenant, sender, cid, code, reason string, raw []byte, now time.Time) {
	id, err := h.store.AddDeadLetter(ctx, tenant, store.DeadLetter{Sender: sender, ControlID: cid, ReceivedAt: now,
		AckCode: code, Reason: reason, Raw: raw})
	if err != nil {
		h.log.Error("hl7v2 dead letter could not be stored", "tenant", tenant, "error_type", fmt.Sprintf("%T", err))
		return
	}
	h.log.Info("hl7v2 rejected", "tenant", tenant, "dead_letter", id, "ack", code)
}

// describe renders ERR locations and rule texts (never values) for the
// dead letter's reason.
func describe(errs []hl7v2.AckError) string {
	parts := make([]string, 0, len(errs))
	for _, e := range errs {
		loc := e.Segment
		if e.Field > 0 {
			loc += "-" + strconv.Itoa(e.Field)
		}
		parts = append(parts, fmt.Sprintf("%s %s: %s", loc, e.Code, e.Text))
	}
	return strings.Join(parts, "; ")
}

// validationErrs reports a mapped resource that failed validation: a
// mapping defect, named by resource type and element path.
func validationErrs(r *fhir.Resource, err error) []hl7v2.AckError {
	var out []hl7v2.AckError
	fe := fhir.AsError(err)
	for _, is := range fe.Issues {
		out = append(out, hl7v2.AckError{Segment: "MSH", SegmentIndex: 1, Code: "207", Severity: "E",
			Text: fmt.Sprintf("mapped %s is invalid at %s: %s", r.Type, strings.Join(is.Expression, ","), is.Diagnostics)})
	}
	return out
}
