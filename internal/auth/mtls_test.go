package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

func (ca *testCA) clientCert(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn, Organization: []string{"Test EMR"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// mtlsServer runs a handler behind TLS that verifies client certificates
// against ca (when given), and returns a client presenting cert.
func mtlsServer(t *testing.T, ca *testCA, h http.HandlerFunc, cert *tls.Certificate) (*httptest.Server, *http.Client) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	srv.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c := srv.Client()
	if cert != nil {
		c.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{*cert}
	}
	return srv, c
}

func TestMutualTLSSubject(t *testing.T) {
	ca := newTestCA(t, "EMR CA")
	k := mustKey(t, "EdDSA")
	for _, tc := range []struct {
		name    string
		sources CertSources
		cn      string
		want    []string
		wantErr bool
	}{
		{name: "cn as source", cn: "emr-north", want: []string{"emr-north"}},
		{name: "mapped sources", cn: "emr-north", sources: CertSources{"emr-north": {"north-adt", "north-lab"}}, want: []string{"north-adt", "north-lab"}},
		{name: "unmapped cn refused", cn: "emr-south", sources: CertSources{"emr-north": {"north-adt"}}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := mustAuth(t, Config{DevKey: k, CertSources: tc.sources})
			type result struct {
				S   *Subject
				Err string
			}
			h := func(w http.ResponseWriter, r *http.Request) {
				s, err := a.Authenticate(r)
				res := result{S: s}
				if err != nil {
					res.Err = err.Error()
					if !errors.Is(err, ErrInvalidCertificate) {
						res.Err = "unexpected error type: " + res.Err
					}
				}
				_ = json.NewEncoder(w).Encode(res)
			}
			cert := ca.clientCert(t, tc.cn)
			srv, c := mtlsServer(t, ca, h, &cert)
			resp, err := c.Get(srv.URL + "/Bundle")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var res result
			if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
				t.Fatal(err)
			}
			if tc.wantErr {
				if res.Err == "" || res.S != nil {
					t.Fatalf("want a certificate error, got %+v", res)
				}
				return
			}
			if res.Err != "" {
				t.Fatal(res.Err)
			}
			s := res.S
			if s.Kind != KindEMR || s.ID != "cert:"+tc.cn || !slices.Equal(s.Roles, []string{RoleEMR}) || !slices.Equal(s.Sources, tc.want) {
				t.Errorf("subject = %+v", s)
			}
		})
	}
}

func TestMutualTLSTokenWinsAndNoCert(t *testing.T) {
	ca := newTestCA(t, "EMR CA")
	k := mustKey(t, "EdDSA")
	a := mustAuth(t, Config{DevKey: k})
	h := func(w http.ResponseWriter, r *http.Request) {
		s, err := a.Authenticate(r)
		switch {
		case errors.Is(err, ErrNoCredentials):
			io.WriteString(w, "none")
		case err != nil:
			io.WriteString(w, "error")
		default:
			io.WriteString(w, s.ID)
		}
	}
	cert := ca.clientCert(t, "emr-north")
	srv, c := mtlsServer(t, ca, h, &cert)
	get := func(c *http.Client, tok string) string {
		req, _ := http.NewRequest("GET", srv.URL, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := get(c, mustMint(t, k, Claims{Subject: "dr-1"})); got != "dr-1" {
		t.Errorf("token with a client certificate: subject %q, want the token's", got)
	}
	if got := get(c, ""); got != "cert:emr-north" {
		t.Errorf("client certificate: subject %q", got)
	}
	// TLS without a client certificate: no credentials.
	withCerts := func(certs ...tls.Certificate) *http.Client {
		tr := c.Transport.(*http.Transport).Clone()
		tr.TLSClientConfig.Certificates = certs
		return &http.Client{Transport: tr}
	}
	if got := get(withCerts(), ""); got != "none" {
		t.Errorf("TLS without a client certificate: %q", got)
	}
	// A certificate from another CA: the Go client does not even offer it
	// (it matches none of the server's acceptable CAs), and when forced to,
	// the TLS stack refuses the handshake; it never reaches Authenticate.
	rogue := newTestCA(t, "Rogue CA").clientCert(t, "emr-north")
	if got := get(withCerts(rogue), ""); got != "none" {
		t.Errorf("certificate from an unknown CA: subject %q", got)
	}
	tr := c.Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.Certificates = nil
	tr.TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &rogue, nil }
	if resp, err := (&http.Client{Transport: tr}).Get(srv.URL); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Errorf("forced certificate from an unknown CA accepted: %q", b)
	}
}

func TestFromCertificateNeedsVerifiedChain(t *testing.T) {
	ca := newTestCA(t, "EMR CA")
	cert := ca.clientCert(t, "emr-north")
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	// Presented but not verified (e.g. RequestClientCert): refused.
	for _, cs := range []*tls.ConnectionState{nil, {}, {PeerCertificates: []*x509.Certificate{leaf}}} {
		if s, err := FromCertificate(cs); !errors.Is(err, ErrInvalidCertificate) || s != nil {
			t.Errorf("unverified certificate: %v %+v", err, s)
		}
	}
	s, err := FromCertificate(&tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf, ca.cert}}})
	if err != nil || s.ID != "cert:emr-north" || s.Kind != KindEMR {
		t.Errorf("verified: %v %+v", err, s)
	}
	// A request over TLS with only unverified peer certificates has no credentials.
	a := mustAuth(t, Config{DevKey: mustKey(t, "EdDSA")})
	r := httptest.NewRequest("GET", "/", nil)
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}
	if _, err := a.Authenticate(r); !errors.Is(err, ErrNoCredentials) {
		t.Errorf("unverified peer certificate: %v", err)
	}
}
