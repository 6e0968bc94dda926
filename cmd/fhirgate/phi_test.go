package main

import (
	"strings"
	"testing"
)

func TestPHIConfigErrorsNameTheVariable(t *testing.T) {
	cases := []struct {
		env  map[string]string
		name string // the variable the error must name
	}{
		{map[string]string{"FHIRGATE_PHI": "maybe"}, "FHIRGATE_PHI"},
		{map[string]string{"FHIRGATE_KEY_PROVIDER": "hsm"}, "FHIRGATE_KEY_PROVIDER"},
		{map[string]string{"FHIRGATE_PHI_KEY_TTL": "-1m"}, "FHIRGATE_PHI_KEY_TTL"},
		{map[string]string{"FHIRGATE_PHI_KEY_CACHE": "0"}, "FHIRGATE_PHI_KEY_CACHE"},
		{map[string]string{"FHIRGATE_ALLOW_LOCAL_KEYRING": "perhaps"}, "FHIRGATE_ALLOW_LOCAL_KEYRING"},
		{map[string]string{"FHIRGATE_ENV": "staging"}, "FHIRGATE_ENV"},
		// Production refuses the local keyring unless explicitly allowed,
		// and refuses plaintext storage outright.
		{map[string]string{"FHIRGATE_ENV": "production"}, "FHIRGATE_KEY_PROVIDER=local"},
		{map[string]string{"FHIRGATE_ENV": "production", "FHIRGATE_KEY_PROVIDER": "vault", "FHIRGATE_PHI": "off"}, "FHIRGATE_PHI=off"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			_, err := phiConfigFromEnv(".data")
			if err == nil || !strings.Contains(err.Error(), c.name) {
				t.Errorf("phiConfigFromEnv with %v: error %v, want one naming %s", c.env, err, c.name)
			}
		})
	}
}

func TestPHIConfigProduction(t *testing.T) {
	t.Setenv("FHIRGATE_ENV", "production")
	t.Setenv("FHIRGATE_ALLOW_LOCAL_KEYRING", "true")
	c, err := phiConfigFromEnv("/var/lib/fhirgate")
	if err != nil {
		t.Fatalf("production with the local keyring explicitly allowed: %v", err)
	}
	if !c.Enabled || c.Provider != "local" || c.Keyring != "/var/lib/fhirgate/keys/keyring.json" {
		t.Errorf("config = %+v", c)
	}
	t.Setenv("FHIRGATE_ALLOW_LOCAL_KEYRING", "")
	t.Setenv("FHIRGATE_KEY_PROVIDER", "vault")
	if c, err := phiConfigFromEnv(".data"); err != nil || c.Provider != "vault" {
		t.Errorf("production with Vault: %+v, %v", c, err)
	}
}
