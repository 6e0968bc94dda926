package auth

import (
	"context"
	"testing"
)

// BenchmarkVerify measures token verification: "cached" is the usual case
// (a client reusing its token), "uncached" a fresh token every time.
func BenchmarkVerify(b *testing.B) {
	for _, alg := range []string{"EdDSA", "RS256", "ES256"} {
		k := mustKey(b, alg)
		a := mustAuth(b, Config{StaticKeys: k.JWKS(), Issuer: DevIssuer})
		tok := mustMint(b, k, Claims{Subject: "u", Roles: []string{RoleClinician}, Organization: "o", CareTeam: []string{"p1", "p2"}})
		b.Run(alg+"/cached", func(b *testing.B) {
			for b.Loop() {
				if _, err := a.Verify(context.Background(), tok); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(alg+"/uncached", func(b *testing.B) {
			for b.Loop() {
				a.cache = tokenCache{}
				if _, err := a.Verify(context.Background(), tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
