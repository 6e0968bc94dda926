package auth

import (
	"errors"
	"net/http/httptest"
	"testing"
)

func TestApplyPurposeHeader(t *testing.T) {
	tests := []struct {
		roles   []string
		header  []string
		want    string
		wantErr bool
	}{
		{nil, nil, "TREAT", false},
		{[]string{RoleClinician}, []string{"ETREAT"}, "TREAT", true},
		{[]string{RoleClinician, RoleBreakGlass}, []string{"ETREAT"}, "ETREAT", false},
		{[]string{RoleClinician, RoleBreakGlass}, []string{"btg"}, "BTG", false},
		{[]string{RoleClinician, RoleBreakGlass}, []string{"TREAT"}, "TREAT", false},
		{[]string{RoleClinician, RoleBreakGlass}, []string{"HMARKT"}, "TREAT", true},
		{[]string{RoleClinician, RoleBreakGlass}, []string{"ETREAT", "BTG"}, "TREAT", true},
	}
	for _, tt := range tests {
		s := &Subject{ID: "u", Roles: tt.roles, PurposeOfUse: PurposeTreatment}
		r := httptest.NewRequest("GET", "/", nil)
		for _, h := range tt.header {
			r.Header.Add(PurposeHeader, h)
		}
		err := ApplyPurposeHeader(s, r)
		if (err != nil) != tt.wantErr || (err != nil && !errors.Is(err, ErrPurposeNotAllowed)) {
			t.Errorf("roles %v header %v: error %v", tt.roles, tt.header, err)
		}
		if s.PurposeOfUse != tt.want {
			t.Errorf("roles %v header %v: purpose %q, want %q", tt.roles, tt.header, s.PurposeOfUse, tt.want)
		}
		if s.BreakGlass() != (tt.want == "ETREAT" || tt.want == "BTG") {
			t.Errorf("BreakGlass() = %v for %q", s.BreakGlass(), s.PurposeOfUse)
		}
	}
}
