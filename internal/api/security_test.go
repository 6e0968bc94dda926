package api_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fhirgate/fhirgate/internal/audit"
	"github.com/fhirgate/fhirgate/internal/auth"
	"github.com/fhirgate/fhirgate/internal/fhir"
	"github.com/fhirgate/fhirgate/internal/ingest"
	"github.com/fhirgate/fhirgate/internal/store"
	"github.com/fhirgate/fhirgate/internal/validate"
)

// Security labels and systems of the fixtures.
const (
	sysConfidentiality = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
	sysActCode         = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
	sysObsCategory     = "http://terminology.hl7.org/CodeSystem/observation-category"
	// phiFamily is a family name that must never reach the audit log in
	// plaintext.
	phiFamily = "Quixotelane"
)

// Subjects of the fixtures.
var (
	// The loader may write labeled data: labels hold for backend services
	// too (role restricted, consent 42CFRPart2).
	backend   = auth.Claims{Subject: "svc-loader", Scope: "system/*.cruds", Roles: []string{"restricted"}, Consents: []string{"42CFRPart2"}}
	drOrg1    = auth.Claims{Subject: "dr-org1", Roles: []string{"clinician"}, Organization: "org1"}
	drOrg2    = auth.Claims{Subject: "dr-org2", Roles: []string{"clinician"}, Organization: "org2"}
	auditor   = auth.Claims{Subject: "auditor-1", Roles: []string{"auditor"}}
	patientP1 = auth.Claims{Subject: "pat-p1", Roles: []string{"patient"}, Patient: "p1"}
)

// observation renders a test Observation (id "": none) of patient with a category and
// meta.security labels (codes of v3-Confidentiality for R and V, of
// v3-ActCode otherwise).
func observation(id, patient, category string, labels ...string) string {
	meta := ""
	if len(labels) > 0 {
		var sec []string
		for _, l := range labels {
			sys := sysActCode
			if l == "R" || l == "V" {
				sys = sysConfidentiality
			}
			sec = append(sec, fmt.Sprintf(`{"system":%q,"code":%q}`, sys, l))
		}
		meta = `"meta":{"security":[` + strings.Join(sec, ",") + `]},`
	}
	idMember := ""
	if id != "" {
		idMember = fmt.Sprintf(`"id":%q,`, id)
	}
	return fmt.Sprintf(`{"resourceType":"Observation",%s%s"status":"final",
		"category":[{"coding":[{"system":%q,"code":%q}]}],
		"code":{"coding":[{"system":"http://loinc.org","code":"2345-7"}],"text":"glucose"},
		"subject":{"reference":"Patient/%s"},"performer":[{"reference":"Practitioner/pr1"}],
		"valueQuantity":{"value":5.4,"unit":"mmol/L"}}`, idMember, meta, sysObsCategory, category, patient)
}

// loadFixtures writes, as a backend service: Organizations org1 and org2,
// Practitioner pr1, Patients p1, p2 (org1), p3, p4 (org2), and
// Observations:
//
//	o1   p1  laboratory       (2 versions)
//	o2   p1  vital-signs
//	o3   p3  laboratory       (2 versions)
//	o4   p4  laboratory
//	oR   p1  laboratory, R
//	oV   p1  laboratory, V
//	oHIV p1  laboratory, HIV
//	oPSY p1  laboratory, PSY
//	oETH p1  laboratory, ETH
//	oSUD p1  laboratory, SUD
//	oX   p1  laboratory, performer Patient/p3
//	oY   p3  laboratory, performer Patient/p1
func loadFixtures(t *testing.T, s *secureServer) {
	t.Helper()
	tok := s.token(t, backend)
	putAs := func(body string) {
		t.Helper()
		m := decode(t, []byte(body))
		r := s.as(t, tok, http.MethodPut, "/fhir/"+m["resourceType"].(string)+"/"+m["id"].(string), []byte(body))
		if r.Status != http.StatusOK && r.Status != http.StatusCreated {
			t.Fatalf("fixture %s/%s: status %d: %s", m["resourceType"], m["id"], r.Status, truncate(r.Body, 400))
		}
	}
	putAs(`{"resourceType":"Organization","id":"org1","name":"Org One"}`)
	putAs(`{"resourceType":"Organization","id":"org2","name":"Org Two"}`)
	putAs(`{"resourceType":"Practitioner","id":"pr1","name":[{"family":"Welby"}]}`)
	patient := func(id, org, family, birth string) string {
		return fmt.Sprintf(`{"resourceType":"Patient","id":%q,"name":[{"family":%q,"given":["Ann"]}],"birthDate":%q,
			"managingOrganization":{"reference":"Organization/%s"}}`, id, family, birth, org)
	}
	putAs(patient("p1", "org1", phiFamily, "1971-03-04"))
	putAs(patient("p2", "org1", "Bexley", "1980-01-02"))
	putAs(patient("p3", "org2", "Carrow", "1990-05-06"))
	putAs(patient("p4", "org2", "Dunmore", "1965-07-08"))
	putAs(observation("o1", "p1", "laboratory"))
	putAs(strings.Replace(observation("o1", "p1", "laboratory"), `"final"`, `"amended"`, 1))
	putAs(observation("o2", "p1", "vital-signs"))
	putAs(observation("o3", "p3", "laboratory"))
	putAs(strings.Replace(observation("o3", "p3", "laboratory"), `"final"`, `"amended"`, 1))
	putAs(observation("o4", "p4", "laboratory"))
	for _, l := range []string{"R", "V", "HIV", "PSY", "ETH", "SUD"} {
		putAs(observation("o"+l, "p1", "laboratory", l))
	}
	// References across organizations: oX (p1's) names p3 as performer,
	// oY (p3's) names p1.
	putAs(strings.Replace(observation("oX", "p1", "laboratory"), "Practitioner/pr1", "Patient/p3", 1))
	putAs(strings.Replace(observation("oY", "p3", "laboratory"), "Practitioner/pr1", "Patient/p1", 1))
}

// auditOf returns the audit record of the request that got r (by its
// X-Request-ID), failing the test when there is not exactly one.
func auditOf(t testing.TB, s *secureServer, r response) audit.Entry {
	t.Helper()
	id := r.Header.Get("X-Request-ID")
	if id == "" {
		t.Fatalf("response without X-Request-ID")
	}
	var found []audit.Entry
	for _, e := range s.auditRecords(t) {
		if e.RequestID == id {
			found = append(found, e)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d audit records for request %s, want 1", len(found), id)
	}
	return found[0]
}

// bundleIDs returns "Type/id" of every entry of a Bundle response, by
// search mode ("match", "include", or "" for history entries).
func bundleIDs(t testing.TB, body []byte) map[string][]string {
	t.Helper()
	b := decode(t, body)
	out := map[string][]string{}
	for _, e := range bundleEntries(t, b) {
		mode := ""
		if sm, _ := e["search"].(map[string]any); sm != nil {
			mode, _ = sm["mode"].(string)
		}
		res, _ := e["resource"].(map[string]any)
		if res == nil {
			continue
		}
		out[mode] = append(out[mode], fmt.Sprintf("%v/%v", res["resourceType"], res["id"]))
	}
	return out
}

func allIDs(m map[string][]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v...)
	}
	slices.Sort(out)
	return out
}

// target is a resource of the fixtures and the patient whose compartment
// it is in ("" for none).
type target struct{ typ, id, patient string }

func (g target) ref() string { return g.typ + "/" + g.id }

var (
	tO1   = target{"Observation", "o1", "p1"}
	tO2   = target{"Observation", "o2", "p1"}
	tO3   = target{"Observation", "o3", "p3"}
	tO4   = target{"Observation", "o4", "p4"}
	tP1   = target{"Patient", "p1", "p1"}
	tOHIV = target{"Observation", "oHIV", "p1"}
)

// matrixRule is one shipped policy rule: a subject it allows and a
// resource it lets that subject see, and a subject it denies (often the
// same) and a resource it keeps from that subject.
type matrixRule struct {
	name        string
	allow, deny auth.Claims
	// allowHdr, denyHdr: extra request headers.
	allowHdr, denyHdr []string
	// denyFor: the denied subject by interaction, when it differs.
	denyFor map[string]auth.Claims
	ok, no  target
	// refused: the denied requests are refused outright (403); otherwise
	// the resource is hidden (404 for read, vread and history, absent
	// from search and include results).
	refused bool
	// allowed: the interactions with an allowed case (nil: all five).
	allowed []string
	// allowPath: paths of allowed cases that differ from the default.
	allowPath map[string]string
	// include and included: the _include of the allowed include case
	// (default: the subject or organization of ok) and what it adds.
	include, included string
	// Audit expectations: the reason of allowed requests, the reason of
	// denied reads (and of every refused request), the interaction when
	// it is not the request's, whether the denial comes before any policy
	// decision (authentication), break-glass and purpose of use of allowed
	// requests.
	allowReason, denyReason           string
	allowInteraction, denyInteraction string
	denyNoDecision                    bool
	breakGlass                        bool
	purpose                           string
}

var matrixInteractions = []string{"read", "vread", "search", "history", "include"}

func defaultInclude(typ string) string {
	if typ == "Patient" {
		return "Patient:organization"
	}
	return typ + ":subject"
}

// matrixPath is the request of an interaction on g; a search also asks for
// also (by _id) so that the response shows it is left out.
func matrixPath(interaction string, g target, also string, include string) string {
	switch interaction {
	case "read":
		return "/fhir/" + g.typ + "/" + g.id
	case "vread":
		return "/fhir/" + g.typ + "/" + g.id + "/_history/1"
	case "history":
		return "/fhir/" + g.typ + "/" + g.id + "/_history"
	case "search":
		ids := g.id
		if also != "" && also != g.id {
			ids += "," + also
		}
		return "/fhir/" + g.typ + "?_id=" + ids
	case "include":
		return "/fhir/" + g.typ + "?_id=" + g.id + "&_include=" + q(include)
	}
	panic("unknown interaction " + interaction)
}

// auditInteraction is the audit interaction of a matrix request.
func auditInteraction(interaction string) string {
	if interaction == "include" {
		return audit.InteractionSearch
	}
	return interaction
}

// wantRecord is what a request's audit record must say.
type wantRecord struct {
	outcome, subject, interaction string
	patients                      []string // exactly these patient ids
	reason                        string   // contained in Reason ("" : not checked)
	noDecision                    bool
	breakGlass                    bool
	purpose                       string // "" : not checked
}

func checkRecord(t testing.TB, rec audit.Entry, w wantRecord) {
	t.Helper()
	if rec.Outcome != w.outcome {
		t.Errorf("audit outcome = %q, want %q", rec.Outcome, w.outcome)
	}
	if rec.SubjectID != w.subject {
		t.Errorf("audit subject = %q, want %q", rec.SubjectID, w.subject)
	}
	if rec.Interaction != w.interaction {
		t.Errorf("audit interaction = %q, want %q", rec.Interaction, w.interaction)
	}
	if !slices.Equal(rec.PatientIDs, w.patients) {
		t.Errorf("audit patient ids = %q, want %q", rec.PatientIDs, w.patients)
	}
	if rec.Tenant != "test" {
		t.Errorf("audit tenant = %q, want test", rec.Tenant)
	}
	if !w.noDecision && rec.DecisionID == "" {
		t.Errorf("audit record without a decision id")
	}
	// Policy reasons are rule names (space-separated); authentication
	// reasons are phrases.
	if w.reason != "" && !slices.Contains(strings.Fields(rec.Reason), w.reason) &&
		(!strings.Contains(w.reason, " ") || !strings.Contains(rec.Reason, w.reason)) {
		t.Errorf("audit reason = %q, want it to name %q", rec.Reason, w.reason)
	}
	if rec.BreakGlass != w.breakGlass {
		t.Errorf("audit break-glass = %v, want %v", rec.BreakGlass, w.breakGlass)
	}
	if w.purpose != "" && rec.PurposeOfUse != w.purpose {
		t.Errorf("audit purpose of use = %q, want %q", rec.PurposeOfUse, w.purpose)
	}
	if rec.TokenID == "" && w.subject != "" {
		t.Errorf("audit record without the token id")
	}
}

func matrixRules() []matrixRule {
	drCT := auth.Claims{Subject: "dr-ct", Roles: []string{"clinician"}, CareTeam: []string{"p4"}}
	restricted := auth.Claims{Subject: "dr-org1-restricted", Roles: []string{"clinician", "restricted"}, Organization: "org1"}
	part2 := auth.Claims{Subject: "dr-org1-part2", Roles: []string{"clinician"}, Organization: "org1", Consents: []string{"42CFRPart2"}}
	erDoc := auth.Claims{Subject: "er-doc", Roles: []string{"clinician", "break-glass"}, Organization: "org2", PurposeOfUse: "ETREAT"}
	erDocNoPurpose := auth.Claims{Subject: "er-doc", Roles: []string{"clinician", "break-glass"}, Organization: "org2"}
	erDoc2 := auth.Claims{Subject: "er-doc-2", Roles: []string{"clinician", "break-glass"}, Organization: "org2"}
	patientRS := auth.Claims{Subject: "pat-p1-rs", Roles: []string{"patient"}, Patient: "p1", Scope: "patient/*.rs"}
	patientR := auth.Claims{Subject: "pat-p1-r", Roles: []string{"patient"}, Patient: "p1", Scope: "patient/*.r"}
	patientS := auth.Claims{Subject: "pat-p1-s", Roles: []string{"patient"}, Patient: "p1", Scope: "patient/*.s"}
	patientLab := auth.Claims{Subject: "pat-p1-lab", Roles: []string{"patient"}, Patient: "p1",
		Scope: "patient/Observation.rs?category=" + sysObsCategory + "|laboratory patient/Patient.rs"}
	v1 := auth.Claims{Subject: "dr-v1", Roles: []string{"clinician"}, Organization: "org1", Scope: "user/Observation.read user/Practitioner.read"}
	v2 := auth.Claims{Subject: "dr-v2", Roles: []string{"clinician"}, Organization: "org1", Scope: "user/Observation.rs user/Practitioner.rs"}
	admin := auth.Claims{Subject: "admin-1", Roles: []string{"admin"}}
	emr := auth.Claims{Subject: "emr-lab", Roles: []string{"emr"}, Scope: "system/*.cruds", Sources: []string{"example-lab"}}

	label := func(code, reason string, allow, deny auth.Claims) matrixRule {
		g := target{"Observation", "o" + code, "p1"}
		return matrixRule{name: "label-" + code, allow: allow, deny: deny, ok: g, no: g,
			included: "Patient/p1", allowReason: "clinician-organization", denyReason: reason}
	}
	return []matrixRule{
		{name: "clinician-organization", allow: drOrg1, deny: drOrg1, ok: tO1, no: tO3, included: "Patient/p1",
			allowReason: "clinician-organization", denyReason: "compartment"},
		{name: "clinician-care-team", allow: drCT, deny: drCT, ok: tO4, no: tO3, included: "Patient/p4",
			allowReason: "clinician-care-team", denyReason: "compartment"},
		{name: "patient-app", allow: patientP1, deny: patientP1, ok: tO1, no: tO3, included: "Patient/p1",
			allowReason: "patient-app", denyReason: "compartment"},
		// SMART scopes limit types: user/Observation.read (v1) and
		// user/Observation.rs (v2) reach Observations, not Patients.
		{name: "scope-v1-type", allow: v1, deny: v1, ok: tO1, no: tP1, refused: true,
			include: "Observation:performer", included: "Practitioner/pr1",
			allowReason: "clinician-organization", denyReason: "scope-missing"},
		{name: "scope-v2-type", allow: v2, deny: v2, ok: tO1, no: tP1, refused: true,
			include: "Observation:performer", included: "Practitioner/pr1",
			allowReason: "clinician-organization", denyReason: "scope-missing"},
		// ... and interactions: patient/*.r cannot search, patient/*.s
		// cannot read.
		{name: "scope-v2-interaction", allow: patientRS, ok: tO1, no: tO1, refused: true, included: "Patient/p1",
			denyFor:     map[string]auth.Claims{"read": patientS, "vread": patientS, "history": patientS, "search": patientR, "include": patientR},
			allowReason: "patient-app", denyReason: "scope-missing"},
		// Granular scope: laboratory Observations only.
		{name: "granular-scope", allow: patientLab, deny: patientLab, ok: tO1, no: tO2, included: "Patient/p1",
			allowReason: "patient-app", denyReason: "granular-scope"},
		label("R", "label-restricted", restricted, drOrg1),
		label("V", "label-restricted", restricted, drOrg1),
		label("HIV", "label-sensitive", restricted, drOrg1),
		label("PSY", "label-sensitive", restricted, drOrg1),
		label("ETH", "label-sensitive", restricted, drOrg1),
		// SUD needs the consent; role restricted does not do.
		label("SUD", "label-sensitive", part2, restricted),
		// Break-glass by claim: another organization's patient's HIV
		// record; without the purpose of use, hidden.
		{name: "break-glass-claim", allow: erDoc, deny: erDocNoPurpose, ok: tOHIV, no: tOHIV, included: "Patient/p1",
			allowReason: "break-glass", denyReason: "compartment", breakGlass: true, purpose: "ETREAT"},
		// Break-glass by header; the header without role break-glass is
		// refused before any policy decision.
		{name: "break-glass-header", allow: erDoc2, allowHdr: []string{"X-Purpose-Of-Use", "BTG"},
			deny: drOrg2, denyHdr: []string{"X-Purpose-Of-Use", "BTG"}, ok: tO1, no: tO1, refused: true, included: "Patient/p1",
			allowReason: "break-glass", denyReason: "purpose of use not allowed", denyInteraction: audit.InteractionBreakGlass,
			denyNoDecision: true, breakGlass: true, purpose: "BTG"},
		// Auditors: the audit log (read and search: the auditor API has
		// no vread, history or include), never clinical data.
		{name: "auditor", allow: auditor, deny: auditor, ok: target{"AuditEvent", "1", ""}, no: tO1, refused: true,
			allowed: []string{"read", "search"}, allowPath: map[string]string{"search": "/fhir/AuditEvent?agent=svc-loader&_count=5"},
			allowReason: "auditor", allowInteraction: audit.InteractionAuditQuery, denyReason: "auditor-no-clinical"},
		// Administrators and EMR senders read nothing clinical (their
		// allowed actions are admin operations and writes: see
		// TestSecurityMatrixWrites).
		{name: "admin", deny: admin, no: tO1, refused: true, allowed: []string{}, denyReason: "admin-no-clinical"},
		{name: "emr-sender", deny: emr, no: tO1, refused: true, allowed: []string{}, denyReason: "emr-no-read"},
	}
}

// TestSecurityMatrix runs, for every shipped policy rule, an allowed and a
// denied read, vread, search, history and _include, and checks the
// response and the request's audit record.
func TestSecurityMatrix(t *testing.T) {
	t.Parallel()
	s := newSecureServer(t)
	loadFixtures(t, s)
	auditorTok := s.token(t, auditor)
	for _, r := range matrixRules() {
		t.Run(r.name, func(t *testing.T) {
			allowed := r.allowed
			if allowed == nil {
				allowed = matrixInteractions
			}
			for _, inter := range matrixInteractions {
				if slices.Contains(allowed, inter) {
					t.Run(inter+"/allowed", func(t *testing.T) { matrixAllowed(t, s, r, inter, auditorTok) })
				}
				t.Run(inter+"/denied", func(t *testing.T) { matrixDenied(t, s, r, inter) })
			}
		})
	}
}

func matrixAllowed(t *testing.T, s *secureServer, r matrixRule, inter, auditorTok string) {
	include := r.include
	if include == "" {
		include = defaultInclude(r.ok.typ)
	}
	path := r.allowPath[inter]
	if path == "" {
		also := ""
		if r.no.typ == r.ok.typ {
			also = r.no.id
		}
		path = matrixPath(inter, r.ok, also, include)
	}
	resp := s.as(t, s.token(t, r.allow), http.MethodGet, path, nil, r.allowHdr...)
	if resp.Status != http.StatusOK {
		t.Fatalf("GET %s: status %d, want 200: %s", path, resp.Status, truncate(resp.Body, 300))
	}
	var ids []string
	switch inter {
	case "read", "vread":
		m := decode(t, resp.Body)
		if got := fmt.Sprintf("%v/%v", m["resourceType"], m["id"]); got != r.ok.ref() {
			t.Errorf("GET %s returned %s, want %s", path, got, r.ok.ref())
		}
		ids = []string{r.ok.ref()}
	case "history":
		byMode := bundleIDs(t, resp.Body)
		ids = allIDs(byMode)
		if len(ids) == 0 {
			t.Errorf("history of %s is empty", r.ok.ref())
		}
		for _, id := range ids {
			if id != r.ok.ref() {
				t.Errorf("history of %s holds %s", r.ok.ref(), id)
			}
		}
	case "search", "include":
		byMode := bundleIDs(t, resp.Body)
		ids = allIDs(byMode)
		matches := append(byMode["match"], byMode[""]...) // AuditEvent searches have no search mode
		if !slices.Contains(matches, r.ok.ref()) {
			t.Errorf("GET %s: matches %q, want %s among them", path, matches, r.ok.ref())
		}
		if inter == "include" && r.included != "" && !slices.Contains(byMode["include"], r.included) {
			t.Errorf("GET %s: included %q, want %s", path, byMode["include"], r.included)
		}
	}
	if r.no.ref() != r.ok.ref() && slices.Contains(ids, r.no.ref()) {
		t.Errorf("GET %s: the hidden %s is in the response", path, r.no.ref())
	}
	var patients []string
	if r.ok.patient != "" {
		patients = []string{r.ok.patient}
	}
	interaction := r.allowInteraction
	if interaction == "" {
		interaction = auditInteraction(inter)
	}
	rec := auditOf(t, s, resp)
	checkRecord(t, rec, wantRecord{outcome: "200", subject: r.allow.Subject, interaction: interaction,
		patients: patients, reason: r.allowReason, breakGlass: r.breakGlass, purpose: r.purpose})
	if r.breakGlass {
		// The auditor API shows it as a security alert.
		ev := s.as(t, auditorTok, http.MethodGet, fmt.Sprintf("/fhir/AuditEvent/%d", rec.Seq), nil)
		if ev.Status != http.StatusOK {
			t.Fatalf("AuditEvent/%d: status %d", rec.Seq, ev.Status)
		}
		typ, _ := decode(t, ev.Body)["type"].(map[string]any)
		if typ["code"] != "110113" {
			t.Errorf("the AuditEvent of a break-glass request has type %v, want 110113 (Security Alert)", typ)
		}
	}
}

func matrixDenied(t *testing.T, s *secureServer, r matrixRule, inter string) {
	cl := r.deny
	if c, ok := r.denyFor[inter]; ok {
		cl = c
	}
	path := matrixPath(inter, r.no, "", defaultInclude(r.no.typ))
	resp := s.as(t, s.token(t, cl), http.MethodGet, path, nil, r.denyHdr...)
	interaction := r.denyInteraction
	if interaction == "" {
		interaction = auditInteraction(inter)
	}
	want := wantRecord{subject: cl.Subject, interaction: interaction, noDecision: r.denyNoDecision}
	switch {
	case r.refused:
		outcome(t, resp, http.StatusForbidden)
		want.outcome, want.reason = "403", r.denyReason
	case inter == "read" || inter == "vread" || inter == "history":
		outcome(t, resp, http.StatusNotFound)
		want.outcome, want.reason = "404", r.denyReason
		if resp.Header.Get("ETag") != "" || resp.Header.Get("Last-Modified") != "" {
			t.Errorf("GET %s: a hidden resource's version headers are sent: %v", path, resp.Header)
		}
	default:
		if resp.Status != http.StatusOK {
			t.Fatalf("GET %s: status %d, want 200: %s", path, resp.Status, truncate(resp.Body, 300))
		}
		if ids := allIDs(bundleIDs(t, resp.Body)); len(ids) != 0 {
			t.Errorf("GET %s: the hidden %s shows: %q", path, r.no.ref(), ids)
		}
		if tot, ok := decode(t, resp.Body)["total"]; ok && fmt.Sprint(tot) != "0" {
			t.Errorf("GET %s: total %v, want 0", path, tot)
		}
		want.outcome = "200"
	}
	if r.no.typ == "Observation" && strings.Contains(string(resp.Body), "glucose") {
		t.Errorf("GET %s: the response holds the hidden resource's content", path)
	}
	rec := auditOf(t, s, resp)
	checkRecord(t, rec, want)
	if len(rec.ResourceIDs) != 0 {
		t.Errorf("audit resource ids = %q, want none", rec.ResourceIDs)
	}
}

// emrLab is an EMR sender that may write as source profile example-lab.
var emrLab = auth.Claims{Subject: "emr-lab", Roles: []string{"emr"}, Scope: "system/*.cruds", Sources: []string{"example-lab"}}

// withSource sets meta.source of a resource body.
func withSource(body, source string) string {
	return strings.Replace(body, `"resourceType":"Observation",`, `"resourceType":"Observation","meta":{"source":"`+source+`"},`, 1)
}

// TestSecurityMatrixWrites covers the rules whose allowed side is a write:
// EMR senders write only their own sources (FHIR writes and pushes),
// clinicians write only within their reach.
func TestSecurityMatrixWrites(t *testing.T) {
	t.Parallel()
	s := newSecureServer(t)
	loadFixtures(t, s)
	emr := s.token(t, emrLab)
	dr := s.token(t, drOrg1)
	loader := s.token(t, backend)
	exists := func(t *testing.T, typ, id string) bool {
		t.Helper()
		r := s.as(t, loader, http.MethodGet, "/fhir/"+typ+"/"+id, nil)
		if r.Status != http.StatusOK && r.Status != http.StatusNotFound {
			t.Fatalf("read %s/%s as the loader: %d", typ, id, r.Status)
		}
		return r.Status == http.StatusOK
	}
	cases := []struct {
		name, token, method, path, body string
		hdr                             []string
		status                          int
		want                            wantRecord
		written                         string // "Type/id" that must (status < 300) or must not exist afterwards
		pushed                          bool   // the record lists the one pushed Patient (its id is the gateway's)
	}{
		{name: "emr-own-source/allowed", token: emr, method: http.MethodPut, path: "/fhir/Observation/oE1",
			body: withSource(observation("oE1", "p3", "laboratory"), "example-lab"), status: http.StatusCreated,
			want:    wantRecord{outcome: "201", subject: "emr-lab", interaction: "update", patients: []string{"p3"}, reason: "emr-source"},
			written: "Observation/oE1"},
		{name: "emr-other-source/denied", token: emr, method: http.MethodPut, path: "/fhir/Observation/oE2",
			body: withSource(observation("oE2", "p3", "laboratory"), "default"), status: http.StatusForbidden,
			want:    wantRecord{outcome: "403", subject: "emr-lab", interaction: "update", reason: "source-not-owned"},
			written: "Observation/oE2"},
		{name: "emr-overwrite-other-source/denied", token: emr, method: http.MethodPut, path: "/fhir/Observation/o3",
			body: withSource(observation("o3", "p3", "laboratory"), "example-lab"), status: http.StatusForbidden,
			want: wantRecord{outcome: "403", subject: "emr-lab", interaction: "update", reason: "source-not-owned"}},
		{name: "emr-push-own-source/allowed", token: emr, method: http.MethodPost, path: "/ingest/fhir?source=example-lab",
			body:   `{"resourceType":"Patient","id":"pushed1","name":[{"family":"Pushed"}]}` + "\n",
			hdr:    []string{"Content-Type", "application/fhir+ndjson"},
			status: http.StatusOK,
			want:   wantRecord{outcome: "200", subject: "emr-lab", interaction: "push", reason: "emr-source"}, pushed: true},
		{name: "emr-push-other-source/denied", token: emr, method: http.MethodPost, path: "/ingest/fhir?source=default",
			body:   `{"resourceType":"Patient","id":"pushed2","name":[{"family":"Pushed"}]}` + "\n",
			hdr:    []string{"Content-Type", "application/fhir+ndjson"},
			status: http.StatusForbidden,
			want:   wantRecord{outcome: "403", subject: "emr-lab", interaction: "push", reason: "source-not-owned"}},
		{name: "emr-push-bundle-other-source/denied", token: emr, method: http.MethodPost, path: "/fhir",
			body:   `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Patient","name":[{"family":"Tx"}]},"request":{"method":"POST","url":"Patient"}}]}`,
			hdr:    []string{"X-Fhirgate-Source", "default"},
			status: http.StatusForbidden,
			want:   wantRecord{outcome: "403", subject: "emr-lab", interaction: "transaction", reason: "source-not-owned"}},
		{name: "clinician-own-patient/allowed", token: dr, method: http.MethodPut, path: "/fhir/Observation/oC1",
			body: observation("oC1", "p1", "laboratory"), status: http.StatusCreated,
			want:    wantRecord{outcome: "201", subject: "dr-org1", interaction: "update", patients: []string{"p1"}, reason: "clinician-organization"},
			written: "Observation/oC1"},
		{name: "clinician-other-org-patient/denied", token: dr, method: http.MethodPost, path: "/fhir/Observation",
			body: observation("", "p3", "laboratory"), status: http.StatusForbidden,
			want: wantRecord{outcome: "403", subject: "dr-org1", interaction: "create", reason: "compartment"}},
		{name: "clinician-labeled-write/denied", token: dr, method: http.MethodPut, path: "/fhir/Observation/oC2",
			body: observation("oC2", "p1", "laboratory", "R"), status: http.StatusForbidden,
			want:    wantRecord{outcome: "403", subject: "dr-org1", interaction: "update", reason: "label-restricted"},
			written: "Observation/oC2"},
		{name: "auditor-write/denied", token: s.token(t, auditor), method: http.MethodPut, path: "/fhir/Observation/oA1",
			body: observation("oA1", "p1", "laboratory"), status: http.StatusForbidden,
			want:    wantRecord{outcome: "403", subject: "auditor-1", interaction: "update", reason: "auditor-no-clinical"},
			written: "Observation/oA1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := rowCount(t, s.pool)
			r := s.as(t, c.token, c.method, c.path, []byte(c.body), c.hdr...)
			if r.Status != c.status {
				t.Fatalf("%s %s: status %d, want %d: %s", c.method, c.path, r.Status, c.status, truncate(r.Body, 300))
			}
			if c.status >= 400 {
				outcome(t, r, c.status)
				if n := rowCount(t, s.pool); n != before {
					t.Errorf("a refused write changed the store: %d resources, was %d", n, before)
				}
			}
			if c.written != "" {
				typ, id, _ := strings.Cut(c.written, "/")
				if got := exists(t, typ, id); got != (c.status < 300) {
					t.Errorf("%s exists = %v after status %d", c.written, got, c.status)
				}
			}
			rec := auditOf(t, s, r)
			if c.pushed {
				if len(rec.PatientIDs) != 1 || !slices.Contains(rec.ResourceIDs, "Patient/"+rec.PatientIDs[0]) {
					t.Errorf("the audit record of a push lists resources %q and patients %q, want the pushed Patient", rec.ResourceIDs, rec.PatientIDs)
				}
				c.want.patients = rec.PatientIDs
			}
			checkRecord(t, rec, c.want)
		})
	}
	// The overwrite left o3 as it was.
	r := s.as(t, loader, http.MethodGet, "/fhir/Observation/o3", nil)
	if v := versionID(t, r.Body); v != "2" || strings.Contains(string(r.Body), "example-lab") {
		t.Errorf("Observation/o3 changed by a refused write: version %s: %s", v, truncate(r.Body, 200))
	}
}

// b64 is base64url without padding (JWS).
func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// handToken builds a compact JWS from a header, claims and a signature
// function (nil: an empty signature).
func handToken(t *testing.T, header, claims map[string]any, sign func(input []byte) []byte) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	c, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	input := b64(h) + "." + b64(c)
	sig := ""
	if sign != nil {
		sig = b64(sign([]byte(input)))
	}
	return input + "." + sig
}

// devClaims are valid claims of dr-org1 for the test server's dev key.
func devClaims() map[string]any {
	now := time.Now()
	return map[string]any{"sub": "dr-org1", "iss": auth.DevIssuer, "aud": auth.DefaultAudience,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(), "jti": "hand-made",
		"scope": "user/*.cruds", "fhirgate_roles": []string{"clinician", "restricted"}, "organization": "org2"}
}

// TestSecurityBypassTokens: every forged or unacceptable credential gets
// 401 with an OperationOutcome and no data, and is audited as a failed
// login.
func TestSecurityBypassTokens(t *testing.T) {
	t.Parallel()
	s := newSecureServer(t)
	loadFixtures(t, s)

	other, err := auth.NewDevKey()
	if err != nil {
		t.Fatal(err)
	}
	otherTok, err := other.Mint(drOrg1)
	if err != nil {
		t.Fatal(err)
	}
	// A key of the attacker's own, claiming the server key's kid.
	_, attackerKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	kidForged := handToken(t, map[string]any{"alg": "EdDSA", "typ": "JWT", "kid": s.key.KeyID()}, devClaims(),
		func(in []byte) []byte { return ed25519.Sign(attackerKey, in) })
	// A valid token whose claims were edited (more roles, another
	// organization): the signature no longer matches.
	valid := s.token(t, drOrg1)
	parts := strings.Split(valid, ".")
	tampered := parts[0] + "." + b64(mustJSON(t, devClaims())) + "." + parts[2]
	// HS256 with the server's public key as the secret (key confusion).
	pub, _ := s.key.PublicJWK().Key.(ed25519.PublicKey)
	hsConfused := handToken(t, map[string]any{"alg": "HS256", "typ": "JWT", "kid": s.key.KeyID()}, devClaims(),
		func(in []byte) []byte { m := hmac.New(sha256.New, pub); m.Write(in); return m.Sum(nil) })
	now := time.Now()
	cases := []struct {
		name, token, path, reason string
		hdr                       []string
	}{
		{name: "signed by another key", token: otherTok, reason: "unknown key"},
		{name: "forged with the server's kid", token: kidForged, reason: "signature"},
		{name: "tampered claims", token: tampered, reason: "signature"},
		{name: "alg none", token: handToken(t, map[string]any{"alg": "none", "typ": "JWT"}, devClaims(), nil), reason: "algorithm not allowed"},
		{name: "alg none with kid", token: handToken(t, map[string]any{"alg": "none", "kid": s.key.KeyID()}, devClaims(), nil), reason: "algorithm not allowed"},
		{name: "HS256 with the public key", token: hsConfused, reason: "algorithm not allowed"},
		{name: "expired", token: s.token(t, auth.Claims{Subject: "dr-org1", Roles: []string{"clinician"}, Organization: "org1",
			IssuedAt: now.Add(-3 * time.Hour), Expiry: now.Add(-2 * time.Hour)}), reason: "expired"},
		{name: "not yet valid", token: s.token(t, auth.Claims{Subject: "dr-org1", Roles: []string{"clinician"}, Organization: "org1",
			NotBefore: now.Add(time.Hour), Expiry: now.Add(2 * time.Hour)}), reason: "not yet valid"},
		{name: "wrong audience", token: s.token(t, auth.Claims{Subject: "dr-org1", Roles: []string{"clinician"}, Organization: "org1",
			Audience: "another-api"}), reason: "wrong audience"},
		{name: "wrong issuer", token: s.token(t, auth.Claims{Subject: "dr-org1", Roles: []string{"clinician"}, Organization: "org1",
			Issuer: "https://evil.example"}), reason: "wrong issuer"},
		{name: "no credentials", reason: "no credentials"},
		{name: "token in the query string", path: "/fhir/Observation/o1?access_token=" + valid, reason: "no credentials"},
		{name: "token in a Basic header", hdr: []string{"Authorization", "Basic " + valid}, reason: "unsupported authorization scheme"},
		{name: "garbage", token: "not.a.token", reason: "malformed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := c.path
			if path == "" {
				path = "/fhir/Observation/o1"
			}
			r := s.as(t, c.token, http.MethodGet, path, nil, c.hdr...)
			outcome(t, r, http.StatusUnauthorized)
			if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("WWW-Authenticate = %q", r.Header.Get("WWW-Authenticate"))
			}
			if strings.Contains(string(r.Body), "glucose") || strings.Contains(string(r.Body), valid) {
				t.Errorf("the 401 holds data or the token: %s", truncate(r.Body, 300))
			}
			rec := auditOf(t, s, r)
			checkRecord(t, rec, wantRecord{outcome: "401", interaction: audit.InteractionLoginFailed, reason: c.reason, noDecision: true})
			if len(rec.ResourceIDs) != 0 {
				t.Errorf("a failed login lists resources %q", rec.ResourceIDs)
			}
		})
	}
	// The same request with the valid token works: the 401s are the
	// credentials' doing.
	if r := s.as(t, valid, http.MethodGet, "/fhir/Observation/o1", nil); r.Status != http.StatusOK {
		t.Errorf("valid token: status %d", r.Status)
	}
}

// TestSecurityBypassSearch: no search feature reaches what the policy
// hides: _include, _revinclude, chained and reverse-chained parameters,
// batch GET entries, history, totals and counts.
func TestSecurityBypassSearch(t *testing.T) {
	t.Parallel()
	s := newSecureServer(t)
	loadFixtures(t, s)
	dr := s.token(t, drOrg1)
	obsOnly := s.token(t, auth.Claims{Subject: "dr-obs", Roles: []string{"clinician"}, Organization: "org1", Scope: "user/Observation.rs"})
	patOnly := s.token(t, auth.Claims{Subject: "dr-pat", Roles: []string{"clinician"}, Organization: "org1", Scope: "user/Patient.rs"})
	app := s.token(t, patientP1)

	get := func(t *testing.T, tok, path string) (response, map[string][]string) {
		t.Helper()
		r := s.as(t, tok, http.MethodGet, path, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("GET %s: status %d: %s", path, r.Status, truncate(r.Body, 300))
		}
		return r, bundleIDs(t, r.Body)
	}

	t.Run("include and revinclude", func(t *testing.T) {
		cases := []struct {
			name, tok, path string
			want            []string // exactly these entries
			patients        []string // exactly these in the audit record
		}{
			// A user/Observation.rs token includes no Patient, Practitioner
			// or anything it has no scope for.
			{"include beyond the scope", obsOnly, "/fhir/Observation?_id=o1&_include=Observation:subject", []string{"Observation/o1"}, []string{"p1"}},
			{"include * beyond the scope", obsOnly, "/fhir/Observation?_id=o1&_include=" + q("Observation:*"), []string{"Observation/o1"}, []string{"p1"}},
			{"iterate beyond the scope", obsOnly, "/fhir/Observation?_id=o1&_include:iterate=" + q("Observation:subject"), []string{"Observation/o1"}, []string{"p1"}},
			// A user/Patient.rs token revincludes no Observation.
			{"revinclude beyond the scope", patOnly, "/fhir/Patient?_id=p1&_revinclude=Observation:subject", []string{"Patient/p1"}, []string{"p1"}},
			// Within scope, the included resources are filtered too:
			// labeled Observations and other organizations' data stay out.
			{"revinclude of labeled resources", dr, "/fhir/Patient?_id=p1&_revinclude=Observation:subject",
				[]string{"Observation/o1", "Observation/o2", "Observation/oX", "Patient/p1"}, []string{"p1"}},
			{"include of another organization's patient", dr, "/fhir/Observation?_id=oX&_include=Observation:performer",
				[]string{"Observation/oX"}, []string{"p1"}},
			{"typed include of another organization's patient", dr, "/fhir/Observation?_id=oX&_include=" + q("Observation:performer:Patient"),
				[]string{"Observation/oX"}, []string{"p1"}},
			{"revinclude from another organization's patient", dr, "/fhir/Patient?_id=p1&_revinclude=Observation:performer",
				[]string{"Patient/p1"}, []string{"p1"}},
			{"patient app revinclude from another patient", app, "/fhir/Patient?_id=p1&_revinclude=Observation:performer",
				[]string{"Patient/p1"}, []string{"p1"}},
			{"patient app include of another patient", app, "/fhir/Observation?_id=oX&_include=Observation:performer",
				[]string{"Observation/oX"}, []string{"p1"}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				r, ids := get(t, c.tok, c.path)
				if got := allIDs(ids); !slices.Equal(got, c.want) {
					t.Errorf("GET %s: entries %q, want %q", c.path, got, c.want)
				}
				rec := auditOf(t, s, r)
				if !slices.Equal(rec.PatientIDs, c.patients) {
					t.Errorf("audit patient ids = %q, want %q", rec.PatientIDs, c.patients)
				}
				if rec.Outcome != "200" || rec.Interaction != "search" {
					t.Errorf("audit %s/%s, want search/200", rec.Interaction, rec.Outcome)
				}
			})
		}
	})

	t.Run("chained and reverse-chained parameters", func(t *testing.T) {
		// The search parser refuses them (ignoring them would broaden a
		// search; evaluating them would test hidden resources).
		for _, path := range []string{
			"/fhir/Observation?subject.name=Carrow",
			"/fhir/Observation?subject:Patient.family=Carrow",
			"/fhir/Observation?patient.organization=org2",
			"/fhir/Observation?patient._security=HIV",
			"/fhir/Patient?_has:Observation:patient:code=2345-7",
			"/fhir/Patient?_has:Observation:patient:_security=HIV",
			"/fhir/Patient?_has:Observation:subject:_id=o3",
		} {
			for _, tok := range []string{dr, app} {
				r := s.as(t, tok, http.MethodGet, path, nil)
				outcome(t, r, http.StatusBadRequest)
				for _, leak := range []string{"Carrow", "glucose", `"Patient/p3"`, "o3"} {
					if strings.Contains(string(r.Body), leak) {
						t.Errorf("GET %s: the refusal holds %q: %s", path, leak, truncate(r.Body, 300))
					}
				}
				if rec := auditOf(t, s, r); rec.Outcome != "400" || len(rec.PatientIDs) != 0 {
					t.Errorf("GET %s: audit outcome %s patients %q", path, rec.Outcome, rec.PatientIDs)
				}
			}
		}
		// The same through POST _search.
		r := s.as(t, dr, http.MethodPost, "/fhir/Patient/_search", []byte("_has:Observation:patient:code=2345-7"),
			"Content-Type", "application/x-www-form-urlencoded")
		outcome(t, r, http.StatusBadRequest)
		// Reverse chaining in other letter cases is not a reverse chain:
		// at most an ignored parameter, and the result is within reach.
		_, ids := get(t, dr, "/fhir/Patient?_HAS:Observation:patient:_id=o3")
		for _, id := range allIDs(ids) {
			if id == "Patient/p3" || id == "Patient/p4" {
				t.Errorf("_HAS revealed %s", id)
			}
		}
		// Label search finds nothing hidden, and counts none.
		r, ids = get(t, dr, "/fhir/Observation?_security=HIV&_total=accurate")
		if len(allIDs(ids)) != 0 || fmt.Sprint(decode(t, r.Body)["total"]) != "0" {
			t.Errorf("_security=HIV: %q total %v", allIDs(ids), decode(t, r.Body)["total"])
		}
	})

	t.Run("batch GET entries", func(t *testing.T) {
		batch := `{"resourceType":"Bundle","type":"batch","entry":[
			{"request":{"method":"GET","url":"Observation/o3"}},
			{"request":{"method":"GET","url":"Observation/zzz"}},
			{"request":{"method":"GET","url":"Observation?_id=o3,o1"}},
			{"request":{"method":"GET","url":"Observation/o3/_history/1"}},
			{"request":{"method":"GET","url":"Patient?_has:Observation:patient:code=2345-7"}}]}`
		r := s.as(t, dr, http.MethodPost, "/fhir", []byte(batch))
		if r.Status != http.StatusOK {
			t.Fatalf("batch: status %d: %s", r.Status, truncate(r.Body, 300))
		}
		entries := bundleEntries(t, decode(t, r.Body))
		if len(entries) != 5 {
			t.Fatalf("batch: %d entries, want 5", len(entries))
		}
		status := func(i int) string {
			resp, _ := entries[i]["response"].(map[string]any)
			s, _ := resp["status"].(string)
			return s
		}
		if !strings.HasPrefix(status(0), "404") || !strings.HasPrefix(status(1), "404") || !strings.HasPrefix(status(3), "404") {
			t.Errorf("batch reads of hidden and missing: %s, %s, %s; want 404s", status(0), status(1), status(3))
		}
		if !strings.HasPrefix(status(4), "400") {
			t.Errorf("batch _has: %s, want 400", status(4))
		}
		body := string(r.Body)
		if strings.Contains(body, `"id":"o3"`) || strings.Contains(body, "Observation/o3/_history") {
			t.Errorf("batch shows the hidden Observation: %s", truncate(r.Body, 600))
		}
		// Hidden and missing answer alike.
		hidden, _ := json.Marshal(entries[0]["response"])
		missing, _ := json.Marshal(entries[1]["response"])
		if strings.ReplaceAll(string(hidden), "o3", "zzz") != string(missing) {
			t.Errorf("batch: hidden %s differs from missing %s", hidden, missing)
		}
		res, _ := entries[2]["resource"].(map[string]any)
		if got := allIDs(bundleIDs(t, mustJSON(t, res))); !slices.Equal(got, []string{"Observation/o1"}) {
			t.Errorf("batch search: %q, want only Observation/o1", got)
		}
		if rec := auditOf(t, s, r); slices.Contains(rec.PatientIDs, "p3") {
			t.Errorf("batch audit lists p3: %q", rec.PatientIDs)
		}
	})

	t.Run("history", func(t *testing.T) {
		// Instance history of a hidden resource: 404 as if missing, no
		// versions.
		hidden := s.as(t, dr, http.MethodGet, "/fhir/Observation/o3/_history", nil)
		missing := s.as(t, dr, http.MethodGet, "/fhir/Observation/zzz/_history", nil)
		outcome(t, hidden, http.StatusNotFound)
		if strings.ReplaceAll(string(hidden.Body), "o3", "zzz") != string(missing.Body) {
			t.Errorf("history of hidden %s differs from missing %s", hidden.Body, missing.Body)
		}
		// Type and system history leave hidden resources out, every
		// version of them.
		for _, path := range []string{"/fhir/Observation/_history?_count=100", "/fhir/_history?_count=100", "/fhir/Patient/_history"} {
			_, ids := get(t, dr, path)
			for _, id := range allIDs(ids) {
				switch id {
				case "Observation/o3", "Observation/o4", "Observation/oY", "Patient/p3", "Patient/p4",
					"Observation/oR", "Observation/oV", "Observation/oHIV", "Observation/oPSY", "Observation/oETH", "Observation/oSUD":
					t.Errorf("GET %s shows %s", path, id)
				}
			}
			if !slices.Contains(allIDs(ids), "Observation/o1") && strings.Contains(path, "Observation") {
				t.Errorf("GET %s: Observation/o1 missing", path)
			}
		}
		// Paging through the type history: full pages of what may be seen.
		seen := map[string]int{}
		next := "/fhir/Observation/_history?_count=2"
		for pages := 0; next != "" && pages < 20; pages++ {
			r, ids := get(t, dr, next)
			for _, id := range allIDs(ids) {
				seen[id]++
			}
			next = strings.TrimPrefix(link(decode(t, r.Body), "next"), s.URL)
		}
		if seen["Observation/o1"] != 2 || seen["Observation/o3"] != 0 {
			t.Errorf("paged history: %v, want o1 twice and no o3", seen)
		}
	})

	t.Run("totals and counts", func(t *testing.T) {
		// Counted with the loader's view: what each clinician may see.
		want := map[string]map[string]int{
			"dr-org1": {"Observation": 3, "Patient": 2}, // o1 o2 oX; p1 p2
			"dr-org2": {"Observation": 3, "Patient": 2}, // o3 o4 oY; p3 p4
			"loader":  {"Observation": 12, "Patient": 4},
		}
		toks := map[string]string{"dr-org1": dr, "dr-org2": s.token(t, drOrg2), "loader": s.token(t, backend)}
		for who, types := range want {
			for typ, n := range types {
				r, ids := get(t, toks[who], "/fhir/"+typ+"?_total=accurate&_count=1")
				if got := fmt.Sprint(decode(t, r.Body)["total"]); got != fmt.Sprint(n) {
					t.Errorf("%s: %s?_total=accurate: total %s, want %d", who, typ, got, n)
				}
				if len(allIDs(ids)) != 1 {
					t.Errorf("%s: %s?_count=1: %d entries", who, typ, len(allIDs(ids)))
				}
				r, ids = get(t, toks[who], "/fhir/"+typ+"?_summary=count")
				if got := fmt.Sprint(decode(t, r.Body)["total"]); got != fmt.Sprint(n) || len(allIDs(ids)) != 0 {
					t.Errorf("%s: %s?_summary=count: total %s with %d entries, want %d and none", who, typ, got, len(allIDs(ids)), n)
				}
				// Paging returns every visible match exactly once.
				var all []string
				next := "/fhir/" + typ + "?_count=2"
				for pages := 0; next != "" && pages < 20; pages++ {
					r, ids := get(t, toks[who], next)
					all = append(all, ids["match"]...)
					next = strings.TrimPrefix(link(decode(t, r.Body), "next"), s.URL)
				}
				if len(all) != n {
					t.Errorf("%s: paging %s: %d matches %q, want %d", who, typ, len(all), all, n)
				}
			}
		}
	})

	t.Run("other tenants", func(t *testing.T) {
		// Resources of another tenant in the same database: out of reach
		// even for a subject who may see every patient of this one.
		w := ingest.New(store.New(s.pool), validate.Resource)
		for _, body := range []string{observation("ot1", "pt1", "laboratory"), `{"resourceType":"Patient","id":"pt1"}`} {
			res, err := fhir.Parse([]byte(body))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Update(t.Context(), "other", res.Type, res.ID, res, 0); err != nil {
				t.Fatalf("write to tenant other: %v", err)
			}
		}
		for _, tok := range []string{s.token(t, backend), dr} {
			for _, c := range []struct{ hidden, missing string }{
				{"/fhir/Observation/ot1", "/fhir/Observation/zzz"},
				{"/fhir/Observation/ot1/_history/1", "/fhir/Observation/zzz/_history/1"},
				{"/fhir/Observation/ot1/_history", "/fhir/Observation/zzz/_history"},
				{"/fhir/Patient/pt1", "/fhir/Patient/zzz"},
			} {
				h, m := s.as(t, tok, http.MethodGet, c.hidden, nil), s.as(t, tok, http.MethodGet, c.missing, nil)
				id := strings.Split(c.hidden, "/")[3]
				if h.Status != http.StatusNotFound || strings.ReplaceAll(string(h.Body), id, "zzz") != string(m.Body) {
					t.Errorf("GET %s (another tenant's): %d %s; missing: %d %s", c.hidden, h.Status, h.Body, m.Status, m.Body)
				}
			}
			for _, path := range []string{"/fhir/Observation?_id=ot1", "/fhir/Patient?_id=pt1&_revinclude=Observation:subject",
				"/fhir/_history?_count=100", "/fhir/Observation?subject=Patient/pt1&_total=accurate"} {
				_, ids := get(t, tok, path)
				for _, id := range allIDs(ids) {
					if id == "Observation/ot1" || id == "Patient/pt1" {
						t.Errorf("GET %s shows another tenant's %s", path, id)
					}
				}
			}
		}
	})

	t.Run("guessing ids", func(t *testing.T) {
		// A deleted resource of another organization: as unknown as one
		// never written. Its own organization still sees it was deleted.
		loader := s.token(t, backend)
		if r := s.as(t, loader, http.MethodPut, "/fhir/Observation/oDel", []byte(observation("oDel", "p3", "laboratory"))); r.Status != http.StatusCreated {
			t.Fatalf("create oDel: %d", r.Status)
		}
		if r := s.as(t, loader, http.MethodDelete, "/fhir/Observation/oDel", nil); r.Status != http.StatusOK && r.Status != http.StatusNoContent {
			t.Fatalf("delete oDel: %d", r.Status)
		}
		if r := s.as(t, s.token(t, drOrg2), http.MethodGet, "/fhir/Observation/oDel", nil); r.Status != http.StatusGone {
			t.Errorf("dr-org2 reads its deleted Observation: %d, want 410", r.Status)
		}
		for _, c := range []struct{ hidden, missing string }{
			{"/fhir/Observation/o3", "/fhir/Observation/zzz"},
			{"/fhir/Patient/p3", "/fhir/Patient/zzz"},
			{"/fhir/Observation/o3/_history/1", "/fhir/Observation/zzz/_history/1"},
			{"/fhir/Observation/o3/_history/2", "/fhir/Observation/zzz/_history/2"},
			{"/fhir/Observation/o3/_history", "/fhir/Observation/zzz/_history"},
			{"/fhir/Observation/oR", "/fhir/Observation/zzz"},
			{"/fhir/Observation/oR/_history/1", "/fhir/Observation/zzz/_history/1"},
			{"/fhir/Observation/oDel", "/fhir/Observation/zzz"},
			{"/fhir/Observation/oDel/_history/1", "/fhir/Observation/zzz/_history/1"},
			{"/fhir/Observation/oDel/_history/2", "/fhir/Observation/zzz/_history/2"},
			{"/fhir/Observation/oDel/_history", "/fhir/Observation/zzz/_history"},
		} {
			id := strings.Split(c.hidden, "/")[3]
			h := s.as(t, dr, http.MethodGet, c.hidden, nil)
			m := s.as(t, dr, http.MethodGet, c.missing, nil)
			if h.Status != http.StatusNotFound || m.Status != http.StatusNotFound {
				t.Errorf("GET %s: %d, GET %s: %d; want 404 both", c.hidden, h.Status, c.missing, m.Status)
			}
			if got, want := strings.ReplaceAll(string(h.Body), id, "zzz"), string(m.Body); got != want {
				t.Errorf("GET %s tells a hidden resource from a missing one:\n hidden:  %s\n missing: %s", c.hidden, h.Body, m.Body)
			}
			for _, hd := range []string{"ETag", "Last-Modified", "Content-Location", "Location"} {
				if h.Header.Get(hd) != m.Header.Get(hd) {
					t.Errorf("GET %s: header %s = %q, missing one has %q", c.hidden, hd, h.Header.Get(hd), m.Header.Get(hd))
				}
			}
			if rec := auditOf(t, s, h); len(rec.PatientIDs) != 0 || len(rec.ResourceIDs) != 0 {
				t.Errorf("GET %s: audit lists %q %q", c.hidden, rec.ResourceIDs, rec.PatientIDs)
			}
		}
	})
}

// TestSecurityBypassWrites: conditional operations and transactions are
// neither an oracle nor a write path around the policy.
func TestSecurityBypassWrites(t *testing.T) {
	t.Parallel()
	s := newSecureServer(t)
	loadFixtures(t, s)
	dr := s.token(t, drOrg1)
	loader := s.token(t, backend)
	// o3 as the loader sees it: nothing below may change it.
	o3 := s.as(t, loader, http.MethodGet, "/fhir/Observation/o3", nil).Body

	refused := func(t *testing.T, name string, r response) {
		t.Helper()
		if r.Status != http.StatusForbidden {
			t.Errorf("%s: status %d, want 403: %s", name, r.Status, truncate(r.Body, 300))
			return
		}
		outcome(t, r, http.StatusForbidden)
		if strings.Contains(string(r.Body), "glucose") || strings.Contains(string(r.Body), "Carrow") {
			t.Errorf("%s: the refusal holds data: %s", name, truncate(r.Body, 300))
		}
		rec := auditOf(t, s, r)
		if rec.Outcome != "403" || rec.SubjectID != "dr-org1" || rec.DecisionID == "" {
			t.Errorf("%s: audit outcome %s subject %s decision %q", name, rec.Outcome, rec.SubjectID, rec.DecisionID)
		}
	}
	tx := func(entries ...string) []byte {
		return []byte(`{"resourceType":"Bundle","type":"transaction","entry":[` + strings.Join(entries, ",") + `]}`)
	}
	own := `{"fullUrl":"urn:uuid:6c1f0000-0000-4000-8000-000000000001","resource":` + observation("", "p1", "laboratory") +
		`,"request":{"method":"POST","url":"Observation"}}`
	cases := []struct {
		name, method, path string
		body               []byte
		hdr                []string
	}{
		// Conditional operations: their match counts would reveal hidden
		// resources, so a subject who may not see every resource of the
		// type may not use them.
		{"conditional create", http.MethodPost, "/fhir/Observation", []byte(observation("", "p1", "laboratory")),
			[]string{"If-None-Exist", "code=2345-7&subject=Patient/p3"}},
		{"conditional update", http.MethodPut, "/fhir/Observation?code=2345-7&subject=Patient/p3", []byte(observation("", "p1", "laboratory")), nil},
		{"conditional delete", http.MethodDelete, "/fhir/Observation?code=2345-7", nil, nil},
		{"conditional patient create", http.MethodPost, "/fhir/Patient", []byte(`{"resourceType":"Patient","managingOrganization":{"reference":"Organization/org1"}}`),
			[]string{"If-None-Exist", "family=Carrow"}},
		// Writes over other organizations' data.
		{"overwrite another organization's Observation", http.MethodPut, "/fhir/Observation/o3", []byte(observation("o3", "p1", "laboratory")), nil},
		{"delete another organization's Observation", http.MethodDelete, "/fhir/Observation/o3", nil, nil},
		{"move a Patient into the organization", http.MethodPut, "/fhir/Patient/p3",
			[]byte(`{"resourceType":"Patient","id":"p3","managingOrganization":{"reference":"Organization/org1"}}`), nil},
		// Transactions: every entry is decided before any is processed.
		{"transaction with a conditional reference", http.MethodPost, "/fhir", tx(own,
			`{"resource":`+strings.Replace(observation("", "p1", "laboratory"), "Patient/p1", "Patient?family=Carrow", 1)+`,"request":{"method":"POST","url":"Observation"}}`), nil},
		{"transaction with a conditional create", http.MethodPost, "/fhir", tx(own,
			`{"resource":`+observation("", "p1", "laboratory")+`,"request":{"method":"POST","url":"Observation","ifNoneExist":"subject=Patient/p3"}}`), nil},
		{"transaction with a conditional update", http.MethodPost, "/fhir", tx(own,
			`{"resource":`+observation("", "p1", "laboratory")+`,"request":{"method":"PUT","url":"Observation?subject=Patient/p3"}}`), nil},
		{"transaction with a conditional delete", http.MethodPost, "/fhir", tx(own,
			`{"request":{"method":"DELETE","url":"Observation?subject=Patient/p3"}}`), nil},
		{"transaction writing another organization's patient", http.MethodPost, "/fhir", tx(own,
			`{"resource":`+observation("", "p3", "laboratory")+`,"request":{"method":"POST","url":"Observation"}}`), nil},
		{"transaction overwriting another organization's Observation", http.MethodPost, "/fhir", tx(own,
			`{"resource":`+observation("o3", "p1", "laboratory")+`,"request":{"method":"PUT","url":"Observation/o3"}}`), nil},
		{"transaction deleting another organization's Observation", http.MethodPost, "/fhir", tx(own,
			`{"request":{"method":"DELETE","url":"Observation/o3"}}`), nil},
		{"batch writing another organization's patient", http.MethodPost, "/fhir",
			[]byte(strings.Replace(string(tx(own, `{"resource":`+observation("", "p3", "laboratory")+`,"request":{"method":"POST","url":"Observation"}}`)),
				`"transaction"`, `"batch"`, 1)), nil},
		// Intake paths are for EMR senders.
		{"push by a clinician", http.MethodPost, "/fhir", tx(own), []string{"X-Fhirgate-Source", ""}},
		{"HL7 by a clinician", http.MethodPost, "/hl7v2",
			[]byte("MSH|^~\\&|LAB|HOSP|FHIRGATE|FG|20240101120000+0000||ADT^A01^ADT_A01|SEC1|P|2.5.1\rPID|1||M1^^^HOSP^MR||Doe^Jane||19800101|F\r"),
			[]string{"Content-Type", "x-application/hl7-v2+er7"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before, hist := rowCount(t, s.pool), historyRowCount(t, s.pool)
			r := s.as(t, dr, c.method, c.path, c.body, c.hdr...)
			refused(t, c.name, r)
			if n, h := rowCount(t, s.pool), historyRowCount(t, s.pool); n != before || h != hist {
				t.Errorf("%s wrote: %d resources (was %d), %d history rows (was %d)", c.name, n, before, h, hist)
			}
		})
	}
	if got := s.as(t, loader, http.MethodGet, "/fhir/Observation/o3", nil).Body; string(got) != string(o3) {
		t.Errorf("Observation/o3 changed:\n%s\nwas\n%s", got, o3)
	}
	if p3 := s.as(t, loader, http.MethodGet, "/fhir/Patient/p3", nil).Body; !strings.Contains(string(p3), "Organization/org2") {
		t.Errorf("Patient/p3 moved: %s", truncate(p3, 300))
	}
	// The same transaction without the offending entry goes through: the
	// refusals above are the policy's doing.
	if r := s.as(t, dr, http.MethodPost, "/fhir", tx(own)); r.Status != http.StatusOK {
		t.Errorf("own transaction: status %d: %s", r.Status, truncate(r.Body, 300))
	}
	// A subject who may see every Observation may use conditional
	// operations.
	if r := s.as(t, loader, http.MethodPost, "/fhir/Observation", []byte(observation("", "p1", "laboratory")),
		"If-None-Exist", "code=2345-7"); r.Status != http.StatusOK && r.Status != http.StatusCreated && r.Status != http.StatusPreconditionFailed {
		t.Errorf("backend conditional create: status %d: %s", r.Status, truncate(r.Body, 300))
	}

	// EMR senders: another source's push, and an HL7 v2 message of a
	// sender profile that is not theirs.
	emr := s.token(t, emrLab)
	t.Run("EMR push of another source", func(t *testing.T) {
		before := rowCount(t, s.pool)
		r := s.as(t, emr, http.MethodPost, "/ingest/fhir?source=default",
			[]byte(`{"resourceType":"Patient","id":"x1","name":[{"family":"Pushed"}]}`+"\n"), "Content-Type", "application/fhir+ndjson")
		outcome(t, r, http.StatusForbidden)
		if n := rowCount(t, s.pool); n != before {
			t.Errorf("the refused push wrote %d resources", n-before)
		}
	})
	t.Run("EMR HL7 message of another source", func(t *testing.T) {
		// MSH-4 HOSP matches profile "default", not the sender's
		// "example-lab".
		before := rowCount(t, s.pool)
		r := s.as(t, emr, http.MethodPost, "/hl7v2",
			[]byte("MSH|^~\\&|LAB|HOSP|FHIRGATE|FG|20240101120000+0000||ADT^A01^ADT_A01|SEC2|P|2.5.1\rPID|1||M2^^^HOSP^MR||Roe^Jim||19800101|M\r"),
			"Content-Type", "x-application/hl7-v2+er7")
		if n := rowCount(t, s.pool); strings.Contains(string(r.Body), "MSA|AA") || n != before {
			t.Errorf("an EMR sender of source example-lab stored an HL7 message of profile default: status %d, ACK %q, %d resources written",
				r.Status, truncate(r.Body, 120), n-before)
		}
	})
}

// TestSecurityAuditCompleteness: under a concurrent mixed load (allowed,
// denied, unauthenticated, writes, searches, auditor queries), every
// request has exactly one audit record, with its outcome.
func TestSecurityAuditCompleteness(t *testing.T) {
	t.Parallel()
	s := newSecureServer(t)
	loadFixtures(t, s)
	dr := s.token(t, drOrg1)
	loader := s.token(t, backend)
	aud := s.token(t, auditor)
	expired := s.token(t, auth.Claims{Subject: "dr-org1", Roles: []string{"clinician"}, IssuedAt: time.Now().Add(-3 * time.Hour), Expiry: time.Now().Add(-2 * time.Hour)})
	type req struct {
		token, method, path string
		body                []byte
		hdr                 []string
	}
	kinds := []func(n int) req{
		func(int) req { return req{token: dr, method: http.MethodGet, path: "/fhir/Observation/o1"} },
		func(int) req { return req{token: dr, method: http.MethodGet, path: "/fhir/Observation/o3"} },
		func(int) req { return req{method: http.MethodGet, path: "/fhir/Observation/o1"} },
		func(int) req {
			return req{token: expired, method: http.MethodGet, path: "/fhir/Patient?family=" + phiFamily}
		},
		func(int) req {
			return req{token: dr, method: http.MethodGet, path: "/fhir/Observation?code=2345-7&_include=Observation:subject"}
		},
		func(n int) req {
			id := fmt.Sprintf("mix%d", n)
			return req{token: loader, method: http.MethodPut, path: "/fhir/Observation/" + id, body: []byte(observation(id, "p2", "laboratory"))}
		},
		func(int) req { return req{token: aud, method: http.MethodGet, path: "/fhir/Observation/o1"} },
		func(int) req { return req{token: dr, method: http.MethodGet, path: "/fhir/Observation/o1/_history"} },
		func(int) req {
			return req{token: aud, method: http.MethodGet, path: "/fhir/AuditEvent?agent=dr-org1&_count=5"}
		},
		func(int) req {
			return req{token: dr, method: http.MethodPost, path: "/fhir/Patient/_search", body: []byte("family=" + phiFamily),
				hdr: []string{"Content-Type", "application/x-www-form-urlencoded"}}
		},
		func(int) req { return req{token: dr, method: http.MethodDelete, path: "/fhir/Observation/o3"} },
		func(int) req { return req{token: dr, method: http.MethodGet, path: "/fhir/Observation?subject.name=x"} },
	}
	const total, workers = 60, 4
	before := len(s.auditRecords(t))
	statuses := make([]int, total)
	ids := make([]string, total)
	done := make(chan struct{})
	for w := 0; w < workers; w++ {
		go func(w int) {
			defer func() { done <- struct{}{} }()
			for n := w; n < total; n += workers {
				rq := kinds[n%len(kinds)](n)
				ids[n] = fmt.Sprintf("mix-%02d", n)
				hdr := append([]string{"X-Request-ID", ids[n]}, rq.hdr...)
				if rq.token != "" {
					hdr = append(hdr, "Authorization", "Bearer "+rq.token)
				}
				r := do(t, rq.method, s.URL+rq.path, rq.body, hdr...)
				statuses[n] = r.Status
				if got := r.Header.Get("X-Request-ID"); got != ids[n] {
					t.Errorf("request %d: X-Request-ID %q, want %q", n, got, ids[n])
				}
			}
		}(w)
	}
	for w := 0; w < workers; w++ {
		<-done
	}
	seen := map[int]bool{}
	for _, st := range statuses {
		seen[st] = true
	}
	for _, st := range []int{200, 201, 400, 401, 403, 404} {
		if !seen[st] {
			t.Errorf("the load has no response with status %d (statuses %v): not the mix it claims", st, statuses)
		}
	}
	recs := s.auditRecords(t)
	if got := len(recs) - before; got != total {
		t.Errorf("%d audit records for %d requests", got, total)
	}
	byID := map[string][]audit.Entry{}
	for _, e := range recs {
		byID[e.RequestID] = append(byID[e.RequestID], e)
	}
	for n, id := range ids {
		es := byID[id]
		if len(es) != 1 {
			t.Errorf("request %s (status %d): %d audit records, want 1", id, statuses[n], len(es))
			continue
		}
		if es[0].Outcome != fmt.Sprint(statuses[n]) {
			t.Errorf("request %s: audit outcome %s, response %d", id, es[0].Outcome, statuses[n])
		}
	}
	// The chain is intact over the whole load.
	for i := 1; i < len(recs); i++ {
		if recs[i].Seq != recs[i-1].Seq+1 || string(recs[i].PrevHash) != string(recs[i-1].Hash) {
			t.Fatalf("audit chain broken at seq %d", recs[i].Seq)
		}
	}
	for _, e := range recs {
		if h, err := e.ComputeHash(); err != nil || string(h) != string(e.Hash) {
			t.Fatalf("audit record %d: hash does not recompute (%v)", e.Seq, err)
		}
	}
}

// TestSecurityAuditNoPHI: search values that are PHI (names, birth dates)
// never reach the audit table in plaintext, whatever the column; the
// auditor API still shows the query (sealed with the PHI keys).
func TestSecurityAuditNoPHI(t *testing.T) {
	t.Parallel()
	s := newSecureServer(t)
	loadFixtures(t, s)
	dr := s.token(t, drOrg1)
	const birth = "1971-03-04"
	var searchID string
	for _, c := range []struct {
		token, method, path, body string
		hdr                       []string
	}{
		{token: dr, method: http.MethodGet, path: "/fhir/Patient?family=" + phiFamily + "&birthdate=" + birth},
		{token: dr, method: http.MethodGet, path: "/fhir/Patient?name=" + phiFamily},
		{token: dr, method: http.MethodPost, path: "/fhir/Patient/_search", body: "family=" + phiFamily + "&birthdate=" + birth,
			hdr: []string{"Content-Type", "application/x-www-form-urlencoded"}},
		{method: http.MethodGet, path: "/fhir/Patient?family=" + phiFamily},                             // 401
		{token: s.token(t, auditor), method: http.MethodGet, path: "/fhir/Patient?family=" + phiFamily}, // 403
		{token: s.token(t, drOrg2), method: http.MethodGet, path: "/fhir/Patient?family=" + phiFamily + "&_include=Patient:organization"},
	} {
		var body []byte
		if c.body != "" {
			body = []byte(c.body)
		}
		r := s.as(t, c.token, c.method, c.path, body, c.hdr...)
		if r.Status >= 500 {
			t.Fatalf("%s %s: status %d", c.method, c.path, r.Status)
		}
		if searchID == "" {
			searchID = r.Header.Get("X-Request-ID")
			if ids := allIDs(bundleIDs(t, r.Body)); !slices.Equal(ids, []string{"Patient/p1"}) {
				t.Fatalf("the PHI search found %q, want Patient/p1 (the test must search something real)", ids)
			}
		}
	}
	rows, err := s.pool.Query(t.Context(), `SELECT * FROM audit_log`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var n, sealed int
	cols := rows.FieldDescriptions()
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		n++
		for i, v := range vals {
			var raw []byte
			switch x := v.(type) {
			case []byte:
				raw = x
			case string:
				raw = []byte(x)
			default:
				raw = []byte(fmt.Sprint(x))
			}
			for _, phi := range []string{phiFamily, strings.ToLower(phiFamily), birth, "19710304"} {
				if bytes.Contains(raw, []byte(phi)) {
					t.Errorf("audit_log row %d column %s holds %q in plaintext", n, cols[i].Name, phi)
				}
			}
			if cols[i].Name == "query_sealed" && v == true {
				sealed++
			}
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if sealed < 6 {
		t.Errorf("%d sealed queries, want one per search above (6)", sealed)
	}
	// The auditor reads the query back.
	rec := auditOf(t, s, response{Header: http.Header{"X-Request-Id": {searchID}}})
	ev := s.as(t, s.token(t, auditor), http.MethodGet, fmt.Sprintf("/fhir/AuditEvent/%d", rec.Seq), nil)
	if ev.Status != http.StatusOK {
		t.Fatalf("AuditEvent/%d: %d", rec.Seq, ev.Status)
	}
	var query string
	for _, e := range decode(t, ev.Body)["entity"].([]any) {
		if qv, ok := e.(map[string]any)["query"].(string); ok {
			b, _ := base64.StdEncoding.DecodeString(qv)
			query = string(b)
		}
	}
	if !strings.Contains(query, "family="+phiFamily) {
		t.Errorf("the auditor sees query %q, want the search as made", query)
	}
}

// TestSecurityAuditFailClosed: when the audit log cannot be written, no
// response is released: 503 and no resource.
func TestSecurityAuditFailClosed(t *testing.T) {
	t.Parallel()
	s := newSecureServer(t)
	loadFixtures(t, s)
	dr := s.token(t, drOrg1)
	if r := s.as(t, dr, http.MethodGet, "/fhir/Observation/o1", nil); r.Status != http.StatusOK {
		t.Fatalf("read before the failure: %d", r.Status)
	}
	if err := s.log.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	before := len(s.auditRecords(t))
	for _, c := range []struct{ token, method, path string }{
		{dr, http.MethodGet, "/fhir/Observation/o1"},
		{dr, http.MethodGet, "/fhir/Observation/o1/_history/1"},
		{dr, http.MethodGet, "/fhir/Observation?_id=o1&_include=Observation:subject"},
		{dr, http.MethodGet, "/fhir/Patient/p1/_history"},
		{dr, http.MethodGet, "/fhir/Observation/o3"},
		{"", http.MethodGet, "/fhir/Observation/o1"},
	} {
		r := s.as(t, c.token, c.method, c.path, nil)
		outcome(t, r, http.StatusServiceUnavailable)
		for _, leak := range []string{"glucose", phiFamily, `"Patient"`, `"Observation"`} {
			if strings.Contains(string(r.Body), leak) {
				t.Errorf("GET %s with the log down: the 503 holds %s: %s", c.path, leak, truncate(r.Body, 300))
			}
		}
		for _, h := range []string{"ETag", "Last-Modified", "Location"} {
			if r.Header.Get(h) != "" {
				t.Errorf("GET %s with the log down: header %s = %q", c.path, h, r.Header.Get(h))
			}
		}
	}
	if n := len(s.auditRecords(t)); n != before {
		t.Errorf("%d audit records appeared with the log closed", n-before)
	}
}

// auditEvents searches the AuditEvent API as tok and returns the events.
func auditEvents(t *testing.T, s *secureServer, tok, query string) ([]map[string]any, response) {
	t.Helper()
	r := s.as(t, tok, http.MethodGet, "/fhir/AuditEvent?"+query, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("AuditEvent?%s: status %d: %s", query, r.Status, truncate(r.Body, 300))
	}
	var out []map[string]any
	for _, e := range bundleEntries(t, decode(t, r.Body)) {
		out = append(out, e["resource"].(map[string]any))
	}
	return out, r
}

// eventRequestID is the request id an AuditEvent carries.
func eventRequestID(ev map[string]any) string {
	ents, _ := ev["entity"].([]any)
	for _, e := range ents {
		em, _ := e.(map[string]any)
		if typ, _ := em["type"].(map[string]any); typ["code"] == "XrequestId" {
			what, _ := em["what"].(map[string]any)
			id, _ := what["identifier"].(map[string]any)
			s, _ := id["value"].(string)
			return s
		}
	}
	return ""
}

func eventPatients(ev map[string]any) []string {
	var out []string
	ents, _ := ev["entity"].([]any)
	for _, e := range ents {
		what, _ := e.(map[string]any)["what"].(map[string]any)
		if ref, _ := what["reference"].(string); strings.HasPrefix(ref, "Patient/") {
			out = append(out, ref)
		}
	}
	return out
}

func eventAgent(ev map[string]any) string {
	agents, _ := ev["agent"].([]any)
	for _, a := range agents {
		am, _ := a.(map[string]any)
		if am["requestor"] == true {
			who, _ := am["who"].(map[string]any)
			id, _ := who["identifier"].(map[string]any)
			s, _ := id["value"].(string)
			return s
		}
	}
	return ""
}

func eventProfiles(ev map[string]any) []string {
	meta, _ := ev["meta"].(map[string]any)
	var out []string
	ps, _ := meta["profile"].([]any)
	for _, p := range ps {
		s, _ := p.(string)
		out = append(out, s)
	}
	return out
}

// TestSecurityAuditorAPI: the access log as BALP AuditEvents and reports,
// for auditors only, each query itself audited.
func TestSecurityAuditorAPI(t *testing.T) {
	t.Parallel()
	s := newSecureServer(t)
	loadFixtures(t, s)
	aud := s.token(t, auditor)
	dr := s.token(t, drOrg1)
	const balp = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/"

	// Activity to audit: dr-org1 reads, searches and is denied; er-doc
	// breaks the glass; dr-snoop reads 12 patients in a day, with no
	// history before.
	read := s.as(t, dr, http.MethodGet, "/fhir/Observation/o1", nil)
	search := s.as(t, dr, http.MethodGet, "/fhir/Observation?patient=p1", nil)
	denied := s.as(t, dr, http.MethodGet, "/fhir/Patient/p3", nil)
	refused := s.as(t, s.token(t, auth.Claims{Subject: "dr-obs", Roles: []string{"clinician"}, Organization: "org1", Scope: "user/Observation.rs"}),
		http.MethodGet, "/fhir/Patient/p1", nil)
	glass := s.as(t, s.token(t, auth.Claims{Subject: "er-doc", Roles: []string{"clinician", "break-glass"}, Organization: "org2"}),
		http.MethodGet, "/fhir/Observation/oHIV", nil, "X-Purpose-Of-Use", "ETREAT")
	for _, r := range []response{read, search, glass} {
		if r.Status != http.StatusOK {
			t.Fatalf("setup request: status %d: %s", r.Status, truncate(r.Body, 200))
		}
	}
	if denied.Status != http.StatusNotFound || refused.Status != http.StatusForbidden {
		t.Fatalf("setup denials: %d, %d", denied.Status, refused.Status)
	}
	loader := s.token(t, backend)
	snoop := s.token(t, auth.Claims{Subject: "dr-snoop", Roles: []string{"clinician"}, Organization: "org3"})
	for i := 0; i < 12; i++ {
		id := fmt.Sprintf("q%d", i)
		body := `{"resourceType":"Patient","id":"` + id + `","managingOrganization":{"reference":"Organization/org3"}}`
		if r := s.as(t, loader, http.MethodPut, "/fhir/Patient/"+id, []byte(body)); r.Status != http.StatusCreated {
			t.Fatalf("create %s: %d", id, r.Status)
		}
		if r := s.as(t, snoop, http.MethodGet, "/fhir/Patient/"+id, nil); r.Status != http.StatusOK {
			t.Fatalf("dr-snoop reads %s: %d", id, r.Status)
		}
	}
	cut := time.Now().UTC()
	time.Sleep(5 * time.Millisecond)
	late := s.as(t, dr, http.MethodGet, "/fhir/Patient/p1", nil)

	var auditorRequests []string   // every auditor request: each must be audited
	withQuery := map[string]bool{} // ... and keep its query, if it had one
	track := func(r response, hadQuery bool) response {
		id := r.Header.Get("X-Request-ID")
		auditorRequests = append(auditorRequests, id)
		withQuery[id] = hadQuery
		return r
	}

	t.Run("patient", func(t *testing.T) {
		evs, r := auditEvents(t, s, aud, "patient=p1&_count=1000")
		track(r, true)
		byReq := map[string]map[string]any{}
		for _, ev := range evs {
			if !slices.Contains(eventPatients(ev), "Patient/p1") {
				t.Errorf("AuditEvent %v for patient=p1 has entities %q", ev["id"], eventPatients(ev))
			}
			byReq[eventRequestID(ev)] = ev
		}
		ev := byReq[read.Header.Get("X-Request-ID")]
		if ev == nil {
			t.Fatalf("no AuditEvent for dr-org1's read of Observation/o1 among %d", len(evs))
		}
		if !slices.Contains(eventProfiles(ev), balp+"IHE.BasicAudit.PatientRead") || ev["action"] != "R" || ev["outcome"] != "0" {
			t.Errorf("read AuditEvent: profiles %q action %v outcome %v", eventProfiles(ev), ev["action"], ev["outcome"])
		}
		if eventAgent(ev) != "dr-org1" {
			t.Errorf("read AuditEvent agent %q", eventAgent(ev))
		}
		ents := string(mustJSON(t, ev["entity"]))
		for _, want := range []string{"Observation/o1", "decision-id", "token-id", "request-id"} {
			if !strings.Contains(ents, want) {
				t.Errorf("read AuditEvent entities lack %s: %s", want, ents)
			}
		}
		sev := byReq[search.Header.Get("X-Request-ID")]
		if sev == nil {
			t.Fatalf("no AuditEvent for the search")
		}
		if !slices.Contains(eventProfiles(sev), balp+"IHE.BasicAudit.PatientQuery") || sev["action"] != "E" ||
			!strings.Contains(string(mustJSON(t, sev["entity"])), `"query"`) {
			t.Errorf("search AuditEvent: profiles %q action %v entities %s", eventProfiles(sev), sev["action"], mustJSON(t, sev["entity"]))
		}
		// A denied read of p3 is not a disclosure of p1, nor of p3.
		if byReq[denied.Header.Get("X-Request-ID")] != nil {
			t.Errorf("the denied read of Patient/p3 is listed for p1")
		}
	})

	t.Run("filters", func(t *testing.T) {
		evs, r := auditEvents(t, s, aud, "agent=dr-org1&_count=1000")
		track(r, true)
		if len(evs) < 4 {
			t.Errorf("agent=dr-org1: %d events, want at least 4", len(evs))
		}
		for _, ev := range evs {
			if eventAgent(ev) != "dr-org1" {
				t.Errorf("agent=dr-org1 returned an event of %q", eventAgent(ev))
			}
		}
		evs, r = auditEvents(t, s, aud, "date=ge"+cut.Format(time.RFC3339Nano)+"&_count=1000")
		track(r, true)
		var reqs []string
		for _, ev := range evs {
			reqs = append(reqs, eventRequestID(ev))
			if rec, _ := time.Parse(time.RFC3339Nano, ev["recorded"].(string)); rec.Before(cut) {
				t.Errorf("date=ge%s returned an event recorded %v", cut.Format(time.RFC3339Nano), ev["recorded"])
			}
		}
		if !slices.Contains(reqs, late.Header.Get("X-Request-ID")) || slices.Contains(reqs, read.Header.Get("X-Request-ID")) {
			t.Errorf("date=ge: requests %q: want the late read and not the early one", reqs)
		}
		evs, r = auditEvents(t, s, aud, "action=R&_count=1000")
		track(r, true)
		for _, ev := range evs {
			if ev["action"] != "R" {
				t.Errorf("action=R returned action %v", ev["action"])
			}
		}
		evs, r = auditEvents(t, s, aud, "outcome=4&_count=1000")
		track(r, true)
		reqs = nil
		for _, ev := range evs {
			reqs = append(reqs, eventRequestID(ev))
			if ev["outcome"] == "0" {
				t.Errorf("outcome=4 returned a success: %v", ev["outcomeDesc"])
			}
		}
		for _, d := range []response{denied, refused} {
			if !slices.Contains(reqs, d.Header.Get("X-Request-ID")) {
				t.Errorf("outcome=4 lacks the denied request %s", d.Header.Get("X-Request-ID"))
			}
		}
		evs, r = auditEvents(t, s, aud, "entity-type=Patient&agent=dr-snoop&_count=1000")
		track(r, true)
		if len(evs) != 12 {
			t.Errorf("entity-type=Patient&agent=dr-snoop: %d events, want 12", len(evs))
		}
		// The break-glass read is a security alert.
		evs, r = auditEvents(t, s, aud, "agent=er-doc")
		track(r, true)
		if len(evs) != 1 {
			t.Fatalf("agent=er-doc: %d events", len(evs))
		}
		if typ, _ := evs[0]["type"].(map[string]any); typ["code"] != "110113" {
			t.Errorf("break-glass AuditEvent type %v", typ)
		}
	})

	t.Run("reports", func(t *testing.T) {
		get := func(path string) response {
			t.Helper()
			r := track(s.as(t, aud, http.MethodGet, path, nil), strings.Contains(path, "?"))
			if r.Status != http.StatusOK {
				t.Fatalf("GET %s: status %d: %s", path, r.Status, truncate(r.Body, 300))
			}
			return r
		}
		rows := func(r response) []map[string]string {
			t.Helper()
			var out []map[string]string
			if err := json.Unmarshal(r.Body, &out); err != nil {
				t.Fatalf("report is not a JSON array of rows: %v: %s", err, truncate(r.Body, 300))
			}
			return out
		}

		// Accounting of disclosures, CSV: a header row, then who saw p1.
		r := get("/audit/reports/disclosures?patient=p1&format=csv")
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/csv") {
			t.Errorf("CSV Content-Type %q", ct)
		}
		recs, err := csv.NewReader(bytes.NewReader(r.Body)).ReadAll()
		if err != nil || len(recs) < 2 {
			t.Fatalf("disclosures CSV: %v, %d rows", err, len(recs))
		}
		head := recs[0]
		col := func(name string) int { return slices.Index(head, name) }
		if col("agent") < 0 || col("patients") < 0 || col("time") < 0 || col("purpose_of_use") < 0 || col("resources") < 0 {
			t.Fatalf("disclosures CSV header %q", head)
		}
		var agents []string
		for _, row := range recs[1:] {
			agents = append(agents, row[col("agent")])
			if !slices.Contains(strings.Fields(row[col("patients")]), "p1") {
				t.Errorf("disclosure row of patients %q", row[col("patients")])
			}
		}
		for _, who := range []string{"dr-org1", "er-doc"} {
			if !slices.Contains(agents, who) {
				t.Errorf("the disclosures of p1 do not name %s: %q", who, agents)
			}
		}

		// Break-glass uses.
		bg := rows(get("/audit/reports/break-glass"))
		if len(bg) != 1 || bg[0]["agent"] != "er-doc" || bg[0]["break_glass"] != "true" || bg[0]["purpose_of_use"] != "ETREAT" {
			t.Errorf("break-glass report: %v", bg)
		}
		// Denied attempts.
		var deniedReqs []string
		for _, row := range rows(get("/audit/reports/denied")) {
			deniedReqs = append(deniedReqs, row["request_id"])
			if audit.Success(row["outcome"]) {
				t.Errorf("denied report lists a success: %v", row)
			}
		}
		for _, d := range []response{denied, refused} {
			if !slices.Contains(deniedReqs, d.Header.Get("X-Request-ID")) {
				t.Errorf("denied report lacks request %s", d.Header.Get("X-Request-ID"))
			}
		}
		// One user's activity.
		act := rows(get("/audit/reports/activity?agent=dr-org1"))
		if len(act) < 4 {
			t.Errorf("activity of dr-org1: %d rows", len(act))
		}
		for _, row := range act {
			if row["agent"] != "dr-org1" {
				t.Errorf("activity of dr-org1 lists %v", row["agent"])
			}
		}
		// Export with its chain: every row links to the one before.
		exp := rows(get("/audit/reports/export?format=json"))
		if len(exp) < 30 {
			t.Fatalf("export: %d rows", len(exp))
		}
		for i, row := range exp {
			if len(row["hash"]) != 64 || len(row["prev_hash"]) != 64 {
				t.Fatalf("export row %d without hashes: %v", i, row)
			}
			if i > 0 && row["prev_hash"] != exp[i-1]["hash"] {
				t.Errorf("export row %d: prev_hash %s, row before has hash %s", i, row["prev_hash"], exp[i-1]["hash"])
			}
		}
		if exp[0]["seq"] != "1" || exp[0]["prev_hash"] != strings.Repeat("0", 64) {
			t.Errorf("export starts at seq %s prev %s, want 1 and the genesis hash", exp[0]["seq"], exp[0]["prev_hash"])
		}
		// Unusual volume: dr-snoop reached 12 patients with no baseline.
		var unusual struct {
			Unusual []map[string]any `json:"unusual"`
		}
		if err := json.Unmarshal(get("/audit/reports/unusual").Body, &unusual); err != nil {
			t.Fatal(err)
		}
		var flagged []string
		for _, u := range unusual.Unusual {
			flagged = append(flagged, fmt.Sprint(u["agent"]))
			if u["agent"] == "dr-snoop" && fmt.Sprint(u["patients_in_period"]) != "12" {
				t.Errorf("dr-snoop flagged with %v patients, want 12", u["patients_in_period"])
			}
		}
		if !slices.Contains(flagged, "dr-snoop") || slices.Contains(flagged, "dr-org1") {
			t.Errorf("unusual volume flags %q: want dr-snoop and not dr-org1", flagged)
		}
	})

	t.Run("auditors only", func(t *testing.T) {
		for _, tok := range []string{dr, s.token(t, backend), s.token(t, patientP1), s.token(t, emrLab)} {
			for _, path := range []string{"/fhir/AuditEvent?patient=p1", "/fhir/AuditEvent/1",
				"/audit/reports/disclosures?patient=p1&format=csv", "/audit/reports/break-glass", "/audit/reports/denied",
				"/audit/reports/activity?agent=dr-org1", "/audit/reports/export?format=json", "/audit/reports/unusual"} {
				r := s.as(t, tok, http.MethodGet, path, nil)
				outcome(t, r, http.StatusForbidden)
				if strings.Contains(string(r.Body), "dr-org1\"") || strings.Contains(string(r.Body), "prev_hash") {
					t.Errorf("GET %s refused with data: %s", path, truncate(r.Body, 300))
				}
				rec := auditOf(t, s, r)
				if rec.Interaction != audit.InteractionAuditQuery || rec.Outcome != "403" {
					t.Errorf("GET %s by a non-auditor: audit %s/%s", path, rec.Interaction, rec.Outcome)
				}
			}
		}
		if r := s.as(t, "", http.MethodGet, "/audit/reports/denied", nil); r.Status != http.StatusUnauthorized {
			t.Errorf("reports without a token: %d", r.Status)
		}
	})

	// Every auditor query above is itself in the log.
	recs := s.auditRecords(t)
	byID := map[string]audit.Entry{}
	for _, e := range recs {
		byID[e.RequestID] = e
	}
	if len(auditorRequests) != 13 {
		t.Fatalf("%d auditor requests tracked, want 13", len(auditorRequests))
	}
	for _, id := range auditorRequests {
		e, ok := byID[id]
		switch {
		case !ok:
			t.Errorf("auditor request %s is not audited", id)
		case e.Interaction != audit.InteractionAuditQuery || e.SubjectID != "auditor-1" || e.Outcome != "200" || e.DecisionID == "":
			t.Errorf("auditor request %s audited as %s by %s outcome %s decision %q", id, e.Interaction, e.SubjectID, e.Outcome, e.DecisionID)
		case withQuery[id] && len(e.StoredQuery) == 0:
			t.Errorf("auditor request %s: the query is not kept", id)
		}
	}
}
