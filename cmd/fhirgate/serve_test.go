package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestGracefulShutdownFinishesInFlight cancels the serve context while a
// request is in flight: the request must complete with its full response,
// new connections must be refused, and serve must return without error.
func TestGracefulShutdownFinishesInFlight(t *testing.T) {
	t.Parallel()
	started := make(chan struct{})
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "finished")
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	// serveOn gets the listener itself: no free port is released and
	// re-bound (a parallel test could take it in between).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	done := make(chan error, 1)
	go func() {
		done <- serveOn(ctx, serveConfig{Addr: addr, ShutdownTimeout: 10 * time.Second}, ln, h, logger)
	}()

	var resp *http.Response
	var reqErr error
	got := make(chan struct{})
	go func() {
		defer close(got)
		for i := 0; i < 500; i++ { // wait for the listener (up to 10 s on a loaded machine)
			resp, reqErr = http.Get("http://" + addr + "/")
			if reqErr == nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	select {
	case <-started:
	case <-got:
		t.Fatalf("the request never reached the handler: %v", reqErr)
	case <-time.After(30 * time.Second):
		t.Fatal("the request never reached the handler")
	}
	cancel() // SIGTERM arrives while the request is in flight
	// The listener closes promptly; wait for it rather than for a fixed
	// time, which a loaded machine may not honour.
	refused := false
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			refused = true
			break
		}
		c.Close()
	}
	if !refused {
		t.Errorf("new connections were still accepted 10 s after shutdown began")
	}
	close(release)
	<-got
	if reqErr != nil {
		t.Fatalf("in-flight request failed: %v", reqErr)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "finished" {
		t.Errorf("in-flight request got %d %q, want 200 \"finished\"", resp.StatusCode, body)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve returned %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return after shutdown")
	}
}

func TestServeConfigErrorsNameTheVariable(t *testing.T) {
	cases := map[string]string{
		"FHIRGATE_ADDR":             "nonsense",
		"FHIRGATE_MIGRATE":          "sometimes",
		"FHIRGATE_SHUTDOWN_TIMEOUT": "-1s",
		"FHIRGATE_DEBUG_ADDR":       "0.0.0.0:6060",
		"FHIRGATE_TLS_CERT":         "/some/cert.pem", // without its key
		"FHIRGATE_TLS_CLIENT_CA":    "/some/ca.pem",   // without a certificate
	}
	for name, val := range cases {
		t.Run(name, func(t *testing.T) {
			t.Setenv(name, val)
			_, err := serveConfigFromEnv()
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Errorf("serveConfigFromEnv with %s=%q: error %v, want one naming %s", name, val, err, name)
			}
		})
	}
}

func TestHL7ConfigErrorsNameTheVariable(t *testing.T) {
	cases := map[string]string{
		"FHIRGATE_MLLP_ADDR":            "nonsense",
		"FHIRGATE_MLLP_MAX_FRAME_BYTES": "2048x",
		"FHIRGATE_MLLP_TLS_CERT":        "/some/cert.pem", // without its key
	}
	for name, val := range cases {
		t.Run(name, func(t *testing.T) {
			t.Setenv(name, val)
			_, err := hl7ConfigFromEnv()
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Errorf("hl7ConfigFromEnv with %s=%q: error %v, want one naming %s", name, val, err, name)
			}
		})
	}
}
