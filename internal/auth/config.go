package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
)

// ConfigFromEnv reads the authentication configuration:
//
//	FHIRGATE_AUTH                  on (default) | off (refused in production)
//	FHIRGATE_ENV                   development (default) | production
//	FHIRGATE_JWT_ISSUER            required "iss" (with a JWKS URL or keys file)
//	FHIRGATE_JWT_AUDIENCE          required "aud" member (default fhirgate)
//	FHIRGATE_JWKS_URL              the identity provider's JWKS (https)
//	FHIRGATE_JWT_KEYS_FILE         static verification keys (JWKS JSON or PEM)
//	FHIRGATE_JWT_ALGS              comma-separated algorithms (default RS256,ES256,EdDSA)
//	FHIRGATE_JWT_HMAC_SECRET_FILE  static secret for HS256/384/512 (only if listed in FHIRGATE_JWT_ALGS)
//	FHIRGATE_JWT_LEEWAY            clock leeway for exp/nbf/iat (default 60s, at most 10m)
//	FHIRGATE_MTLS_SOURCES_FILE     JSON {"<client cert CN>": ["source", ...]}
//	FHIRGATE_DATA_DIR              where the dev key lives (default .data)
//
// With neither FHIRGATE_JWKS_URL nor FHIRGATE_JWT_KEYS_FILE (and not in
// production) the dev key <data dir>/keys/dev-jwt.json is trusted, issuer
// DevIssuer. Errors name the variable at fault.
func ConfigFromEnv() (Config, error) {
	var c Config
	switch v := os.Getenv("FHIRGATE_AUTH"); v {
	case "", "on":
	case "off":
		c.Disabled = true
	default:
		return c, fmt.Errorf("FHIRGATE_AUTH=%q: want on or off", v)
	}
	switch v := os.Getenv("FHIRGATE_ENV"); v {
	case "", "development":
	case "production":
		c.Production = true
	default:
		return c, fmt.Errorf("FHIRGATE_ENV=%q: want development or production", v)
	}
	if c.Disabled && c.Production {
		return c, c.productionRefusal()
	}
	c.Issuer = os.Getenv("FHIRGATE_JWT_ISSUER")
	c.Audience = os.Getenv("FHIRGATE_JWT_AUDIENCE")
	if c.Audience == "" {
		c.Audience = DefaultAudience
	}
	if v := os.Getenv("FHIRGATE_JWKS_URL"); v != "" {
		if err := checkJWKSURL(v); err != nil {
			return c, err
		}
		c.JWKSURL = v
	}
	c.KeysFile = os.Getenv("FHIRGATE_JWT_KEYS_FILE")
	if c.JWKSURL != "" && c.KeysFile != "" {
		return c, errors.New("FHIRGATE_JWKS_URL and FHIRGATE_JWT_KEYS_FILE are both set: configure one")
	}
	if (c.JWKSURL != "" || c.KeysFile != "") && c.Issuer == "" {
		return c, errors.New("FHIRGATE_JWT_ISSUER: required with FHIRGATE_JWKS_URL or FHIRGATE_JWT_KEYS_FILE")
	}
	if v := os.Getenv("FHIRGATE_JWT_ALGS"); v != "" {
		for _, a := range strings.Split(v, ",") {
			if a = strings.TrimSpace(a); a != "" {
				c.Algorithms = append(c.Algorithms, a)
			}
		}
		if len(c.Algorithms) == 0 {
			return c, fmt.Errorf("FHIRGATE_JWT_ALGS=%q: want a comma-separated list such as RS256,ES256", v)
		}
		for _, a := range c.Algorithms {
			if strings.EqualFold(a, "none") {
				return c, errors.New(`FHIRGATE_JWT_ALGS: "none" is never allowed`)
			}
		}
	}
	if p := os.Getenv("FHIRGATE_JWT_HMAC_SECRET_FILE"); p != "" {
		b, err := readSmallFile(p, 4096)
		if err != nil {
			return c, fmt.Errorf("FHIRGATE_JWT_HMAC_SECRET_FILE=%s: %w", p, err)
		}
		if fi, err := os.Stat(p); err == nil && fi.Mode().Perm()&0o077 != 0 {
			return c, fmt.Errorf("FHIRGATE_JWT_HMAC_SECRET_FILE=%s: mode %04o lets group or others read it; it must be 0600", p, fi.Mode().Perm())
		}
		c.HMACSecret = []byte(strings.TrimSpace(string(b)))
		if len(c.HMACSecret) < minHMACSecret {
			return c, fmt.Errorf("FHIRGATE_JWT_HMAC_SECRET_FILE=%s: the secret must be at least %d bytes", p, minHMACSecret)
		}
	}
	if v := os.Getenv("FHIRGATE_JWT_LEEWAY"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > 10*time.Minute {
			return c, fmt.Errorf("FHIRGATE_JWT_LEEWAY=%q: want a duration from 0s to 10m, such as 60s", v)
		}
		if d == 0 {
			d = -1 // Config: negative means none
		}
		c.Leeway = d
	}
	if p := os.Getenv("FHIRGATE_MTLS_SOURCES_FILE"); p != "" {
		b, err := readSmallFile(p, 1<<20)
		if err != nil {
			return c, fmt.Errorf("FHIRGATE_MTLS_SOURCES_FILE=%s: %w", p, err)
		}
		var m CertSources
		if err := json.Unmarshal(b, &m); err != nil || m == nil {
			return c, fmt.Errorf(`FHIRGATE_MTLS_SOURCES_FILE=%s: want a JSON object {"<certificate CN>": ["source", ...]}`, p)
		}
		c.CertSources = m
	}
	c.DataDir = os.Getenv("FHIRGATE_DATA_DIR")
	if c.DataDir == "" {
		c.DataDir = ".data"
	}
	if err := c.productionRefusal(); err != nil {
		return c, err
	}
	return c, nil
}

// productionRefusal is what production (FHIRGATE_ENV=production) refuses
// of a configuration: authentication off, or no token keys but the dev
// key. ConfigFromEnv and NewAuthenticator both apply it.
func (c Config) productionRefusal() error {
	switch {
	case !c.Production:
		return nil
	case c.Disabled:
		return errors.New("FHIRGATE_AUTH=off is refused with FHIRGATE_ENV=production")
	case c.JWKSURL == "" && c.KeysFile == "" && c.StaticKeys == nil:
		return errors.New("FHIRGATE_ENV=production: set FHIRGATE_JWKS_URL or FHIRGATE_JWT_KEYS_FILE (the dev token key is not trusted in production)")
	}
	return nil
}

// checkJWKSURL: an absolute https URL, or http to a loopback address.
func checkJWKSURL(v string) error {
	u, err := url.Parse(v)
	if err != nil || u.Host == "" {
		return fmt.Errorf("FHIRGATE_JWKS_URL=%q: want an absolute https URL", v)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		h := u.Hostname()
		if ip := net.ParseIP(h); h == "localhost" || (ip != nil && ip.IsLoopback()) {
			return nil
		}
	}
	return fmt.Errorf("FHIRGATE_JWKS_URL=%q: want https (plain http only to a loopback address)", v)
}
