package hl7v2

import (
	"testing"
	"time"
)

func TestParseTS(t *testing.T) {
	t.Parallel()
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Skipf("no tzdata: %v", err)
	}
	tests := []struct {
		in      string
		loc     *time.Location
		want    string // RFC 3339 with nanoseconds
		prec    Precision
		fhir    string
		invalid bool
	}{
		{in: "2024", want: "2024-01-01T00:00:00Z", prec: PrecisionYear, fhir: "2024"},
		{in: "202402", want: "2024-02-01T00:00:00Z", prec: PrecisionMonth, fhir: "2024-02"},
		{in: "20240229", want: "2024-02-29T00:00:00Z", prec: PrecisionDay, fhir: "2024-02-29"},
		{in: "2024022913", want: "2024-02-29T13:00:00Z", prec: PrecisionHour, fhir: "2024-02-29T13:00:00Z"},
		{in: "202402291305", want: "2024-02-29T13:05:00Z", prec: PrecisionMinute, fhir: "2024-02-29T13:05:00Z"},
		{in: "20240229130507", want: "2024-02-29T13:05:07Z", prec: PrecisionSecond, fhir: "2024-02-29T13:05:07Z"},
		{in: "20240229130507.1", want: "2024-02-29T13:05:07.1Z", prec: PrecisionFraction, fhir: "2024-02-29T13:05:07.1Z"},
		{in: "20240229130507.1234", want: "2024-02-29T13:05:07.1234Z", prec: PrecisionFraction, fhir: "2024-02-29T13:05:07.1234Z"},
		{in: "20240229130507.1000", want: "2024-02-29T13:05:07.1Z", prec: PrecisionFraction, fhir: "2024-02-29T13:05:07.1Z"},
		{in: "20240229130507.0", want: "2024-02-29T13:05:07Z", prec: PrecisionFraction, fhir: "2024-02-29T13:05:07.0Z"},
		{in: "198908181126+0215", want: "1989-08-18T11:26:00+02:15", prec: PrecisionMinute, fhir: "1989-08-18T11:26:00+02:15"},
		{in: "20210817151943.4+0200", want: "2021-08-17T15:19:43.4+02:00", prec: PrecisionFraction, fhir: "2021-08-17T15:19:43.4+02:00"},
		{in: "20150818060605-0500", want: "2015-08-18T06:06:05-05:00", prec: PrecisionSecond, fhir: "2015-08-18T06:06:05-05:00"},
		{in: "20240101-0000", want: "2024-01-01T00:00:00Z", prec: PrecisionDay, fhir: "2024-01-01"},
		{in: "20240701120000", loc: ny, want: "2024-07-01T12:00:00-04:00", prec: PrecisionSecond, fhir: "2024-07-01T12:00:00-04:00"},
		{in: "20240101120000", loc: ny, want: "2024-01-01T12:00:00-05:00", prec: PrecisionSecond, fhir: "2024-01-01T12:00:00-05:00"},
		{in: " 20150202 ", want: "2015-02-02T00:00:00Z", prec: PrecisionDay, fhir: "2015-02-02"},
		{in: "20000229", want: "2000-02-29T00:00:00Z", prec: PrecisionDay, fhir: "2000-02-29"},
		{in: "20240131235959", want: "2024-01-31T23:59:59Z", prec: PrecisionSecond, fhir: "2024-01-31T23:59:59Z"},
		{in: "20230229", invalid: true},
		{in: "19000229", invalid: true},
		{in: "20240230", invalid: true},
		{in: "20240431", invalid: true},
		{in: "20241301", invalid: true},
		{in: "20240001", invalid: true},
		{in: "20240100", invalid: true},
		{in: "2024010124", invalid: true},
		{in: "202401011260", invalid: true},
		{in: "20240101125960", invalid: true},
		{in: "", invalid: true},
		{in: "24", invalid: true},
		{in: "20241", invalid: true},
		{in: "2024010112345", invalid: true},
		{in: "202401011234567", invalid: true},
		{in: "2024-01-01", invalid: true},
		{in: "20240101T1200", invalid: true},
		{in: "202401011200.5", invalid: true},
		{in: "20240101120000.", invalid: true},
		{in: "20240101120000.12345", invalid: true},
		{in: "20240101120000.1a", invalid: true},
		{in: "20240101120000+02", invalid: true},
		{in: "20240101120000+0260", invalid: true},
		{in: "20240101120000+1500", invalid: true},
		{in: "20240101120000+02:00", invalid: true},
		{in: "20240101120000+0200+0100", invalid: true},
		{in: "+0200", invalid: true},
		{in: "２０２４", invalid: true},
	}
	for _, tc := range tests {
		got, prec, err := ParseTS(tc.in, tc.loc)
		if tc.invalid {
			if err == nil {
				t.Errorf("ParseTS(%q) = %v, %v; want an error", tc.in, got, prec)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseTS(%q): %v", tc.in, err)
			continue
		}
		if s := got.Format(time.RFC3339Nano); s != tc.want || prec != tc.prec {
			t.Errorf("ParseTS(%q) = %s, %v; want %s, %v", tc.in, s, prec, tc.want, tc.prec)
		}
		if f := FormatFHIR(got, prec); f != tc.fhir {
			t.Errorf("FormatFHIR(ParseTS(%q)) = %s, want %s", tc.in, f, tc.fhir)
		}
	}
	if PrecisionMinute.String() != "minute" || Precision(0).String() != "Precision(0)" {
		t.Error("Precision.String")
	}
}
