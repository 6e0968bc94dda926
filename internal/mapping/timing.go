package mapping

import (
	"strings"

	"github.com/fhirgate/fhirgate/internal/hl7v2"
)

// Timing quantities (TQ1) as the V2-to-FHIR IG maps them. Time units
// are UCUM codes (s, min, h, d, wk, mo, a) through the time-unit code
// map; a unit it does not know gives no coded value, so a period or a
// duration is never left without its unit (Timing invariants tim-1/5).

const ucumSystem = "http://unitsofmeasure.org"

// minutesPer is the length of a UCUM time unit in minutes, for the
// Timing's offset (always minutes); months and years have none.
var minutesPer = map[string]float64{"s": 1.0 / 60, "min": 1, "h": 60, "d": 1440, "wk": 10080}

// convRPT maps a repeat pattern (RPT, e.g. TQ1-3) to a Timing: RPT-1 the
// pattern code (table 0335), RPT-5/6 the period and its unit, RPT-8 the
// event it is related to (when), RPT-9/10 the offset from that event.
func convRPT(c *cv, r *hl7v2.Rep) (string, any) {
	t := map[string]any{}
	if code := sub(r, 1, 1); code != "" && validCode(code) {
		coding := map[string]any{"code": code}
		if d, ok := tableDisplay("0335", code); ok {
			coding["system"], coding["display"] = v2SystemPrefix+"0335", d
		} else if d := sub(r, 1, 2); d != "" {
			coding["display"] = d
		}
		t["code"] = map[string]any{"coding": []any{coding}}
	}
	rep := map[string]any{}
	if p, ok := decimal(comp(r, 5)); ok {
		if u := c.mc.codemapValue("time-unit", sub(r, 6, 1)); u != "" {
			rep["period"], rep["periodUnit"] = jsonNumber(p), u
		}
	}
	if w := comp(r, 8); w != "" && validCode(w) {
		rep["when"] = []any{w}
	}
	if n, ok := decimal(comp(r, 9)); ok {
		if m, ok := wholeMinutes(n, c.mc.codemapValue("time-unit", sub(r, 10, 1))); ok {
			rep["offset"] = m
		}
	}
	if len(rep) > 0 {
		t["repeat"] = rep
	}
	if len(t) == 0 {
		return "", nil
	}
	return "Timing", t
}

// convCQTime maps a CQ of time (TQ1-6 service duration, TQ1-13
// occurrence duration): to a Duration (Quantity) with its UCUM code, or,
// for a Timing's duration and durationUnit, to the number or the unit
// code alone, each only when the unit is a known time unit.
func convCQTime(c *cv, r *hl7v2.Rep) (string, any) {
	n, ok := decimal(comp(r, 1))
	if !ok {
		if comp(r, 1) != "" {
			c.problem("102", "not a number")
		}
		return "", nil
	}
	code, text := sub(r, 2, 1), sub(r, 2, 2)
	u := c.mc.codemapValue("time-unit", code)
	switch t := c.types[0]; t {
	case "decimal":
		if u == "" {
			return "", nil
		}
		return t, jsonNumber(n)
	case "code":
		if u == "" {
			return "", nil
		}
		return t, u
	}
	q := map[string]any{"value": jsonNumber(n)}
	if text == "" {
		text = code
	}
	if text != "" {
		q["unit"] = strings.TrimSpace(text)
	}
	if u != "" {
		q["code"], q["system"] = u, ucumSystem
	}
	return c.first("Duration", "Quantity"), q
}
