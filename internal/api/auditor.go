package api

import (
	"context"
	"encoding/base64"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/fhirgate/fhirgate/internal/access"
	"github.com/fhirgate/fhirgate/internal/audit"
	"github.com/fhirgate/fhirgate/internal/fhir"
)

// AuditReader reads the access log for auditors (internal/audit).
type AuditReader interface {
	Query(ctx context.Context, f audit.Filter, afterSeq int64, limit int) ([]audit.Entry, error)
	Stream(ctx context.Context, f audit.Filter, fn func(audit.Entry) error) error
	PatientsPerSubject(ctx context.Context, f audit.Filter) (map[string]int, error)
}

// The auditor API: the access log as FHIR AuditEvent resources shaped
// after the IHE Basic Audit Log Patterns (BALP), and reports. Only
// subjects the policy allows the "audit" interaction (auditors) reach it,
// and every use of it is itself audited.

// authorizeAudit decides the audit interaction.
func (s *Server) authorizeAudit(c *gin.Context) bool {
	req := access.From(c.Request.Context())
	if req == nil {
		return true
	}
	if err := req.AuthorizeType(c.Request.Context(), "audit", ""); err != nil {
		s.fail(c, err)
		return false
	}
	return true
}

// auditFilter reads the AuditEvent search parameters and report options.
func (s *Server) auditFilter(c *gin.Context) (audit.Filter, error) {
	f := audit.Filter{Tenant: s.cfg.Tenant}
	q := c.Request.URL.Query()
	for k, vs := range q {
		for _, v := range vs {
			switch k {
			case "patient":
				f.Patient = strings.TrimPrefix(v, "Patient/")
			case "agent", "user":
				f.Agent = v
			case "action":
				f.Action = v
			case "outcome":
				switch v {
				case "0", "success":
					f.Outcome = "success"
				case "4", "8", "12", "failure":
					f.Outcome = "failure"
				default:
					return f, fhir.Errorf(fhir.KindInvalid, "", "outcome must be 0 (success), 4, 8 or 12 (failure)")
				}
			case "entity-type":
				f.EntityType = v
			case "subtype", "interaction":
				f.Interaction = v
			case "date", "from", "to":
				prefix, val := "", v
				if k == "date" && len(v) > 2 && strings.Contains("gtgelelteq", v[:2]) {
					prefix, val = v[:2], v[2:]
				}
				t, err := parseAuditTime(val)
				if err != nil {
					return f, fhir.Errorf(fhir.KindInvalid, "", "%s: want a date or instant such as 2026-11-01 or 2026-11-01T10:00:00Z", k)
				}
				switch {
				case k == "from" || prefix == "ge" || prefix == "gt":
					f.From = t
				case k == "to" || prefix == "le" || prefix == "lt":
					if len(val) == 10 && prefix != "lt" {
						t = t.Add(24 * time.Hour)
					}
					f.To = t
				default: // eq: that day or instant
					f.From = t
					f.To = t.Add(24 * time.Hour)
				}
			case "break-glass":
				b := v == "true"
				f.BreakGlass = &b
			case "_count", "_cursor", "format", "_format", "threshold", "baseline-days":
			default:
				return f, fhir.Errorf(fhir.KindInvalid, "", "audit search does not support parameter %q", k)
			}
		}
	}
	return f, nil
}

func parseAuditTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, strconv.ErrSyntax
}

// auditEvents serves GET /fhir/AuditEvent (search) and
// /fhir/AuditEvent/{seq} (read).
func (s *Server) auditEvents(c *gin.Context, id string) {
	if s.sec == nil || s.sec.Reader == nil {
		s.fail(c, fhir.Errorf(fhir.KindNotFound, "", "the access log is not enabled"))
		return
	}
	if !s.authorizeAudit(c) {
		return
	}
	ctx := c.Request.Context()
	if id != "" {
		seq, err := strconv.ParseInt(id, 10, 64)
		if err != nil || seq < 1 {
			s.fail(c, fhir.Errorf(fhir.KindNotFound, "", "AuditEvent/%s is not known", id))
			return
		}
		es, err := s.sec.Reader.Query(ctx, audit.Filter{Tenant: s.cfg.Tenant}, seq-1, 1)
		if err != nil {
			s.fail(c, err)
			return
		}
		if len(es) == 0 || es[0].Seq != seq {
			s.fail(c, fhir.Errorf(fhir.KindNotFound, "", "AuditEvent/%s is not known", id))
			return
		}
		write(c, http.StatusOK, auditEvent(&es[0]))
		return
	}
	f, err := s.auditFilter(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	count := 50
	if v := c.Query("_count"); v != "" {
		if count, err = strconv.Atoi(v); err != nil || count < 1 {
			s.fail(c, fhir.Errorf(fhir.KindInvalid, "", "_count must be a positive integer"))
			return
		}
		count = min(count, 1000)
	}
	var after int64
	if v := c.Query("_cursor"); v != "" {
		if after, err = strconv.ParseInt(v, 10, 64); err != nil || after < 0 {
			s.fail(c, fhir.Errorf(fhir.KindInvalid, "", "invalid page cursor"))
			return
		}
	}
	es, err := s.sec.Reader.Query(ctx, f, after, count+1)
	if err != nil {
		s.fail(c, err)
		return
	}
	w := newBundle("searchset")
	base := s.base(c)
	next := len(es) > count
	if next {
		es = es[:count]
	}
	self := c.Request.URL.Query()
	rel := []string{"self", base + "/AuditEvent?" + self.Encode()}
	if next {
		self.Set("_cursor", strconv.FormatInt(es[len(es)-1].Seq, 10))
		rel = append(rel, "next", base+"/AuditEvent?"+self.Encode())
	}
	w.links(rel...)
	for i := range es {
		w.entry(memberString("fullUrl", base+"/AuditEvent/"+strconv.FormatInt(es[i].Seq, 10)), member("resource", auditEvent(&es[i])))
	}
	write(c, http.StatusOK, w.bytes())
}

// BALP and terminology systems.
const (
	balp            = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/"
	sysEventType    = "http://terminology.hl7.org/CodeSystem/audit-event-type"
	sysDICOM        = "http://dicom.nema.org/resources/ontology/DCM"
	sysInteraction  = "http://hl7.org/fhir/restful-interaction"
	sysEntityType   = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
	sysObjectRole   = "http://terminology.hl7.org/CodeSystem/object-role"
	sysParticipant  = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
	sysPurpose      = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
	sysBALPEntity   = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
	sysSourceType   = "http://terminology.hl7.org/CodeSystem/security-source-type"
	sysNetworkType  = "http://hl7.org/fhir/network-type"
	balpUserAgent   = "http://dicom.nema.org/resources/ontology/DCM"
	auditSourceName = "fhirgate"
)

func coding(system, code string) map[string]any {
	return map[string]any{"system": system, "code": code}
}

// auditEvent renders one log entry as a BALP-shaped AuditEvent: read and
// vread as action R (BALP PatientRead), search and history as E with the
// query and one entity per patient in the result (BALP PatientQuery),
// writes as C/U/D (PatientCreate/Update/Delete), denials with a failure
// outcome, break-glass as a security alert. Each carries the request id,
// the token id and the policy decision ids.
func auditEvent(e *audit.Entry) []byte {
	ev := map[string]any{
		"resourceType": "AuditEvent",
		"id":           strconv.FormatInt(e.Seq, 10),
		"recorded":     e.Time.UTC().Format(time.RFC3339Nano),
		"action":       orDefault(e.Action, "E"),
		"outcome":      balpOutcome(e.Outcome),
		"outcomeDesc":  e.Outcome,
	}
	profile := ""
	switch e.Interaction {
	case audit.InteractionRead, audit.InteractionVRead:
		profile = "IHE.BasicAudit.PatientRead"
	case audit.InteractionSearch, audit.InteractionHistory:
		profile = "IHE.BasicAudit.PatientQuery"
	case audit.InteractionCreate:
		profile = "IHE.BasicAudit.PatientCreate"
	case audit.InteractionUpdate:
		profile = "IHE.BasicAudit.PatientUpdate"
	case audit.InteractionDelete:
		profile = "IHE.BasicAudit.PatientDelete"
	}
	if len(e.PatientIDs) == 0 && profile != "" {
		profile = strings.Replace(profile, "Patient", "", 1)
	}
	if profile != "" {
		ev["meta"] = map[string]any{"profile": []string{balp + profile}}
	}
	if e.BreakGlass {
		ev["type"] = map[string]any{"system": sysDICOM, "code": "110113", "display": "Security Alert"}
		ev["subtype"] = []any{map[string]any{"system": sysDICOM, "code": "110127", "display": "Emergency Override Started"},
			coding(sysInteraction, restInteraction(e.Interaction))}
	} else if e.Interaction == audit.InteractionLoginFailed {
		ev["type"] = map[string]any{"system": sysDICOM, "code": "110114", "display": "User Authentication"}
		ev["subtype"] = []any{map[string]any{"system": sysDICOM, "code": "110122", "display": "Login"}}
	} else {
		ev["type"] = map[string]any{"system": sysEventType, "code": "rest", "display": "Restful Operation"}
		ev["subtype"] = []any{coding(sysInteraction, restInteraction(e.Interaction))}
	}
	if e.PurposeOfUse != "" {
		ev["purposeOfEvent"] = []any{map[string]any{"coding": []any{coding(sysPurpose, e.PurposeOfUse)}}}
	}
	who := map[string]any{"identifier": map[string]any{"value": orDefault(e.SubjectID, "anonymous")}}
	agent := map[string]any{
		"type":      map[string]any{"coding": []any{coding(sysParticipant, "IRCP")}},
		"who":       who,
		"requestor": true,
	}
	if e.IP != "" {
		agent["network"] = map[string]any{"address": e.IP, "type": "2"}
	}
	if e.TokenID != "" {
		agent["policy"] = []string{e.TokenID}
	}
	agents := []any{agent}
	if e.ClientID != "" {
		agents = append(agents, map[string]any{
			"type":      map[string]any{"coding": []any{coding(sysDICOM, "110150")}}, // Application
			"who":       map[string]any{"identifier": map[string]any{"value": e.ClientID}},
			"requestor": false,
		})
	}
	agents = append(agents, map[string]any{
		"type":      map[string]any{"coding": []any{coding(sysDICOM, "110153")}}, // Source Role ID: the gateway
		"who":       map[string]any{"display": auditSourceName},
		"requestor": false,
	})
	ev["agent"] = agents
	ev["source"] = map[string]any{"observer": map[string]any{"display": auditSourceName}, "type": []any{coding(sysSourceType, "4")}}

	var entities []any
	for _, p := range e.PatientIDs {
		entities = append(entities, map[string]any{
			"what": map[string]any{"reference": "Patient/" + p},
			"type": coding(sysEntityType, "1"), "role": coding(sysObjectRole, "1"),
		})
	}
	for _, r := range e.ResourceIDs {
		if strings.HasPrefix(r, "Patient/") {
			continue
		}
		entities = append(entities, map[string]any{
			"what": map[string]any{"reference": r},
			"type": coding(sysEntityType, "2"), "role": coding(sysObjectRole, "4"),
		})
	}
	if e.Query != "" {
		entities = append(entities, map[string]any{
			"type":  coding(sysEntityType, "2"),
			"role":  coding(sysObjectRole, "24"),
			"query": base64.StdEncoding.EncodeToString([]byte(e.Query)),
		})
	}
	var details []any
	add := func(typ, v string) {
		if v != "" {
			details = append(details, map[string]any{"type": typ, "valueString": v})
		}
	}
	add("request-id", e.RequestID)
	add("token-id", e.TokenID)
	add("decision-id", e.DecisionID)
	add("reason", e.Reason)
	add("chain-hash", hex.EncodeToString(e.Hash))
	entities = append(entities, map[string]any{
		"what":   map[string]any{"identifier": map[string]any{"value": e.RequestID}},
		"type":   coding(sysBALPEntity, "XrequestId"),
		"detail": details,
	})
	ev["entity"] = entities
	b, _ := json.Marshal(ev)
	return b
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func restInteraction(i string) string {
	switch i {
	case audit.InteractionSearch:
		return "search-type"
	case audit.InteractionHistory:
		return "history-instance"
	case audit.InteractionTransaction:
		return "transaction"
	case audit.InteractionRead, audit.InteractionVRead, audit.InteractionCreate, audit.InteractionUpdate, audit.InteractionDelete:
		return i
	}
	return "operation"
}

// balpOutcome maps an HTTP status or ACK code to AuditEvent.outcome.
func balpOutcome(o string) string {
	switch {
	case audit.Success(o):
		return "0"
	case o == "503" || o == "500":
		return "8"
	}
	return "4"
}

// Reports: GET /audit/reports/{kind}?...&format=json|csv. They stream:
// the auditor's own audit record is committed first, then rows are
// written as they are read.
func (s *Server) auditReport(c *gin.Context) {
	if s.sec == nil || s.sec.Reader == nil {
		s.fail(c, fhir.Errorf(fhir.KindNotFound, "", "the access log is not enabled"))
		return
	}
	if !s.authorizeAudit(c) {
		return
	}
	kind := c.Param("kind")
	f, err := s.auditFilter(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	format := c.DefaultQuery("format", "json")
	if format != "json" && format != "csv" {
		s.fail(c, fhir.Errorf(fhir.KindInvalid, "", "format must be json or csv"))
		return
	}
	switch kind {
	case "disclosures":
		if f.Patient == "" {
			s.fail(c, fhir.Errorf(fhir.KindInvalid, "", "the accounting of disclosures needs patient="))
			return
		}
	case "activity":
		if f.Agent == "" {
			s.fail(c, fhir.Errorf(fhir.KindInvalid, "", "a user's activity report needs agent="))
			return
		}
	case "break-glass":
		b := true
		f.BreakGlass = &b
	case "denied":
		f.Outcome = "failure"
	case "export", "unusual":
	default:
		s.fail(c, fhir.Errorf(fhir.KindNotFound, "", "no such report; reports: disclosures, activity, break-glass, denied, unusual, export"))
		return
	}
	if !s.commitEarly(c) {
		return
	}
	ctx := c.Request.Context()
	if kind == "unusual" {
		s.unusualReport(c, f, format)
		return
	}
	out := newReportWriter(c, format, kind == "export")
	err = s.sec.Reader.Stream(ctx, f, func(e audit.Entry) error {
		return out.row(&e)
	})
	out.close(err)
}

// reportWriter streams report rows as a JSON array or CSV.
type reportWriter struct {
	c      *gin.Context
	csv    *csv.Writer
	json   bool
	proof  bool
	n      int
	failed bool
}

var reportColumns = []string{"seq", "time", "agent", "agent_kind", "client", "ip", "interaction", "action", "resource_type",
	"resources", "patients", "purpose_of_use", "break_glass", "outcome", "decision_id", "reason", "request_id", "token_id"}

func newReportWriter(c *gin.Context, format string, proof bool) *reportWriter {
	w := &reportWriter{c: c, json: format == "json", proof: proof}
	if w.json {
		c.Header("Content-Type", "application/json")
		c.Status(http.StatusOK)
		_, _ = c.Writer.WriteString("[")
	} else {
		c.Header("Content-Type", "text/csv; charset=utf-8")
		c.Status(http.StatusOK)
		w.csv = csv.NewWriter(c.Writer)
		cols := reportColumns
		if proof {
			cols = append(append([]string{}, cols...), "query", "prev_hash", "hash")
		}
		_ = w.csv.Write(cols)
	}
	return w
}

func (w *reportWriter) row(e *audit.Entry) error {
	vals := []string{strconv.FormatInt(e.Seq, 10), e.Time.UTC().Format(time.RFC3339Nano), e.SubjectID, e.SubjectKind, e.ClientID, e.IP,
		e.Interaction, e.Action, e.ResourceType, strings.Join(e.ResourceIDs, " "), strings.Join(e.PatientIDs, " "), e.PurposeOfUse,
		strconv.FormatBool(e.BreakGlass), e.Outcome, e.DecisionID, e.Reason, e.RequestID, e.TokenID}
	if w.proof {
		vals = append(vals, e.Query, hex.EncodeToString(e.PrevHash), hex.EncodeToString(e.Hash))
	}
	w.n++
	if w.json {
		m := make(map[string]any, len(vals))
		cols := reportColumns
		if w.proof {
			cols = append(append([]string{}, cols...), "query", "prev_hash", "hash")
		}
		for i, col := range cols {
			m[col] = vals[i]
		}
		b, _ := json.Marshal(m)
		sep := ",\n"
		if w.n == 1 {
			sep = "\n"
		}
		if _, err := w.c.Writer.WriteString(sep + string(b)); err != nil {
			return err
		}
	} else if err := w.csv.Write(vals); err != nil {
		return err
	}
	if w.n%500 == 0 {
		if w.csv != nil {
			w.csv.Flush()
		}
		w.c.Writer.Flush()
	}
	return nil
}

// close ends the report. A failure after rows were sent cannot change the
// status any more: it is marked in-band so a reader never mistakes a cut
// report for a complete one.
func (w *reportWriter) close(err error) {
	if w.json {
		tail := "\n]\n"
		if err != nil {
			tail = ",\n{\"error\":\"the report was cut short: the access log could not be read\"}\n]\n"
		}
		_, _ = w.c.Writer.WriteString(tail)
	} else {
		if err != nil {
			_ = w.csv.Write([]string{"#error", "the report was cut short: the access log could not be read"})
		}
		w.csv.Flush()
	}
	w.c.Writer.Flush()
}

// unusualReport flags subjects who reached far more distinct patients in
// the period than their own daily average over the baseline before it
// (default 30 days), at least threshold (default 3) times as many and at
// least 10 patients.
func (s *Server) unusualReport(c *gin.Context, f audit.Filter, format string) {
	ctx := c.Request.Context()
	to := f.To
	if to.IsZero() {
		to = time.Now().UTC()
	}
	from := f.From
	if from.IsZero() {
		from = to.Add(-24 * time.Hour)
	}
	baselineDays := 30
	if v, err := strconv.Atoi(c.Query("baseline-days")); err == nil && v > 0 && v <= 365 {
		baselineDays = v
	}
	threshold := 3.0
	if v, err := strconv.ParseFloat(c.Query("threshold"), 64); err == nil && v >= 1 {
		threshold = v
	}
	base := f
	base.From, base.To = from.Add(-time.Duration(baselineDays)*24*time.Hour), from
	period := f
	period.From, period.To = from, to
	before, err := s.sec.Reader.PatientsPerSubject(ctx, base)
	var now map[string]int
	if err == nil {
		now, err = s.sec.Reader.PatientsPerSubject(ctx, period)
	}
	type row struct {
		agent            string
		patients         int
		baselinePerDay   float64
		ratio            float64
		periodDays       float64
		baselinePatients int
	}
	var rows []row
	days := to.Sub(from).Hours() / 24
	for agent, n := range now {
		perDay := float64(before[agent]) / float64(baselineDays)
		expected := perDay * days
		ratio := float64(n) / max(expected, 1)
		if n >= 10 && ratio >= threshold {
			rows = append(rows, row{agent, n, perDay, ratio, days, before[agent]})
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].ratio > rows[j].ratio })
	if format == "csv" {
		c.Header("Content-Type", "text/csv; charset=utf-8")
		c.Status(http.StatusOK)
		w := csv.NewWriter(c.Writer)
		_ = w.Write([]string{"agent", "patients_in_period", "period_days", "baseline_patients", "baseline_patients_per_day", "ratio"})
		for _, r := range rows {
			_ = w.Write([]string{r.agent, strconv.Itoa(r.patients), strconv.FormatFloat(r.periodDays, 'f', 2, 64),
				strconv.Itoa(r.baselinePatients), strconv.FormatFloat(r.baselinePerDay, 'f', 3, 64), strconv.FormatFloat(r.ratio, 'f', 1, 64)})
		}
		if err != nil {
			_ = w.Write([]string{"#error", "the report was cut short: the access log could not be read"})
		}
		w.Flush()
		return
	}
	out := []map[string]any{}
	for _, r := range rows {
		out = append(out, map[string]any{"agent": r.agent, "patients_in_period": r.patients, "period_days": r.periodDays,
			"baseline_patients": r.baselinePatients, "baseline_patients_per_day": r.baselinePerDay, "ratio": r.ratio})
	}
	res := map[string]any{"from": from, "to": to, "threshold": threshold, "baseline_days": baselineDays, "unusual": out}
	if err != nil {
		res["error"] = "the report was cut short: the access log could not be read"
	}
	c.JSON(http.StatusOK, res)
}
