package mapping

import (
	"encoding/base64"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/fhirgate/fhirgate/internal/hl7v2"
)

// A converter turns one HL7 v2 value (a repetition, or a component
// promoted to a repetition) into a FHIR value of one of its target types.
// It returns "" and nil when there is nothing to map; a value that is
// present but unusable is reported through c.problem.
type converter struct {
	targets  map[string]bool
	codemaps []string // code maps the converter needs (checked by Load)
	fn       func(c *cv, r *hl7v2.Rep) (string, any)
}

// cv is the context of one conversion.
type cv struct {
	mc    *mctx
	seg   *hl7v2.Segment
	rule  *fieldRule
	types []string   // allowed FHIR types of the target
	unit  *hl7v2.Rep // the rule's units field (unit:), nil when none
	// problem is set by a converter when the value is present but cannot
	// be mapped: HL7 table 0357 code and a text that never quotes it.
	problemCode, problemText string
}

func (c *cv) problem(code, text string) { c.problemCode, c.problemText = code, text }

func (c *cv) want(t string) bool {
	for _, x := range c.types {
		if x == t {
			return true
		}
	}
	return false
}

// first returns the first of the given types the target allows.
func (c *cv) first(ts ...string) string {
	for _, t := range ts {
		if c.want(t) {
			return t
		}
	}
	return ""
}

func set(ts ...string) map[string]bool {
	m := make(map[string]bool, len(ts))
	for _, t := range ts {
		m[t] = true
	}
	return m
}

var converters map[string]*converter

func init() {
	text := &converter{targets: set("string", "markdown", "code", "id", "uri", "url", "base64Binary", "Annotation", "CodeableConcept", "Attachment"), fn: convText}
	ts := &converter{targets: set("date", "dateTime", "instant", "Period"), fn: convTS}
	cwe := &converter{targets: set("CodeableConcept", "Coding", "code", "string"), fn: convCWE}
	id := &converter{targets: set("code", "Coding", "CodeableConcept", "boolean", "string"), fn: convID}
	num := &converter{targets: set("decimal", "integer", "positiveInt", "unsignedInt", "Quantity", "string"), fn: convNM}
	converters = map[string]*converter{
		"ST": text, "TX": text, "FT": text, "TEXT": text,
		"TS": ts, "DTM": ts, "DT": ts,
		"TSTIME": {targets: set("dateTime", "instant"), fn: convTSTime},
		"DLN":    {targets: set("Identifier"), fn: convDLN},
		"CWE":    cwe, "CE": cwe, "CNE": cwe,
		"ID": id, "IS": id,
		"NM":      num,
		"SN":      {targets: set("Quantity", "Range", "Ratio", "string"), fn: convSN},
		"CQ":      {targets: set("Quantity"), fn: convCQ},
		"XPN":     {targets: set("HumanName", "string"), codemaps: []string{"name-use"}, fn: convXPN},
		"XAD":     {targets: set("Address"), codemaps: []string{"address-use", "address-type"}, fn: convXAD},
		"CX":      {targets: set("Identifier", "string"), fn: convCX},
		"EI":      {targets: set("Identifier", "string"), fn: convEI},
		"XTN":     {targets: set("ContactPoint"), codemaps: []string{"telecom-use", "telecom-system"}, fn: convXTN},
		"XTNH":    {targets: set("ContactPoint"), codemaps: []string{"telecom-use", "telecom-system"}, fn: xtnUse("home")},
		"XTNW":    {targets: set("ContactPoint"), codemaps: []string{"telecom-use", "telecom-system"}, fn: xtnUse("work")},
		"XCN":     {targets: set("Reference", "HumanName"), fn: convXCN},
		"XON":     {targets: set("Reference", "string"), fn: convXON},
		"PL":      {targets: set("Reference", "string"), fn: convPL},
		"DR":      {targets: set("Period"), fn: convDR},
		"BOOL":    {targets: set("boolean"), fn: convBool},
		"JOIN":    {targets: set("string"), fn: convJoin},
		"RACE":    {targets: set("Extension"), fn: convRace},
		"ETHN":    {targets: set("Extension"), fn: convEthnicity},
		"HD":      {targets: set("Reference", "url", "uri", "BackboneElement", "Identifier"), fn: convHD},
		"RPT":     {targets: set("Timing"), codemaps: []string{"time-unit"}, fn: convRPT},
		"CQTIME":  {targets: set("Duration", "Quantity", "decimal", "code"), codemaps: []string{"time-unit"}, fn: convCQTime},
		"CWEREF":  {targets: set("Reference"), fn: convCWERef},
		"MINUTES": {targets: set("unsignedInt", "positiveInt", "integer"), codemaps: []string{"time-unit"}, fn: convMinutes},
		"NTE":     {targets: set("Annotation"), fn: convNTE},
		"MO":      {targets: set("Money"), fn: convMO},
		"OBX5C":   {targets: set("BackboneElement"), fn: convOBX5Component},
		"OBX5":    {targets: set("Quantity", "CodeableConcept", "string", "Range", "Ratio", "dateTime", "time", "integer", "boolean"), fn: convOBX5},
	}
}

func comp(r *hl7v2.Rep, i int) string {
	if r == nil {
		return ""
	}
	return strings.TrimSpace(r.Comp(i))
}

func sub(r *hl7v2.Rep, c, s int) string {
	if r == nil {
		return ""
	}
	return strings.TrimSpace(r.Sub(c, s))
}

// repOf promotes a component to a repetition so that the converter of the
// component's datatype reads its subcomponents as components.
func repOf(r *hl7v2.Rep, c int) *hl7v2.Rep {
	if r == nil || c > len(r.Comps) {
		return nil
	}
	subs := r.Comps[c-1].Subs
	out := &hl7v2.Rep{Comps: make([]hl7v2.Comp, len(subs))}
	for i, s := range subs {
		out.Comps[i] = hl7v2.Comp{Subs: []string{s}}
	}
	return out
}

func empty(r *hl7v2.Rep) bool {
	if r == nil {
		return true
	}
	for _, c := range r.Comps {
		for _, s := range c.Subs {
			if strings.TrimSpace(s) != "" {
				return false
			}
		}
	}
	return true
}

var codeRe = regexp.MustCompile(`^[^\s]+( [^\s]+)*$`)

func validCode(s string) bool { return s != "" && codeRe.MatchString(s) }

func convText(c *cv, r *hl7v2.Rep) (string, any) {
	var s string
	if c.rule.join {
		s = r.Comp(1)
	} else {
		// Free text repeats components only when the sender did not
		// escape its delimiters; keep what was meant.
		parts := make([]string, 0, len(r.Comps))
		for i := range r.Comps {
			parts = append(parts, r.Comp(i+1))
		}
		s = strings.TrimRight(strings.Join(parts, "^"), "^")
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return "", nil
	}
	switch t := c.first("string", "markdown", "code", "id", "uri", "url", "base64Binary", "Annotation", "CodeableConcept", "Attachment"); t {
	case "code", "id":
		if c.rule.codemap != nil {
			return mapCode(c, t, s)
		}
		if !validCode(s) {
			c.problem("102", "not a valid code")
			return "", nil
		}
		return t, s
	case "base64Binary":
		return t, base64.StdEncoding.EncodeToString([]byte(s))
	case "Annotation":
		return t, map[string]any{"text": s}
	case "CodeableConcept":
		return t, map[string]any{"text": s}
	case "Attachment":
		return t, map[string]any{"contentType": "text/plain", "data": base64.StdEncoding.EncodeToString([]byte(s))}
	default:
		return t, s
	}
}

// mapCode maps a code through the rule's code map into a code, Coding or
// CodeableConcept.
func mapCode(c *cv, t, code string) (string, any) {
	cm := c.rule.codemap
	v, ok := cm.m[code]
	if !ok {
		if cm.partial {
			return "", nil
		}
		if cm.def == "" {
			c.problem("103", "value not found in code map "+cm.name)
			return "", nil
		}
		v = cm.def
	}
	switch t {
	case "boolean":
		b, err := strconv.ParseBool(v)
		if err != nil {
			return "", nil
		}
		return t, b
	case "Coding", "CodeableConcept":
		coding := map[string]any{"code": v}
		if cm.system != "" {
			coding["system"] = cm.system
		}
		if d := cm.display[v]; d != "" {
			coding["display"] = d
		}
		if t == "Coding" {
			return t, coding
		}
		return t, map[string]any{"coding": []any{coding}}
	}
	return t, v
}

func convID(c *cv, r *hl7v2.Rep) (string, any) {
	code := comp(r, 1)
	if code == "" {
		return "", nil
	}
	t := c.types[0]
	if c.rule.codemap != nil {
		return mapCode(c, t, code)
	}
	switch t {
	case "boolean":
		switch strings.ToUpper(code) {
		case "Y":
			return t, true
		case "N":
			return t, false
		}
		c.problem("103", "not Y or N")
		return "", nil
	case "Coding", "CodeableConcept":
		if c.rule.table == "" {
			if t == "Coding" {
				return t, map[string]any{"code": code}
			}
			return t, map[string]any{"coding": []any{map[string]any{"code": code}}}
		}
		d, ok := tableDisplay(c.rule.table, code)
		if !ok || !validCode(code) {
			c.mc.warn(c, "103", "value not in HL7 table "+c.rule.table+"; kept as text")
			if t == "Coding" {
				return "", nil
			}
			return t, map[string]any{"text": code}
		}
		coding := map[string]any{"system": v2SystemPrefix + c.rule.table, "code": code, "display": d}
		if t == "Coding" {
			return t, coding
		}
		return t, map[string]any{"coding": []any{coding}}
	case "code":
		if !validCode(code) {
			c.problem("102", "not a valid code")
			return "", nil
		}
	}
	return t, code
}

// systemURI turns an HL7 "name of coding system" into a code system URI;
// "" when unknown.
func (mc *mctx) systemURI(name string) string { return mc.e.systemURI(name) }

// systemURI turns an HL7 "name of coding system" (or an OID or URI) into
// a code system URI; "" when unknown.
func (e *Engine) systemURI(name string) string {
	if name == "" {
		return ""
	}
	if u, ok := e.systems[name]; ok {
		return u
	}
	if len(name) == 7 && strings.HasPrefix(name, "HL7") && allDigits(name[3:]) {
		return v2SystemPrefix + name[3:]
	}
	if len(name) == 8 && strings.HasPrefix(name, "HL7") && allDigits(name[3:]) { // HL70xxxx style is rare; keep the 4 digits
		return v2SystemPrefix + name[4:]
	}
	if isOID(name) {
		return "urn:oid:" + name
	}
	if strings.HasPrefix(name, "http://") || strings.HasPrefix(name, "https://") || strings.HasPrefix(name, "urn:") {
		return name
	}
	return ""
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

var oidRe = regexp.MustCompile(`^[0-2](\.(0|[1-9][0-9]*))+$`)

func isOID(s string) bool { return oidRe.MatchString(s) }

func convCWE(c *cv, r *hl7v2.Rep) (string, any) {
	t := c.types[0]
	if t == "code" {
		code := comp(r, 1)
		if code == "" {
			return "", nil
		}
		if c.rule.codemap != nil {
			return mapCode(c, t, code)
		}
		if !validCode(code) {
			c.problem("102", "not a valid code")
			return "", nil
		}
		return t, code
	}
	if t == "string" {
		s := comp(r, 9)
		if s == "" {
			s = comp(r, 2)
		}
		if s == "" {
			s = comp(r, 1)
		}
		if s == "" {
			return "", nil
		}
		return t, s
	}
	var codings []any
	// Each triplet has its coding system version: CWE-7, CWE-8, CWE-13.
	for i, at := range [...]int{1, 4, 10} {
		code, display, sys := comp(r, at), comp(r, at+1), comp(r, at+2)
		if code == "" && display == "" {
			continue
		}
		coding := map[string]any{}
		if cm := c.rule.codemap; cm != nil && code != "" {
			// A value map turns each triplet's code into the target
			// system's (table 0296 eng → BCP 47 en); a code it does not
			// know is kept as sent.
			if v, ok := cm.m[code]; ok && cm.system != "" {
				code, sys = v, ""
				coding["system"] = cm.system
				if d := cm.display[v]; d != "" {
					display = d
				}
			}
		}
		if v := comp(r, [...]int{7, 8, 13}[i]); v != "" {
			coding["version"] = v
		}
		uri := c.mc.systemURI(sys)
		if _, ok := coding["system"]; ok {
			uri = coding["system"].(string)
		}
		if uri == "" && c.rule.table != "" && at == 1 {
			uri = v2SystemPrefix + c.rule.table
			if display == "" {
				if d, ok := tableDisplay(c.rule.table, code); ok {
					display = d
				}
			}
		}
		if uri != "" {
			coding["system"] = uri
		}
		if code != "" {
			if !validCode(code) {
				c.mc.warn(c, "102", "coded value is not a valid FHIR code; kept as display")
			} else {
				coding["code"] = code
			}
		}
		if display != "" {
			coding["display"] = display
		}
		codings = append(codings, coding)
		if code != "" {
			if std, ok := c.mc.concept(sys, uri, code); ok {
				codings = append(codings, std)
			}
		}
	}
	cc := map[string]any{}
	if len(codings) > 0 {
		cc["coding"] = codings
	}
	if txt := comp(r, 9); txt != "" {
		cc["text"] = txt
	} else if comp(r, 1) == "" && comp(r, 2) != "" {
		cc["text"] = comp(r, 2)
	}
	if len(cc) == 0 {
		return "", nil
	}
	if t == "Coding" {
		if len(codings) == 0 {
			return "", nil
		}
		return t, codings[0]
	}
	return t, cc
}

// concept applies the source profile's concept maps to one coding.
func (mc *mctx) concept(rawSystem, uri, code string) (map[string]any, bool) {
	return mc.prof.concept(rawSystem, uri, code)
}

// concept looks a coding up in the profile's concept maps, by the system
// as sent and by its URI, and returns the standard coding.
func (p *profile) concept(rawSystem, uri, code string) (map[string]any, bool) {
	if len(p.concepts) == 0 {
		return nil, false
	}
	r, ok := p.concepts[rawSystem+"\x1f"+code]
	if !ok && uri != "" {
		r, ok = p.concepts[uri+"\x1f"+code]
	}
	if !ok {
		return nil, false
	}
	out := map[string]any{"system": r.target.System, "code": r.target.Code}
	if r.target.Display != "" {
		out["display"] = r.target.Display
	}
	return out, true
}

var numRe = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?$`)

// decimal normalises an HL7 NM to a JSON number keeping the precision of
// the text ("1.50" stays "1.50"; "+.5" becomes "0.5").
func decimal(s string) (string, bool) {
	s = strings.TrimSpace(s)
	neg := false
	if strings.HasPrefix(s, "+") {
		s = s[1:]
	} else if strings.HasPrefix(s, "-") {
		neg, s = true, s[1:]
	}
	s = strings.TrimSuffix(s, ".")
	if strings.HasPrefix(s, ".") {
		s = "0" + s
	}
	for len(s) > 1 && s[0] == '0' && s[1] != '.' {
		s = s[1:]
	}
	if neg {
		s = "-" + s
	}
	if !numRe.MatchString(s) {
		return "", false
	}
	return s, true
}

func number(c *cv, s, t string) (string, any) {
	if s == "" {
		return "", nil
	}
	d, ok := decimal(s)
	if !ok {
		c.problem("102", "not a number")
		return "", nil
	}
	switch t {
	case "integer", "positiveInt", "unsignedInt":
		n, err := strconv.Atoi(d)
		if err != nil || (t == "positiveInt" && n < 1) || (t == "unsignedInt" && n < 0) {
			c.problem("102", "not a valid "+t)
			return "", nil
		}
		return t, n
	case "Quantity":
		return t, map[string]any{"value": jsonNumber(d)}
	case "string":
		return t, d
	}
	return t, jsonNumber(d)
}

func convNM(c *cv, r *hl7v2.Rep) (string, any) {
	t, v := number(c, comp(r, 1), c.types[0])
	if q, ok := v.(map[string]any); ok && c.unit != nil {
		c.unitQuantity(q, comp(c.unit, 1), comp(c.unit, 2), comp(c.unit, 3))
	}
	return t, v
}

// convMinutes maps a duration (NM) in the time units of its unit: field
// (SCH-9 in SCH-10) to whole minutes; without units it is minutes.
func convMinutes(c *cv, r *hl7v2.Rep) (string, any) {
	d, ok := decimal(comp(r, 1))
	if !ok {
		if comp(r, 1) != "" {
			c.problem("102", "not a number")
		}
		return "", nil
	}
	unit := "min"
	if c.unit != nil {
		unit = c.mc.codemapValue("time-unit", comp(c.unit, 1))
	}
	m, ok := wholeMinutes(d, unit)
	if !ok || (c.types[0] == "positiveInt" && m < 1) {
		return "", nil
	}
	return c.types[0], m
}

// wholeMinutes is the decimal d in the time unit (a UCUM code of the
// time-unit code map) as a whole, non-negative number of minutes; ok is
// false for an unknown unit or a duration that is not whole minutes.
func wholeMinutes(d, unit string) (int, bool) {
	f, known := minutesPer[unit]
	if !known {
		return 0, false
	}
	v, err := strconv.ParseFloat(d, 64)
	m := v * f
	if err != nil || m < 0 || m != float64(int(m)) {
		return 0, false
	}
	return int(m), true
}

func convSN(c *cv, r *hl7v2.Rep) (string, any) {
	cmp, n1, sep, n2 := comp(r, 1), comp(r, 2), comp(r, 3), comp(r, 4)
	if n1 == "" && n2 == "" {
		return "", nil
	}
	d1, ok1 := decimal(n1)
	d2, ok2 := decimal(n2)
	if (n1 != "" && !ok1) || (n2 != "" && !ok2) {
		c.problem("102", "not a structured numeric")
		return "", nil
	}
	if c.want("string") && len(c.types) == 1 {
		return "string", strings.TrimSpace(cmp + n1 + sep + n2)
	}
	if n2 != "" && (sep == "-" || sep == "") && c.want("Range") {
		rg := map[string]any{"high": map[string]any{"value": jsonNumber(d2)}}
		if n1 != "" {
			rg["low"] = map[string]any{"value": jsonNumber(d1)}
		}
		return "Range", rg
	}
	if n2 != "" && (sep == ":" || sep == "/") && c.want("Ratio") {
		return "Ratio", map[string]any{"numerator": map[string]any{"value": jsonNumber(d1)}, "denominator": map[string]any{"value": jsonNumber(d2)}}
	}
	if n1 == "" || !c.want("Quantity") {
		return "", nil
	}
	q := map[string]any{"value": jsonNumber(d1)}
	switch cmp {
	case "<", ">", "<=", ">=":
		q["comparator"] = cmp
	}
	return "Quantity", q
}

// convCWERef makes the Location or Organization (as the target's
// Reference allows) that a coded value names — a discharge location
// (PV1-37), a cost center (FT1-13) — with the code as its identifier and
// the text as its name, and references it.
func convCWERef(c *cv, r *hl7v2.Rep) (string, any) {
	code, text := comp(r, 1), comp(r, 2)
	if code == "" && text == "" {
		return "", nil
	}
	typ := ""
	for _, t := range c.rule.to.last().refTo {
		if t == "Location" || t == "Organization" {
			typ = t
			break
		}
	}
	if typ == "" {
		return "", nil
	}
	res := map[string]any{}
	if text != "" {
		res["name"] = text
	} else {
		res["name"] = code
	}
	key := "name:" + text
	if code != "" {
		id := map[string]any{"value": code}
		if sys := c.mc.identifierSystem(comp(r, 3), "", ""); sys != "" {
			id["system"] = sys
		}
		res["identifier"] = []any{id}
		key = "code:" + comp(r, 3) + "|" + code
	}
	return "Reference", c.mc.side(typ, StableID(c.mc.tenant, typ, c.mc.sender, key), res)
}

// convNTE maps a note's text (NTE-3, one repetition) to an Annotation
// with the note's author (NTE-5, a Practitioner) and time (NTE-6), as
// the IG's NTE map.
func convNTE(c *cv, r *hl7v2.Rep) (string, any) {
	tc := *c
	tc.types = []string{"string"}
	_, txt := convText(&tc, r)
	if txt == nil {
		return "", nil
	}
	a := map[string]any{"text": txt}
	if c.seg != nil && c.seg.Name == "NTE" {
		if t, ok := parseTS(strings.TrimSpace(c.seg.Get("6"))); ok {
			a["time"], _ = t.render("dateTime", c.mc.prof.loc)
		}
		if f := c.seg.Field(5); f != nil {
			ac := *c
			ac.types = []string{"Reference"}
			if _, ref := convXCN(&ac, f.Rep(1)); ref != nil {
				a["authorReference"] = ref
			}
		}
	}
	return "Annotation", a
}

// convMO maps money (MO: quantity, ISO 4217 denomination; CP-1 read as
// a component path) to Money.
func convMO(c *cv, r *hl7v2.Rep) (string, any) {
	_, v := number(c, comp(r, 1), "decimal")
	if v == nil {
		return "", nil
	}
	m := map[string]any{"value": v}
	if cur := strings.ToUpper(comp(r, 2)); len(cur) == 3 && validCode(cur) {
		m["currency"] = cur
	}
	return "Money", m
}

func convCQ(c *cv, r *hl7v2.Rep) (string, any) {
	d := comp(r, 1)
	if d == "" {
		return "", nil
	}
	t, v := number(c, d, "Quantity")
	if v == nil {
		return "", nil
	}
	q := v.(map[string]any)
	c.unitQuantity(q, sub(r, 2, 1), sub(r, 2, 2), sub(r, 2, 3))
	return t, q
}

// unitQuantity sets a Quantity's unit and, when the units name a known
// coding system (UCUM, SNOMED CT, ...), its code and system (qty-3: a
// code needs a system).
func (c *cv) unitQuantity(q map[string]any, code, text, system string) {
	if text != "" {
		q["unit"] = text
	} else if code != "" {
		q["unit"] = code
	}
	if code == "" || !validCode(code) {
		return
	}
	if strings.EqualFold(system, "UCUM") {
		q["code"], q["system"] = code, ucumSystem
	} else if uri := c.mc.systemURI(system); uri != "" {
		q["code"], q["system"] = code, uri
	}
}

// obx5Types are the types an OBX-5 value takes (Observation.value[x]
// and Observation.component.value[x] alike).
var obx5Types = []string{"Quantity", "CodeableConcept", "string", "Range", "Ratio", "dateTime", "time", "integer", "boolean"}

// repeated reports whether field f of s has more than one non-empty
// repetition.
func repeated(s *hl7v2.Segment, f int) bool {
	fl := s.Field(f)
	if fl == nil {
		return false
	}
	n := 0
	for i := range fl.Reps {
		if !empty(&fl.Reps[i]) {
			n++
		}
	}
	return n > 1
}

// convOBX5Component maps each repetition of a repeated OBX-5 to an
// Observation.component, as the IG's OBX[Observation-Component] map:
// OBX-3 its code, the repetition its value (by OBX-2, as OBX5), OBX-7
// its reference range. A single OBX-5 is the Observation's own value.
func convOBX5Component(c *cv, r *hl7v2.Rep) (string, any) {
	if !repeated(c.seg, 5) || empty(r) {
		return "", nil
	}
	vc := *c
	vc.types = obx5Types
	typ, v := convOBX5(&vc, r)
	c.problemCode, c.problemText = vc.problemCode, vc.problemText
	if v == nil {
		return "", nil
	}
	cc := *c
	cc.types = []string{"CodeableConcept"}
	_, code := convCWE(&cc, c.seg.Field(3).Rep(1))
	if code == nil {
		return "", nil
	}
	comp := map[string]any{"code": code, "value" + upperFirst(typ): v}
	if rr := strings.TrimSpace(c.seg.Get("7")); rr != "" {
		comp["referenceRange"] = []any{map[string]any{"text": rr}}
	}
	return "BackboneElement", comp
}

func convOBX5(c *cv, r *hl7v2.Rep) (string, any) {
	vt := strings.TrimSpace(c.seg.Get("2"))
	if empty(r) {
		return "", nil
	}
	if c.rule.to.steps[0].name == "value" && repeated(c.seg, 5) {
		return "", nil // components (OBX5C)
	}
	orig := c.types
	defer func() { c.types = orig }()
	switch vt {
	case "NM":
		c.types = []string{"Quantity"}
		t, v := number(c, comp(r, 1), "Quantity")
		if v != nil {
			u := c.seg.Field(6).Rep(1)
			c.unitQuantity(v.(map[string]any), comp(u, 1), comp(u, 2), comp(u, 3))
		}
		return t, v
	case "SN":
		c.types = orig
		t, v := convSN(c, r)
		if q, ok := v.(map[string]any); ok && t == "Quantity" {
			u := c.seg.Field(6).Rep(1)
			c.unitQuantity(q, comp(u, 1), comp(u, 2), comp(u, 3))
		}
		return t, v
	case "CE", "CWE", "CNE", "CF":
		c.types = []string{"CodeableConcept"}
		return convCWE(c, r)
	case "DT", "TS", "DTM":
		c.types = []string{"dateTime"}
		return convTS(c, r)
	case "TM":
		s := comp(r, 1)
		if len(s) >= 4 && allDigits(s[:4]) {
			out := s[:2] + ":" + s[2:4] + ":00"
			if len(s) >= 6 && allDigits(s[4:6]) {
				out = s[:2] + ":" + s[2:4] + ":" + s[4:6]
			}
			return "time", out
		}
		c.problem("102", "not a time")
		return "", nil
	case "CQ":
		c.types = []string{"Quantity"}
		return convCQ(c, r)
	default: // ST, TX, FT, RP, ED pointers and anything else: the text
		parts := make([]string, 0, len(r.Comps))
		for i := range r.Comps {
			parts = append(parts, r.Comp(i+1))
		}
		s := strings.TrimSpace(strings.TrimRight(strings.Join(parts, "^"), "^"))
		if s == "" {
			return "", nil
		}
		return "string", s
	}
}

// ts is a parsed HL7 TS/DTM/DT value.
type ts struct {
	y, mo, d, h, mi, s int
	frac               string
	prec               int // 4 year, 6 month, 8 day, 10 hour, 12 minute, 14 second
	zone               *time.Location
}

var tsRe = regexp.MustCompile(`^([0-9]{4})([0-9]{2})?([0-9]{2})?([0-9]{2})?([0-9]{2})?([0-9]{2})?(\.[0-9]{1,4})?([+-][0-9]{4})?$`)

func parseTS(s string) (ts, bool) {
	m := tsRe.FindStringSubmatch(s)
	if m == nil {
		return ts{}, false
	}
	var t ts
	t.prec = 4
	vals := []*int{&t.y, &t.mo, &t.d, &t.h, &t.mi, &t.s}
	for i, v := range vals {
		if m[i+1] == "" {
			if i > 0 && i < 3 {
				*v = 1
			}
			continue
		}
		*v, _ = strconv.Atoi(m[i+1])
		t.prec = 4 + 2*i
	}
	// Later parts only count after the earlier ones (regexp groups are greedy in order).
	t.frac = m[7]
	if t.frac != "" && t.prec != 14 {
		return ts{}, false
	}
	if m[8] != "" {
		hh, _ := strconv.Atoi(m[8][1:3])
		mm, _ := strconv.Atoi(m[8][3:5])
		if hh > 14 || mm > 59 {
			return ts{}, false
		}
		off := (hh*60 + mm) * 60
		if m[8][0] == '-' {
			off = -off
		}
		t.zone = time.FixedZone("", off)
	}
	if t.mo < 1 || t.mo > 12 || t.d < 1 || t.d > daysIn(t.y, t.mo) || t.h > 23 || t.mi > 59 || t.s > 59 {
		return ts{}, false
	}
	return t, true
}

func daysIn(y, m int) int {
	return time.Date(y, time.Month(m)+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

// render formats t as a FHIR date, dateTime or instant at its own
// precision; a time without offset is in the sender's zone loc.
func (t ts) render(typ string, loc *time.Location) (string, bool) {
	date := strconv.Itoa(t.y)
	for len(date) < 4 {
		date = "0" + date
	}
	if t.prec >= 6 {
		date += "-" + two(t.mo)
	}
	if t.prec >= 8 {
		date += "-" + two(t.d)
	}
	if typ == "date" || t.prec <= 8 {
		if typ == "instant" {
			return "", false
		}
		return date, true
	}
	zone := t.zone
	if zone == nil {
		zone = loc
	}
	tm := time.Date(t.y, time.Month(t.mo), t.d, t.h, t.mi, t.s, 0, zone)
	out := tm.Format("2006-01-02T15:04:05")
	if t.frac != "" {
		out += t.frac
	}
	return out + tm.Format("Z07:00"), true
}

func two(n int) string {
	if n < 10 {
		return "0" + strconv.Itoa(n)
	}
	return strconv.Itoa(n)
}

func convTS(c *cv, r *hl7v2.Rep) (string, any) {
	s := comp(r, 1)
	if s == "" {
		return "", nil
	}
	t, ok := parseTS(s)
	if !ok {
		c.problem("102", "not a valid HL7 date/time")
		return "", nil
	}
	typ := c.first("dateTime", "date", "instant", "Period")
	if typ == "Period" {
		v, _ := t.render("dateTime", c.mc.prof.loc)
		return typ, map[string]any{"start": v}
	}
	v, ok := t.render(typ, c.mc.prof.loc)
	if !ok {
		c.problem("102", "date/time too imprecise for an instant")
		return "", nil
	}
	return typ, v
}

// convTSTime is TS for a value that only matters with its time of day
// (the patient-birthTime extension): a bare date maps to nothing.
func convTSTime(c *cv, r *hl7v2.Rep) (string, any) {
	if t, ok := parseTS(comp(r, 1)); ok && t.prec <= 8 {
		return "", nil
	}
	return convTS(c, r)
}

func convDR(c *cv, r *hl7v2.Rep) (string, any) {
	p := map[string]any{}
	for i, k := range [...]string{"start", "end"} {
		s := sub(r, i+1, 1)
		if s == "" {
			continue
		}
		t, ok := parseTS(s)
		if !ok {
			c.problem("102", "not a valid HL7 date/time range")
			return "", nil
		}
		p[k], _ = t.render("dateTime", c.mc.prof.loc)
	}
	if len(p) == 0 {
		return "", nil
	}
	return "Period", p
}

// period reads components start and end of r as a Period.
func (c *cv) period(r *hl7v2.Rep, start, end int) map[string]any {
	return c.periodOf(comp(r, start), comp(r, end))
}

// subPeriod reads a DR component (start & end subcomponents) as a Period.
func (c *cv) subPeriod(r *hl7v2.Rep, i int) map[string]any {
	return c.periodOf(sub(r, i, 1), sub(r, i, 2))
}

// periodOf is a Period of two TS values, nil when neither is a time.
func (c *cv) periodOf(start, end string) map[string]any {
	p := map[string]any{}
	for _, e := range [...]struct{ k, ts string }{{"start", start}, {"end", end}} {
		if t, ok := parseTS(e.ts); ok {
			p[e.k], _ = t.render("dateTime", c.mc.prof.loc)
		}
	}
	if len(p) == 0 {
		return nil
	}
	return p
}

// convDLN maps a driver's license (DLN: number, issuing authority,
// expiration date) to an Identifier of type DL.
func convDLN(c *cv, r *hl7v2.Rep) (string, any) {
	v := comp(r, 1)
	if v == "" {
		return "", nil
	}
	id := map[string]any{"value": v, "type": map[string]any{"coding": []any{map[string]any{"system": v2SystemPrefix + "0203", "code": "DL", "display": "Driver's license number"}}}}
	if t, ok := parseTS(comp(r, 3)); ok {
		end, _ := t.render("date", c.mc.prof.loc)
		id["period"] = map[string]any{"end": end}
	}
	return "Identifier", id
}

func convBool(c *cv, r *hl7v2.Rep) (string, any) {
	switch strings.ToUpper(comp(r, 1)) {
	case "":
		return "", nil
	case "Y", "YES", "T", "TRUE", "1":
		return "boolean", true
	case "N", "NO", "F", "FALSE", "0":
		return "boolean", false
	}
	c.problem("102", "not a Y/N value")
	return "", nil
}

func (mc *mctx) codemapValue(name, code string) string {
	if code == "" {
		return ""
	}
	cm := mc.e.codemaps[name]
	if v, ok := cm.m[code]; ok {
		return v
	}
	return cm.def
}

func humanName(c *cv, r *hl7v2.Rep, off int) map[string]any {
	// off is 0 for XPN, 1 for XCN (whose name starts at component 2).
	n := map[string]any{}
	if f := sub(r, 1+off, 1); f != "" {
		n["family"] = f
	}
	var given []any
	if g := comp(r, 2+off); g != "" {
		given = append(given, g)
	}
	if m := comp(r, 3+off); m != "" {
		given = append(given, m)
	}
	if len(given) > 0 {
		n["given"] = given
	}
	var suffix []any
	if s := comp(r, 4+off); s != "" {
		suffix = append(suffix, s)
	}
	degree := 6 + off
	if off == 1 {
		degree = 7
	}
	if s := comp(r, degree); s != "" {
		suffix = append(suffix, s)
	}
	if len(suffix) > 0 {
		n["suffix"] = suffix
	}
	if p := comp(r, 5+off); p != "" {
		n["prefix"] = []any{p}
	}
	if len(n) == 0 {
		return nil
	}
	return n
}

func convXPN(c *cv, r *hl7v2.Rep) (string, any) {
	n := humanName(c, r, 0)
	if n == nil {
		return "", nil
	}
	if c.types[0] == "string" {
		return "string", nameText(n)
	}
	if g := comp(r, 15); g != "" {
		given, _ := n["given"].([]any)
		n["given"] = append(given, g)
	}
	if s := comp(r, 14); s != "" {
		suffix, _ := n["suffix"].([]any)
		n["suffix"] = append(suffix, s)
	}
	if u := c.mc.codemapValue("name-use", comp(r, 7)); u != "" {
		n["use"] = u
	}
	if p := c.period(r, 12, 13); p != nil {
		n["period"] = p
	} else if t, ok := parseTS(sub(r, 10, 1)); ok {
		v, _ := t.render("dateTime", c.mc.prof.loc)
		n["period"] = map[string]any{"start": v}
	}
	return "HumanName", n
}

func nameText(n map[string]any) string {
	var parts []string
	if g, ok := n["given"].([]any); ok {
		for _, x := range g {
			parts = append(parts, x.(string))
		}
	}
	if f, ok := n["family"].(string); ok {
		parts = append(parts, f)
	}
	return strings.Join(parts, " ")
}

func convXAD(c *cv, r *hl7v2.Rep) (string, any) {
	a := map[string]any{}
	var lines []any
	// XAD-1 is an SAD: street or mailing address, street name, dwelling
	// number; each part sent is a line, as the V2-to-FHIR IG maps it.
	for s := 1; s <= 3; s++ {
		if l := sub(r, 1, s); l != "" {
			lines = append(lines, l)
		}
	}
	if l := comp(r, 2); l != "" {
		lines = append(lines, l)
	}
	if len(lines) > 0 {
		a["line"] = lines
	}
	for k, i := range map[string]int{"city": 3, "state": 4, "postalCode": 5, "country": 6} {
		if v := comp(r, i); v != "" {
			a[k] = v
		}
	}
	// XAD-9 county is a CWE: its text, else its code.
	if v := sub(r, 9, 2); v != "" {
		a["district"] = v
	} else if v := sub(r, 9, 1); v != "" {
		a["district"] = v
	}
	if len(a) == 0 {
		return "", nil
	}
	at := comp(r, 7)
	if u := c.mc.codemapValue("address-use", at); u != "" {
		a["use"] = u
	}
	if t := c.mc.codemapValue("address-type", at); t != "" {
		a["type"] = t
	}
	if p := c.period(r, 13, 14); p != nil {
		a["period"] = p
	} else if p := c.subPeriod(r, 12); p != nil { // XAD-12, the validity range before v2.5
		a["period"] = p
	}
	return "Address", a
}

// identifierSystem resolves an assigning authority (HD: namespace,
// universal id, universal id type) to a system URI: the source profile's
// map, then urn:oid: for an ISO OID, then the profile's template.
func (mc *mctx) identifierSystem(ns, uid, uidType string) string {
	return mc.prof.identifierSystem(ns, uid, uidType)
}

func (p *profile) identifierSystem(ns, uid, uidType string) string {
	if ns != "" {
		if s, ok := p.idSystems[ns]; ok {
			return s
		}
	}
	if uid != "" {
		if s, ok := p.idSystems[uid]; ok {
			return s
		}
		if isOID(uid) && (uidType == "ISO" || uidType == "") {
			return "urn:oid:" + uid
		}
		if strings.HasPrefix(uid, "http://") || strings.HasPrefix(uid, "https://") {
			return uid
		}
	}
	auth := ns
	if auth == "" {
		auth = uid
	}
	if auth == "" || p.sysTemplate == "" {
		return ""
	}
	return strings.ReplaceAll(p.sysTemplate, "{authority}", urlSafe(auth))
}

func urlSafe(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	return b.String()
}

// cxIdentifier maps a CX; system is "" when the authority is unknown.
func (c *cv) cxIdentifier(r *hl7v2.Rep) map[string]any {
	v := comp(r, 1)
	if v == "" {
		return nil
	}
	id := map[string]any{"value": v}
	if sys := c.mc.identifierSystem(sub(r, 4, 1), sub(r, 4, 2), sub(r, 4, 3)); sys != "" {
		id["system"] = sys
	}
	if t := comp(r, 5); t != "" {
		if d, ok := tableDisplay("0203", t); ok {
			id["type"] = map[string]any{"coding": []any{map[string]any{"system": v2SystemPrefix + "0203", "code": t, "display": d}}}
		} else {
			c.mc.warn(c, "103", "identifier type not in HL7 table 0203; kept as text")
			id["type"] = map[string]any{"text": t}
		}
	}
	if p := c.period(r, 7, 8); p != nil {
		id["period"] = p
	}
	if a := c.hdOrganization(sub(r, 4, 1), sub(r, 4, 2), sub(r, 4, 3)); a != nil {
		id["assigner"] = a
	}
	return id
}

// hdOrganization makes the Organization an assigning authority (HD with
// both a namespace and a universal id) stands for and references it; nil
// for an authority named by one part only, which the identifier's system
// already carries.
func (c *cv) hdOrganization(ns, uid, uidType string) map[string]any {
	if ns == "" || uid == "" {
		return nil
	}
	first := c.hdIdentifier(ns, uid, uidType)
	second := map[string]any{"value": uid}
	if isOID(uid) && (uidType == "ISO" || uidType == "") {
		second["value"], second["system"] = "urn:oid:"+uid, "urn:ietf:rfc:3986"
	}
	if uidType != "" && validCode(uidType) {
		coding := map[string]any{"system": v2SystemPrefix + "0301", "code": uidType}
		if cm := c.mc.e.codemaps["universal-id-type"]; cm != nil && cm.display[uidType] != "" {
			coding["display"] = cm.display[uidType]
		} else if d, ok := tableDisplay("0301", uidType); ok {
			coding["display"] = d
		}
		second["type"] = map[string]any{"coding": []any{coding}}
	}
	return c.mc.side("Organization", c.mc.hdOrgID(ns, uid, uidType), map[string]any{"identifier": []any{first, second}})
}

// hdOrgID is the id of the Organization an HD names (hdOrg): scoped by
// the tenant only, as the authority names it wherever it is sent.
func (mc *mctx) hdOrgID(ns, uid, ut string) string {
	return StableID(mc.tenant, "Organization", "authority", ns, uid, ut)
}

// hdIdentifier is the first identifier of the Organization an HD names:
// its namespace (with the authority's system), or, named by one part
// only, that part (a URI as such).
func (c *cv) hdIdentifier(ns, uid, ut string) map[string]any {
	if ns != "" && uid != "" {
		first := map[string]any{"value": ns}
		if sys := c.mc.identifierSystem(ns, "", ""); sys != "" {
			first["system"] = sys
		}
		return first
	}
	v := ns
	if v == "" {
		v = uid
	}
	if v == "" {
		return nil
	}
	ident := map[string]any{"value": v}
	if u := hdURI(uid, ut); u != "" {
		ident["value"], ident["system"] = u, "urn:ietf:rfc:3986"
	} else if sys := c.mc.identifierSystem(ns, "", ""); sys != "" {
		ident["system"] = sys
	}
	return ident
}

func convCX(c *cv, r *hl7v2.Rep) (string, any) {
	id := c.cxIdentifier(r)
	if id == nil {
		return "", nil
	}
	if c.types[0] == "string" {
		return "string", id["value"]
	}
	return "Identifier", id
}

func convEI(c *cv, r *hl7v2.Rep) (string, any) {
	v := comp(r, 1)
	if v == "" {
		return "", nil
	}
	if c.types[0] == "string" {
		return "string", v
	}
	id := map[string]any{"value": v}
	if sys := c.mc.identifierSystem(comp(r, 2), comp(r, 3), comp(r, 4)); sys != "" {
		id["system"] = sys
	}
	return "Identifier", id
}

func convXTN(c *cv, r *hl7v2.Rep) (string, any) {
	equip := comp(r, 3)
	cp := map[string]any{}
	sys := c.mc.codemapValue("telecom-system", equip)
	// As the V2-to-FHIR IG's XTN map: an Internet or X.400 address is
	// XTN-4; a number is XTN-12 (unformatted) before XTN-1, else composed
	// from XTN-5..8.
	val := comp(r, 1)
	if sys != "email" {
		if u := comp(r, 12); u != "" {
			val = u
		}
	}
	if email := comp(r, 4); email != "" && (sys == "email" || val == "") {
		val, sys = email, "email"
	}
	if val == "" {
		var parts []string
		if cc := comp(r, 5); cc != "" {
			parts = append(parts, "+"+strings.TrimPrefix(cc, "+"))
		}
		for _, i := range []int{6, 7} {
			if p := comp(r, i); p != "" {
				parts = append(parts, p)
			}
		}
		if len(parts) > 0 && comp(r, 7) != "" {
			val = strings.Join(parts, " ")
			if ext := comp(r, 8); ext != "" {
				val += " ext. " + ext
			}
		}
	}
	if val == "" {
		return "", nil
	}
	if sys == "" {
		sys = "phone"
	}
	cp["system"] = sys
	cp["value"] = val
	// XTN-2 says what the number is for (the IG maps use from it alone).
	if u := c.mc.codemapValue("telecom-use", comp(r, 2)); u != "" {
		cp["use"] = u
	}
	if p := c.period(r, 13, 14); p != nil {
		cp["period"] = p
	}
	if rk := comp(r, 18); rk != "" {
		if n, err := strconv.Atoi(rk); err == nil && n > 0 {
			cp["rank"] = n
		}
	}
	return "ContactPoint", cp
}

// xtnUse is XTN for a field whose meaning gives the use (PID-13 home,
// PID-14 business) when XTN-2 does not.
func xtnUse(use string) func(*cv, *hl7v2.Rep) (string, any) {
	return func(c *cv, r *hl7v2.Rep) (string, any) {
		t, v := convXTN(c, r)
		if cp, ok := v.(map[string]any); ok {
			if _, has := cp["use"]; !has {
				cp["use"] = use
			}
		}
		return t, v
	}
}

// convXCN makes a Practitioner (identifier and name) and references it.
func convXCN(c *cv, r *hl7v2.Rep) (string, any) {
	idv := comp(r, 1)
	name := humanName(c, r, 1)
	if idv == "" && name == nil {
		return "", nil
	}
	if c.types[0] == "HumanName" {
		if name == nil {
			return "", nil
		}
		return "HumanName", name
	}
	p := map[string]any{}
	sys := c.mc.identifierSystem(sub(r, 9, 1), sub(r, 9, 2), sub(r, 9, 3))
	var id string
	if idv != "" {
		ident := map[string]any{"value": idv}
		if sys != "" {
			ident["system"] = sys
			id = StableID(c.mc.tenant, "Practitioner", sys, idv)
		} else {
			id = StableID(c.mc.tenant, "Practitioner", c.mc.sender, idv)
		}
		if t := comp(r, 13); t != "" {
			if d, ok := tableDisplay("0203", t); ok {
				ident["type"] = map[string]any{"coding": []any{map[string]any{"system": v2SystemPrefix + "0203", "code": t, "display": d}}}
			}
		}
		if a := c.hdOrganization(sub(r, 9, 1), sub(r, 9, 2), sub(r, 9, 3)); a != nil {
			ident["assigner"] = a
		}
		p["identifier"] = []any{ident}
	} else {
		id = StableID(c.mc.tenant, "Practitioner", c.mc.sender, "name", nameKey(name))
	}
	if name != nil {
		if u := c.mc.codemapValue("name-use", comp(r, 10)); u != "" {
			name["use"] = u
		}
		if s := comp(r, 21); s != "" {
			suffix, _ := name["suffix"].([]any)
			name["suffix"] = append(suffix, s)
		}
		if pd := c.period(r, 19, 20); pd != nil {
			name["period"] = pd
		}
		p["name"] = []any{name}
	}
	return "Reference", c.mc.side("Practitioner", id, p)
}

func nameKey(n map[string]any) string {
	var b strings.Builder
	for _, k := range []string{"family", "given", "prefix", "suffix"} {
		switch v := n[k].(type) {
		case string:
			b.WriteString(v)
		case []any:
			for _, x := range v {
				b.WriteString(x.(string))
				b.WriteByte(' ')
			}
		}
		b.WriteByte('|')
	}
	return b.String()
}

// convXON makes an Organization (name and identifier) and references it.
func convXON(c *cv, r *hl7v2.Rep) (string, any) {
	name := comp(r, 1)
	idv := comp(r, 10)
	if idv == "" {
		idv = comp(r, 3)
	}
	if name == "" && idv == "" {
		return "", nil
	}
	if c.types[0] == "string" {
		if name == "" {
			return "", nil
		}
		return "string", name
	}
	o := map[string]any{}
	if name != "" {
		o["name"] = name
	}
	if idv != "" {
		ident := map[string]any{"value": idv}
		if sys := c.mc.identifierSystem(sub(r, 6, 1), sub(r, 6, 2), sub(r, 6, 3)); sys != "" {
			ident["system"] = sys
		}
		if t := comp(r, 7); t != "" && validCode(t) {
			ident["type"] = map[string]any{"coding": []any{map[string]any{"system": v2SystemPrefix + "0203", "code": t}}}
		}
		o["identifier"] = []any{ident}
	}
	return "Reference", c.mc.side("Organization", c.mc.xonOrgID(r), o)
}

// xonOrgID is the id of the Organization an XON names (convXON): its
// identifier (XON-10, else XON-3) in the authority's system, else in the
// sender's scope; without one, its name in the sender's scope. "" when
// the XON names nothing.
func (mc *mctx) xonOrgID(r *hl7v2.Rep) string {
	name, idv := comp(r, 1), comp(r, 10)
	if idv == "" {
		idv = comp(r, 3)
	}
	switch {
	case idv != "":
		if sys := mc.identifierSystem(sub(r, 6, 1), sub(r, 6, 2), sub(r, 6, 3)); sys != "" {
			return StableID(mc.tenant, "Organization", sys, idv)
		}
		return StableID(mc.tenant, "Organization", mc.sender, idv)
	case name != "":
		return StableID(mc.tenant, "Organization", mc.sender, "name", name)
	}
	return ""
}

// plLevels are the PL components that name a place, from the most to
// the least specific, with the location-physical-type each one gets.
var plLevels = [...]struct {
	comp int
	kind string
}{{3, "bd"}, {2, "ro"}, {1, "lvl"}, {8, "lvl"}, {7, "bu"}, {4, "si"}}

const physicalTypeSystem = "http://terminology.hl7.org/CodeSystem/location-physical-type"

// convPL makes one Location per named component of a PL (bed, room, point
// of care, floor, building, facility), each partOf the next broader one
// as the V2-to-FHIR IG's PL map does, and references the most specific.
// Every Location carries the whole PL (its non-empty values joined by
// "--") as description; its id is the sender, that description and the
// component, so the same place named twice in a message is made once.
func convPL(c *cv, r *hl7v2.Rep) (string, any) {
	d := joinValues(r)
	if d == "" {
		return "", nil
	}
	if c.types[0] == "string" {
		return "string", d
	}
	var ref map[string]any
	var child *instance
	for _, lv := range plLevels {
		name := sub(r, lv.comp, 1)
		if name == "" {
			continue
		}
		loc := map[string]any{
			"name":         name,
			"mode":         "instance",
			"description":  d,
			"physicalType": map[string]any{"coding": []any{map[string]any{"system": physicalTypeSystem, "code": lv.kind}}},
		}
		if uid := sub(r, lv.comp, 2); uid != "" && isOID(uid) {
			loc["identifier"] = []any{map[string]any{"system": "urn:ietf:rfc:3986", "value": "urn:oid:" + uid}}
		}
		id := StableID(c.mc.tenant, "Location", c.mc.sender, d, strconv.Itoa(lv.comp))
		rf := c.mc.side("Location", id, loc)
		if child != nil {
			if _, ok := child.content["partOf"]; !ok {
				child.content["partOf"] = rf
			}
		}
		child = c.mc.sideIdx["Location/"+id]
		if ref == nil {
			ref = rf
		}
	}
	if ref == nil { // only a description or a location type
		return "", nil
	}
	return "Reference", ref
}

// hdURI is the URI an HD names: urn:oid: for an ISO OID, the universal id
// itself when it is a URI; "" otherwise.
func hdURI(uid, uidType string) string {
	switch {
	case uid == "":
		return ""
	case isOID(uid) && (uidType == "ISO" || uidType == ""):
		return "urn:oid:" + uid
	case strings.HasPrefix(uid, "http://") || strings.HasPrefix(uid, "https://") || strings.HasPrefix(uid, "urn:"):
		return uid
	}
	return ""
}

// convHD maps a hierarchic designator: to the Organization it names (a
// facility), to its URI (an endpoint), or to a message source or
// destination (name and endpoint; from MSH, the destination's receiver is
// the MSH-6 facility).
func convHD(c *cv, r *hl7v2.Rep) (string, any) {
	ns, uid, ut := comp(r, 1), comp(r, 2), comp(r, 3)
	if ns == "" && uid == "" {
		return "", nil
	}
	switch t := c.types[0]; t {
	case "Identifier": // the facility's own identifier, as on the Organization hdOrg makes
		if id := c.hdIdentifier(ns, uid, ut); id != nil {
			return t, id
		}
		return "", nil
	case "url", "uri":
		if u := hdURI(uid, ut); u != "" {
			return t, u
		}
		return "", nil
	case "BackboneElement": // MessageHeader.source or .destination
		if c.rule.to.steps[0].name == "destination" {
			t = "MessageDestination"
		}
		v := map[string]any{}
		if ns != "" {
			v["name"] = ns
		}
		if u := hdURI(uid, ut); u != "" {
			v["endpoint"] = u
		} else if t == "MessageDestination" || ns == "" {
			return "", nil // endpoint is required
		} else {
			v["endpoint"] = "urn:fhirgate:application:" + urlSafe(ns)
		}
		if t == "MessageDestination" && c.seg != nil && c.seg.Name == "MSH" {
			t = "BackboneElement"
			if f := c.seg.Field(6); f != nil {
				if fr := f.Rep(1); fr != nil && !empty(fr) {
					if ref := c.hdOrg(comp(fr, 1), comp(fr, 2), comp(fr, 3)); ref != nil {
						v["receiver"] = ref
					}
				}
			}
		}
		return "BackboneElement", v
	}
	ref := c.hdOrg(ns, uid, ut)
	if ref == nil {
		return "", nil
	}
	return "Reference", ref
}

// hdOrg makes the Organization a facility HD names: its namespace and
// universal id as identifiers.
func (c *cv) hdOrg(ns, uid, ut string) map[string]any {
	if ns != "" && uid != "" {
		return c.hdOrganization(ns, uid, ut)
	}
	ident := c.hdIdentifier(ns, uid, ut)
	if ident == nil {
		return nil
	}
	return c.mc.side("Organization", c.mc.hdOrgID(ns, uid, ut), map[string]any{"identifier": []any{ident}})
}

// joinValues joins every non-empty value of a repetition, components and
// subcomponents in order, with "--".
func joinValues(r *hl7v2.Rep) string {
	var b strings.Builder
	for _, cp := range r.Comps {
		for _, s := range cp.Subs {
			if s = strings.TrimSpace(s); s != "" {
				if b.Len() > 0 {
					b.WriteString("--")
				}
				b.WriteString(s)
			}
		}
	}
	return b.String()
}

// convJoin renders every non-empty value of a field, components and
// subcomponents in order, joined by "--" (e.g. a mother's maiden name).
func convJoin(c *cv, r *hl7v2.Rep) (string, any) {
	v := joinValues(r)
	if v == "" {
		return "", nil
	}
	return "string", v
}

const cdcRaceSystem = "urn:oid:2.16.840.1.113883.6.238"

// convRace makes the US Core race extension from every repetition of the
// field (map it from its first repetition, e.g. PID-10(1)): one
// ombCategory per CDC race code and the displays joined by "+" as text.
func convRace(c *cv, r *hl7v2.Rep) (string, any) {
	f := c.seg.Field(c.rule.from.field)
	if f == nil {
		return "", nil
	}
	var subs []any
	var text []string
	for i := range f.Reps {
		rp := &f.Reps[i]
		code, display := comp(rp, 1), comp(rp, 2)
		if code == "" || !validCode(code) {
			continue
		}
		coding := map[string]any{"system": cdcRaceSystem, "code": code}
		if display != "" {
			coding["display"] = display
			text = append(text, display)
		}
		subs = append(subs, map[string]any{"url": "ombCategory", "valueCoding": coding})
	}
	if len(subs) == 0 {
		return "", nil
	}
	if len(text) > 0 {
		subs = append(subs, map[string]any{"url": "text", "valueString": strings.Join(text, "+")})
	}
	return "Extension", map[string]any{"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race", "extension": subs}
}

// ethnicities maps HL7 table 0189 and CDC ethnicity codes to the OMB
// categories of the US Core ethnicity extension.
var ethnicities = map[string][2]string{
	"H": {"2135-2", "Hispanic or Latino"}, "2135-2": {"2135-2", "Hispanic or Latino"},
	"N": {"2186-5", "Non Hispanic or Latino"}, "2186-5": {"2186-5", "Non Hispanic or Latino"},
}

// convEthnicity makes the US Core ethnicity extension from one PID-22
// repetition; codes outside the OMB categories are kept as text only.
func convEthnicity(c *cv, r *hl7v2.Rep) (string, any) {
	code, display := comp(r, 1), comp(r, 2)
	var subs []any
	text := display
	if e, ok := ethnicities[code]; ok {
		subs = append(subs, map[string]any{"url": "ombCategory", "valueCoding": map[string]any{"system": cdcRaceSystem, "code": e[0], "display": e[1]}})
		text = e[1]
	}
	if text == "" {
		return "", nil
	}
	subs = append(subs, map[string]any{"url": "text", "valueString": text})
	return "Extension", map[string]any{"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity", "extension": subs}
}
