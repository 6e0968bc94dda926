package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/fhirgate/fhirgate/internal/api"
	"github.com/fhirgate/fhirgate/internal/audit"
	"github.com/fhirgate/fhirgate/internal/hl7v2"
	"github.com/fhirgate/fhirgate/internal/ingest"
	"github.com/fhirgate/fhirgate/internal/mapping"
	"github.com/fhirgate/fhirgate/internal/mllp"
)

// hl7Config is the HL7 v2 intake configuration.
type hl7Config struct {
	MLLPAddr     string // FHIRGATE_MLLP_ADDR: "off" disables the listener
	TLSCert      string // FHIRGATE_MLLP_TLS_CERT
	TLSKey       string `json:"-"` // FHIRGATE_MLLP_TLS_KEY
	ClientCA     string // FHIRGATE_MLLP_CLIENT_CA: require client certificates signed by it
	Mappings     string // FHIRGATE_MAPPINGS
	MaxFrameSize int    // FHIRGATE_MLLP_MAX_FRAME_BYTES
}

func hl7ConfigFromEnv() (hl7Config, error) {
	c := hl7Config{MLLPAddr: "127.0.0.1:2575", Mappings: "mappings", MaxFrameSize: 4 << 20,
		TLSCert: os.Getenv("FHIRGATE_MLLP_TLS_CERT"), TLSKey: os.Getenv("FHIRGATE_MLLP_TLS_KEY"),
		ClientCA: os.Getenv("FHIRGATE_MLLP_CLIENT_CA")}
	if v := os.Getenv("FHIRGATE_MLLP_ADDR"); v != "" {
		if v != "off" {
			if _, _, err := net.SplitHostPort(v); err != nil {
				return c, fmt.Errorf("FHIRGATE_MLLP_ADDR=%q: want host:port or off", v)
			}
		}
		c.MLLPAddr = v
	}
	if v := os.Getenv("FHIRGATE_MAPPINGS"); v != "" {
		c.Mappings = v
	}
	if v := os.Getenv("FHIRGATE_MLLP_MAX_FRAME_BYTES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1024 {
			return c, fmt.Errorf("FHIRGATE_MLLP_MAX_FRAME_BYTES=%q: want an integer of at least 1024", v)
		}
		c.MaxFrameSize = n
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return c, errors.New("FHIRGATE_MLLP_TLS_CERT and FHIRGATE_MLLP_TLS_KEY must be set together")
	}
	if c.ClientCA != "" && c.TLSCert == "" {
		return c, errors.New("FHIRGATE_MLLP_CLIENT_CA needs FHIRGATE_MLLP_TLS_CERT and FHIRGATE_MLLP_TLS_KEY")
	}
	return c, nil
}

func (c hl7Config) tlsConfig() (*tls.Config, error) {
	if c.TLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("FHIRGATE_MLLP_TLS_CERT/FHIRGATE_MLLP_TLS_KEY: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.ClientCA != "" {
		pem, err := os.ReadFile(c.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("FHIRGATE_MLLP_CLIENT_CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("FHIRGATE_MLLP_CLIENT_CA: no PEM certificates in %s", c.ClientCA)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// reloadMappingsOnHUP reloads the mappings on SIGHUP; a mapping set that
// fails to load is refused and the running one kept.
func reloadMappingsOnHUP(ctx context.Context, dir string, use func(*mapping.Engine), logger *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				eng, err := mapping.Load(dir)
				if err != nil {
					logger.Error("mapping reload refused; keeping the running mappings", "dir", dir, "error", err.Error())
					continue
				}
				use(eng)
				logger.Info("mappings reloaded", "version", eng.Version())
			}
		}
	}()
}

// mllpSubject names an MLLP sender for the audit log: its verified client
// certificate, else its address.
func mllpSubject(p mllp.Peer) string {
	if p.ClientCertSubject != "" {
		return "cert:" + p.ClientCertSubject
	}
	return "mllp:" + peerHost(p)
}

func peerHost(p mllp.Peer) string {
	if p.Addr == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return p.Addr.String()
	}
	return host
}

// startMLLP serves HL7 v2 over MLLP until ctx ends, then drains it.
func startMLLP(ctx context.Context, c hl7Config, tenant string, h *ingest.HL7, log api.AuditLog, logger *slog.Logger) (stop func(), err error) {
	tc, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	handler := mllp.HandlerFunc(func(ctx context.Context, msg []byte, peer mllp.Peer) []byte {
		ack, outcome := h.HandleOutcome(ctx, tenant, msg)
		if log != nil {
			// Every message is audited before its ACK leaves: who sent it
			// (the client certificate, else the peer address) and the
			// outcome. If the record cannot be committed the sender gets a
			// NAK and retries; the retry is answered from the archive.
			rec := audit.Record{RequestID: ingest.NewID(), Tenant: tenant, SubjectID: mllpSubject(peer), SubjectKind: "emr",
				IP: peerHost(peer), Interaction: audit.InteractionHL7, Action: audit.ActionCreate, Outcome: outcome}
			if err := log.Append(context.WithoutCancel(ctx), rec); err != nil {
				logger.Error("audit record not committed: NAK sent", "conn", peer.ConnID, "cause", err.Error())
				perr := &hl7v2.ParseError{Segment: "MSH", Reason: "the access log is unavailable; send again later"}
				return hl7v2.NAKForUnparseable(msg, perr, ingest.NewID(), time.Now().UTC())
			}
		}
		if ack != nil {
			return ack
		}
		return mllp.NoReply // MSH-15 asked for no acknowledgement
	})
	srv, err := mllp.NewServer(mllp.Config{Addr: c.MLLPAddr, TLS: tc, MaxFrameBytes: c.MaxFrameSize,
		OnOversize: func(_ context.Context, head []byte, size int64, _ mllp.Peer) []byte {
			perr := &hl7v2.ParseError{Segment: "MSH", Reason: fmt.Sprintf("message of %d bytes exceeds FHIRGATE_MLLP_MAX_FRAME_BYTES", size)}
			return hl7v2.NAKForUnparseable(head, perr, ingest.NewID(), time.Now().UTC())
		}}, handler, logger)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", c.MLLPAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on FHIRGATE_MLLP_ADDR %s: %w", c.MLLPAddr, err)
	}
	mode := "MLLP"
	if tc != nil {
		mode = "MLLP over TLS"
		if tc.ClientAuth == tls.RequireAndVerifyClientCert {
			mode += " with client certificates"
		}
	}
	logger.Info("hl7v2 listening", "addr", ln.Addr().String(), "transport", mode)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, mllp.ErrServerClosed) {
			logger.Error("mllp listener stopped", "error", err.Error())
		}
	}()
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-done
	}, nil
}
