package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// serverTLS builds a TLS server configuration from a certificate and key
// and, optionally, a CA bundle for client certificates. Errors name the
// settings (certVar, keyVar, caVar). clientAuth applies when a CA bundle
// is given.
func serverTLS(cert, key, ca, certVar, keyVar, caVar string, clientAuth tls.ClientAuthType) (*tls.Config, error) {
	if cert == "" && key == "" {
		if ca != "" {
			return nil, fmt.Errorf("%s needs %s and %s", caVar, certVar, keyVar)
		}
		return nil, nil
	}
	if cert == "" || key == "" {
		return nil, fmt.Errorf("%s and %s go together", certVar, keyVar)
	}
	kp, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("%s/%s: %w", certVar, keyVar, err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", caVar, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificates in %s", caVar, ca)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = clientAuth
	}
	return tc, nil
}
