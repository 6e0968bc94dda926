package main

import (
	"context"
	"fmt"
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
	// listenAndServe listens on an address, not a listener: a free port is
	// picked and released first, and a parallel test may take it in
	// between. Such a start is retried on another port.
	var addr string
	var done chan error
	for attempt := 0; ; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = ln.Addr().String()
		ln.Close()
		done = make(chan error, 1)
		go func() {
			done <- listenAndServe(ctx, serveConfig{Addr: addr, ShutdownTimeout: 10 * time.Second}, h, logger)
		}()
		if err := waitListening(addr, done); err == nil {
			break
		} else if attempt == 2 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("serve did not start: %v", err)
		}
	}

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

// waitListening waits until addr accepts connections, or serve returns
// (its error), for up to 10 s.
func waitListening(addr string, done <-chan error) error {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case err := <-done:
			return fmt.Errorf("serve returned: %w", err)
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
	}
	return fmt.Errorf("nothing listens on %s after 10 s", addr)
}
