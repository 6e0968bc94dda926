// Package vault is fhirgate's production key provider: HashiCorp Vault's
// Transit secrets engine holds the key-encryption key, and fhirgate asks it
// for data keys (transit/datakey/plaintext), unwraps them in batches
// (transit/decrypt with batch_input) and rewraps them after rotation
// (transit/rewrap). It logs in with a token or AppRole and keeps the token
// alive with api.LifetimeWatcher, logging in again when renewal ends.
//
// It must never log or return in errors key material, tokens or secret
// ids, and it never falls back to anything when Vault is unavailable: such
// errors wrap phi.ErrUnavailable.
package vault

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/fhirgate/fhirgate/internal/phi"
)

// dataKeyBytes is the size of a data key (AES-256).
const dataKeyBytes = 32

// maxResponse bounds the size of a response body read from Vault.
const maxResponse = 64 << 20

// Provider is a phi.KeyProvider backed by Vault Transit. It is safe for
// concurrent use. Close stops its token renewal.
type Provider struct {
	cfg     Config
	client  *api.Client
	log     *slog.Logger
	timeout time.Duration // per request; 0 means none
	calls   atomic.Int64  // HTTP requests to the transit mount

	stop     context.CancelFunc
	done     chan struct{}
	stopOnce sync.Once
}

var _ phi.KeyProvider = (*Provider)(nil)

// Option configures New.
type Option func(*Provider)

// WithLogger sets the logger for token renewal and login events (default
// slog.Default()). Nothing secret is ever logged.
func WithLogger(l *slog.Logger) Option {
	return func(p *Provider) {
		if l != nil {
			p.log = l
		}
	}
}

// New connects to Vault: it logs in with AppRole (or uses the token),
// starts token renewal, and, with cfg.EnsureKey, creates the transit key if
// it is missing.
func New(ctx context.Context, cfg Config, opts ...Option) (*Provider, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	apiCfg := cfg.API
	if apiCfg == nil {
		apiCfg = api.DefaultConfig()
		if apiCfg.Error != nil {
			return nil, fmt.Errorf("vault config: %w", apiCfg.Error)
		}
		cfg.API = apiCfg
	}
	p := &Provider{cfg: cfg, log: slog.Default(), done: make(chan struct{})}
	for _, o := range opts {
		o(p)
	}
	if err := p.instrument(apiCfg); err != nil {
		return nil, err
	}
	client, err := api.NewClient(apiCfg)
	if err != nil {
		return nil, fmt.Errorf("vault: client: %w", err)
	}
	// Each call gets its own deadline (see call): the client's built-in
	// timeout cancels its context before raw response bodies are read.
	p.timeout = client.ClientTimeout()
	client.SetClientTimeout(0)
	// The Config, not the environment, decides token and namespace.
	client.ClearToken()
	client.ClearNamespace()
	if cfg.Namespace != "" {
		client.SetNamespace(cfg.Namespace)
	}
	p.client = client

	var secret *api.Secret
	if cfg.useAppRole() {
		secret, err = p.login(ctx)
		if err != nil {
			return nil, err
		}
	} else {
		client.SetToken(cfg.Token)
		secret, err = p.lookupSelf(ctx)
		if err != nil {
			return nil, err
		}
	}
	if cfg.EnsureKey {
		if err := p.ensureKey(ctx); err != nil {
			return nil, err
		}
	}
	wctx, stop := context.WithCancel(context.Background())
	p.stop = stop
	go p.keepAlive(wctx, secret)
	return p, nil
}

// Close stops token renewal. It does not revoke the token.
func (p *Provider) Close() error {
	p.stopOnce.Do(func() {
		p.stop()
		<-p.done
	})
	return nil
}

// Name implements phi.KeyProvider.
func (p *Provider) Name() string { return "vault-transit:" + p.cfg.Key }

// Calls returns the number of HTTP requests this provider has made to the
// transit mount (retries included).
func (p *Provider) Calls() int64 { return p.calls.Load() }

// NewDataKey implements phi.KeyProvider.
func (p *Provider) NewDataKey(ctx context.Context) ([]byte, string, error) {
	var out struct {
		Plaintext  string `json:"plaintext"`
		Ciphertext string `json:"ciphertext"`
	}
	if _, err := p.call(ctx, "new data key", http.MethodPut, p.transit("datakey/plaintext/"+p.cfg.Key), map[string]any{"bits": dataKeyBytes * 8}, &out); err != nil {
		return nil, "", err
	}
	dk, err := base64.StdEncoding.DecodeString(out.Plaintext)
	if err != nil || len(dk) != dataKeyBytes {
		return nil, "", fmt.Errorf("%s: new data key: Vault returned a malformed data key", p.Name())
	}
	if phi.KeyVersion(out.Ciphertext) < 1 || !strings.HasPrefix(out.Ciphertext, "vault:v") {
		return nil, "", fmt.Errorf("%s: new data key: Vault returned a malformed wrapped key", p.Name())
	}
	return dk, out.Ciphertext, nil
}

// batchItem is one item of a transit batch response.
type batchItem struct {
	Plaintext  string `json:"plaintext"`
	Ciphertext string `json:"ciphertext"`
	Error      string `json:"error"`
}

// Unwrap implements phi.KeyProvider: transit/decrypt with batch_input,
// BatchSize items per call.
func (p *Provider) Unwrap(ctx context.Context, wrapped []string) ([][]byte, error) {
	out := make([][]byte, 0, len(wrapped))
	err := p.batch(ctx, "unwrap", "decrypt/", wrapped, func(i int, it batchItem) error {
		dk, err := base64.StdEncoding.DecodeString(it.Plaintext)
		if err != nil || len(dk) != dataKeyBytes {
			clear(dk)
			return fmt.Errorf("%s: unwrap item %d: %w: not a 256-bit data key", p.Name(), i, phi.ErrUnwrap)
		}
		out = append(out, dk)
		return nil
	})
	if err != nil {
		for _, dk := range out {
			clear(dk)
		}
		return nil, err
	}
	return out, nil
}

// Rewrap implements phi.KeyProvider: transit/rewrap with batch_input.
func (p *Provider) Rewrap(ctx context.Context, wrapped []string) ([]string, error) {
	out := make([]string, 0, len(wrapped))
	err := p.batch(ctx, "rewrap", "rewrap/", wrapped, func(i int, it batchItem) error {
		if phi.KeyVersion(it.Ciphertext) < 1 {
			return fmt.Errorf("%s: rewrap item %d: Vault returned a malformed wrapped key", p.Name(), i)
		}
		out = append(out, it.Ciphertext)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// batch sends wrapped keys to transit/<op><key> in chunks of BatchSize and
// hands each result item, in order, to fn with its index in wrapped.
func (p *Provider) batch(ctx context.Context, op, endpoint string, wrapped []string, fn func(int, batchItem) error) error {
	// Reject what Vault would reject anyway without a round trip.
	for i, w := range wrapped {
		if !strings.HasPrefix(w, "vault:v") || phi.KeyVersion(w) < 1 {
			return fmt.Errorf("%s: %s item %d: %w: not a Vault wrapped key", p.Name(), op, i, phi.ErrUnwrap)
		}
	}
	path := p.transit(endpoint + p.cfg.Key)
	for start := 0; start < len(wrapped); start += p.cfg.BatchSize {
		chunk := wrapped[start:min(start+p.cfg.BatchSize, len(wrapped))]
		in := make([]map[string]string, len(chunk))
		for i, w := range chunk {
			in[i] = map[string]string{"ciphertext": w}
		}
		var out struct {
			BatchResults []batchItem `json:"batch_results"`
		}
		data, err := p.call(ctx, op, http.MethodPut, path, map[string]any{"batch_input": in}, &out)
		// Vault answers 400 (or 500) when items fail, with the per-item
		// errors in the body: report the first failing item.
		if err != nil && len(data) > 0 && json.Unmarshal(data, &out) == nil {
			for i, it := range out.BatchResults {
				if it.Error != "" {
					return fmt.Errorf("%s: %s item %d: %w: %s", p.Name(), op, start+i, phi.ErrUnwrap, it.Error)
				}
			}
		}
		if err != nil {
			return err
		}
		if len(out.BatchResults) != len(chunk) {
			return fmt.Errorf("%s: %s: Vault returned %d results for %d items", p.Name(), op, len(out.BatchResults), len(chunk))
		}
		for i, it := range out.BatchResults {
			if it.Error != "" {
				return fmt.Errorf("%s: %s item %d: %w: %s", p.Name(), op, start+i, phi.ErrUnwrap, it.Error)
			}
			if err := fn(start+i, it); err != nil {
				return err
			}
		}
	}
	return nil
}

// Rotate implements phi.KeyProvider.
func (p *Provider) Rotate(ctx context.Context) error {
	_, err := p.call(ctx, "rotate", http.MethodPut, p.transit("keys/"+p.cfg.Key+"/rotate"), map[string]any{}, nil)
	return err
}

// Info implements phi.KeyProvider.
func (p *Provider) Info(ctx context.Context) (phi.KeyInfo, error) {
	var out struct {
		LatestVersion        int `json:"latest_version"`
		MinDecryptionVersion int `json:"min_decryption_version"`
	}
	if _, err := p.call(ctx, "info", http.MethodGet, p.transit("keys/"+p.cfg.Key), nil, &out); err != nil {
		return phi.KeyInfo{}, err
	}
	if out.LatestVersion < 1 {
		return phi.KeyInfo{}, fmt.Errorf("%s: info: Vault reported latest version %d", p.Name(), out.LatestVersion)
	}
	return phi.KeyInfo{Name: p.Name(), LatestVersion: out.LatestVersion, MinDecryptionVersion: max(out.MinDecryptionVersion, 1)}, nil
}

// SetMinDecryptionVersion implements phi.KeyProvider. Vault itself refuses
// a version above the latest one.
func (p *Provider) SetMinDecryptionVersion(ctx context.Context, v int) error {
	if v < 1 {
		return fmt.Errorf("%s: min decryption version %d: must be at least 1", p.Name(), v)
	}
	_, err := p.call(ctx, "set min decryption version", http.MethodPut, p.transit("keys/"+p.cfg.Key+"/config"), map[string]any{"min_decryption_version": v}, nil)
	return err
}

// ensureKey creates the transit key (aes256-gcm96) if it does not exist,
// and checks that an existing one can make data keys.
func (p *Provider) ensureKey(ctx context.Context) error {
	var out struct {
		Type string `json:"type"`
	}
	_, err := p.call(ctx, "read key", http.MethodGet, p.transit("keys/"+p.cfg.Key), nil, &out)
	var re *api.ResponseError
	switch {
	case err == nil:
		switch out.Type {
		case "aes256-gcm96", "aes128-gcm96", "chacha20-poly1305":
			return nil
		}
		return fmt.Errorf("%s: transit key has type %q, which cannot make data keys; want aes256-gcm96", p.Name(), out.Type)
	case errors.As(err, &re) && re.StatusCode == http.StatusNotFound:
		_, err = p.call(ctx, "create key", http.MethodPut, p.transit("keys/"+p.cfg.Key), map[string]any{"type": "aes256-gcm96"}, nil)
		return err
	default:
		return err
	}
}

// transit returns the API path of a transit endpoint.
func (p *Provider) transit(rest string) string { return p.cfg.TransitMount + "/" + rest }

// call makes one request (path relative to /v1/) and decodes the response's
// "data" into out. It returns the raw "data" also on error, for batch item
// errors, and maps transport and HTTP errors onto the phi errors.
func (p *Provider) call(ctx context.Context, op, method, path string, body any, out any) (json.RawMessage, error) {
	if p.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.timeout)
		defer cancel()
	}
	var (
		resp *api.Response
		err  error
	)
	switch method {
	case http.MethodGet:
		resp, err = p.client.Logical().ReadRawWithContext(ctx, path)
	default:
		b, merr := json.Marshal(body)
		if merr != nil {
			return nil, fmt.Errorf("%s: %s: encode request: %w", p.Name(), op, merr)
		}
		resp, err = p.client.Logical().WriteRawWithContext(ctx, path, b)
	}
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	if resp != nil && resp.Body != nil {
		b, rerr := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
		resp.Body.Close()
		if rerr != nil && err == nil {
			err = rerr
		}
		if len(bytes.TrimSpace(b)) > 0 {
			if jerr := json.Unmarshal(b, &env); jerr != nil && err == nil {
				return nil, fmt.Errorf("%s: %s: malformed response from Vault", p.Name(), op)
			}
		}
	}
	if err != nil {
		return env.Data, p.mapErr(ctx, op, err)
	}
	if out != nil {
		if len(env.Data) == 0 || json.Unmarshal(env.Data, out) != nil {
			return nil, fmt.Errorf("%s: %s: malformed response from Vault", p.Name(), op)
		}
	}
	return env.Data, nil
}

// mapErr turns a Vault client error into one wrapping phi.ErrUnavailable
// (sealed, unreachable, timed out, overloaded), phi.ErrDenied (403), or a
// plain error. The api's errors carry the URL and Vault's messages, never
// the token.
func (p *Provider) mapErr(ctx context.Context, op string, err error) error {
	prefix := p.Name() + ": " + op
	var re *api.ResponseError
	if errors.As(err, &re) {
		ve := &vaultError{re: re}
		switch {
		case strings.Contains(ve.message(), "Vault is sealed"):
			return fmt.Errorf("%s: %w: Vault is sealed (HTTP %d)", prefix, phi.ErrUnavailable, re.StatusCode)
		case re.StatusCode == http.StatusForbidden || re.StatusCode == http.StatusUnauthorized:
			return fmt.Errorf("%s: %w: %w", prefix, phi.ErrDenied, ve)
		case re.StatusCode == http.StatusServiceUnavailable:
			return fmt.Errorf("%s: %w: Vault is not ready (standby or sealed): %w", prefix, phi.ErrUnavailable, ve)
		case re.StatusCode == http.StatusTooManyRequests || re.StatusCode == http.StatusBadGateway || re.StatusCode == http.StatusGatewayTimeout:
			return fmt.Errorf("%s: %w: %w", prefix, phi.ErrUnavailable, ve)
		case re.StatusCode == http.StatusNotFound:
			return fmt.Errorf("%s: not found (is the transit engine mounted at %q and the key created?): %w", prefix, p.cfg.TransitMount, ve)
		default:
			return fmt.Errorf("%s: %w", prefix, ve)
		}
	}
	var (
		certErr    *tls.CertificateVerificationError
		unknownCA  x509.UnknownAuthorityError
		hostErr    x509.HostnameError
		recordErr  tls.RecordHeaderError
		netErr     net.Error
		parentDone = ctx.Err()
	)
	switch {
	case errors.As(err, &certErr) || errors.As(err, &unknownCA) || errors.As(err, &hostErr) || errors.As(err, &recordErr):
		return fmt.Errorf("%s: TLS with Vault failed (check VAULT_ADDR, VAULT_CACERT): %w", prefix, err)
	case errors.Is(err, context.Canceled) && parentDone != nil && !errors.Is(parentDone, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", prefix, err)
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout()):
		return fmt.Errorf("%s: %w: Vault timed out: %w", prefix, phi.ErrUnavailable, err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%s: %w: connection to Vault refused: %w", prefix, phi.ErrUnavailable, err)
	default:
		return fmt.Errorf("%s: %w: cannot reach Vault: %w", prefix, phi.ErrUnavailable, err)
	}
}

// vaultError is a one-line rendering of an api.ResponseError (which it
// wraps): status and Vault's messages, without the URL.
type vaultError struct{ re *api.ResponseError }

func (e *vaultError) message() string {
	if len(e.re.Errors) == 0 {
		return http.StatusText(e.re.StatusCode)
	}
	// Vault's messages may span lines ("2 errors occurred:\n\t* ...").
	return strings.Join(strings.Fields(strings.Join(e.re.Errors, "; ")), " ")
}

func (e *vaultError) Error() string {
	return fmt.Sprintf("Vault answered HTTP %d: %s", e.re.StatusCode, e.message())
}

func (e *vaultError) Unwrap() error { return e.re }

// instrument wraps the HTTP transport to count requests to the transit
// mount.
func (p *Provider) instrument(c *api.Config) error {
	if c.HttpClient == nil {
		c.HttpClient = api.DefaultConfig().HttpClient
	}
	if _, ok := c.HttpClient.Transport.(*countingTransport); ok {
		return errors.New("vault config: Config.API is already used by another Provider; give each Provider its own api.Config")
	}
	base := c.HttpClient.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	hc := *c.HttpClient
	hc.Transport = &countingTransport{base: base, prefix: "/v1/" + p.cfg.TransitMount + "/", n: &p.calls}
	c.HttpClient = &hc
	return nil
}

// countingTransport counts requests whose path is under prefix.
type countingTransport struct {
	base   http.RoundTripper
	prefix string
	n      *atomic.Int64
}

func (t *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasPrefix(r.URL.Path, t.prefix) {
		t.n.Add(1)
	}
	return t.base.RoundTrip(r)
}

// login logs in with AppRole and installs the new token.
func (p *Provider) login(ctx context.Context) (*api.Secret, error) {
	secretID, err := p.cfg.secretID()
	if err != nil {
		return nil, err
	}
	if p.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.timeout)
		defer cancel()
	}
	path := "auth/" + p.cfg.AppRoleMount + "/login"
	s, err := p.client.Logical().WriteWithContext(ctx, path, map[string]any{
		"role_id":   p.cfg.RoleID,
		"secret_id": secretID,
	})
	var re *api.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusBadRequest {
		// Vault answers 400 "invalid role or secret ID" to bad credentials.
		return nil, fmt.Errorf("%s: AppRole login at %s: %w: %w", p.Name(), path, phi.ErrDenied, &vaultError{re: re})
	}
	if err != nil {
		return nil, p.mapErr(ctx, "AppRole login at "+path, err)
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return nil, fmt.Errorf("%s: AppRole login at %s: Vault returned no token", p.Name(), path)
	}
	p.client.SetToken(s.Auth.ClientToken)
	return s, nil
}

// lookupSelf checks the configured token and returns it as a Secret for
// the renewal watcher, or nil when it never expires or cannot be renewed.
func (p *Provider) lookupSelf(ctx context.Context) (*api.Secret, error) {
	if p.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.timeout)
		defer cancel()
	}
	s, err := p.client.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return nil, p.mapErr(ctx, "token lookup", err)
	}
	if s == nil {
		return nil, fmt.Errorf("%s: token lookup: empty response from Vault", p.Name())
	}
	ttl, _ := s.TokenTTL()
	renewable, _ := s.TokenIsRenewable()
	if ttl <= 0 || !renewable {
		if ttl > 0 {
			p.log.Warn("vault: token is not renewable; it will expire", "provider", p.Name(), "ttl", ttl.String())
		}
		return nil, nil
	}
	return &api.Secret{Auth: &api.SecretAuth{
		ClientToken:   p.cfg.Token,
		Renewable:     true,
		LeaseDuration: int(ttl / time.Second),
	}}, nil
}

// keepAlive renews the token while it can and, for AppRole, logs in again
// when renewal ends, until ctx is done.
func (p *Provider) keepAlive(ctx context.Context, secret *api.Secret) {
	defer close(p.done)
	backoff := time.Second
	for {
		if secret != nil {
			if err := p.watch(ctx, secret); ctx.Err() != nil {
				return
			} else if err != nil {
				p.log.Warn("vault: token renewal ended", "provider", p.Name(), "error", err.Error())
			}
		}
		if !p.cfg.useAppRole() {
			if secret != nil {
				p.log.Warn("vault: token can no longer be renewed and will expire; restart with a new token or use AppRole", "provider", p.Name())
			}
			<-ctx.Done()
			return
		}
		for {
			s, err := p.login(ctx)
			if err == nil {
				p.log.Info("vault: logged in again with AppRole", "provider", p.Name())
				secret, backoff = s, time.Second
				break
			}
			if ctx.Err() != nil {
				return
			}
			p.log.Warn("vault: AppRole login failed; retrying", "provider", p.Name(), "error", err.Error(), "retry_in", backoff.String())
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Minute)
		}
		// Do not hammer Vault if it hands out tokens that end at once.
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// watch runs an api.LifetimeWatcher on secret until renewal ends.
func (p *Provider) watch(ctx context.Context, secret *api.Secret) error {
	w, err := p.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: secret})
	if err != nil {
		return err
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-w.DoneCh():
			return err
		case r := <-w.RenewCh():
			ttl := 0
			if r != nil && r.Secret != nil && r.Secret.Auth != nil {
				ttl = r.Secret.Auth.LeaseDuration
			}
			p.log.Debug("vault: token renewed", "provider", p.Name(), "ttl", strconv.Itoa(ttl)+"s")
		}
	}
}
