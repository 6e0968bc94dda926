package auth

import (
	"crypto/tls"
	"slices"
)

// CertSources maps a client certificate's subject common name to the EMR
// source profiles that sender may write as.
type CertSources map[string][]string

// FromCertificate maps the verified client certificate of a mutual-TLS
// connection to an EMR sender: Subject{Kind: KindEMR, ID: "cert:"+CN,
// Roles: [emr], Sources: [CN]}. With a mapping, Sources come from it and a
// CN it does not list is refused. A certificate the TLS stack did not
// verify against the configured client CAs (no verified chains) is
// refused: the peer certificate alone proves nothing.
func FromCertificate(cs *tls.ConnectionState, mapping ...CertSources) (*Subject, error) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return nil, certErr("no verified client certificate")
	}
	leaf := cs.VerifiedChains[0][0]
	cn := leaf.Subject.CommonName
	if cn == "" {
		return nil, certErr("certificate has no subject common name")
	}
	if !safeClaim(cn) {
		return nil, certErr("certificate common name is not acceptable")
	}
	sources := []string{cn}
	var m CertSources
	for _, x := range mapping {
		if x != nil {
			if m == nil {
				m = CertSources{}
			}
			for k, v := range x {
				m[k] = v
			}
		}
	}
	if m != nil {
		s, ok := m[cn]
		if !ok || len(s) == 0 {
			return nil, certErr("certificate common name is not a configured EMR sender")
		}
		sources = dedupe(slices.Clone(s))
	}
	return &Subject{
		ID:           "cert:" + cn,
		Kind:         KindEMR,
		Roles:        []string{RoleEMR},
		Sources:      sources,
		PurposeOfUse: PurposeTreatment,
	}, nil
}
