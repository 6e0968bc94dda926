package mllp

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// waitLimit bounds how long a test waits for something that must happen;
// it only guards against hanging, it asserts nothing about speed.
const waitLimit = 10 * time.Second

func testMessage(controlID, body string) []byte {
	return []byte("MSH|^~\\&|SendApp|SendFac|FHIRGATE|GW|20240101120000||ADT^A01^ADT_A01|" + controlID + "|P|2.5\rEVN|A01|20240101\rPID|1||" + body + "\r")
}

func ackFor(msg []byte) []byte {
	return []byte("MSH|^~\\&|FHIRGATE|GW|SendApp|SendFac|20240101120000||ACK^A01^ACK|A" + ControlID(msg) + "|P|2.5\rMSA|AA|" + ControlID(msg) + "\r")
}

// ackControlID returns MSA-2 of an ACK.
func ackControlID(ack []byte) string {
	i := bytes.Index(ack, []byte("\rMSA|"))
	if i < 0 {
		return ""
	}
	f := strings.Split(strings.SplitN(string(ack[i+1:]), "\r", 2)[0], "|")
	if len(f) < 3 {
		return ""
	}
	return f[2]
}

var echoACK = HandlerFunc(func(_ context.Context, msg []byte, _ Peer) []byte { return ackFor(msg) })

// syncBuffer is a log sink safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type testServer struct {
	srv    *Server
	addr   string
	logs   *syncBuffer
	served chan error
}

// startServer serves h on 127.0.0.1:0 and shuts the server down at the
// end of the test.
func startServer(t *testing.T, cfg Config, h Handler) *testServer {
	t.Helper()
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := NewServer(cfg, h, logger)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{srv: srv, addr: ln.Addr().String(), logs: logs, served: make(chan error, 1)}
	go func() { ts.served <- srv.Serve(ln) }()
	t.Cleanup(func() { ts.shutdown(t) })
	return ts
}

func (ts *testServer) shutdown(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	select {
	case err := <-ts.served:
		if !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
		ts.served <- err // for a second shutdown call
	case <-time.After(waitLimit):
		t.Errorf("Serve did not return after Shutdown")
	}
}

func dial(t *testing.T, addr string, tlsCfg *tls.Config) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, err := Dial(ctx, addr, tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func send(t *testing.T, c *Client, msg []byte) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	reply, err := c.Send(ctx, msg)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	return reply
}

// rawConn dials without the Client, to write arbitrary bytes.
func rawConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(waitLimit))
	return nc
}

// expectClosed waits for the server to close nc.
func expectClosed(t *testing.T, nc net.Conn) {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(waitLimit))
	buf := make([]byte, 4096)
	for {
		_, err := nc.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection still open after %s", waitLimit)
		}
		return // EOF or reset: closed
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	var gotPeer Peer
	var mu sync.Mutex
	ts := startServer(t, Config{}, HandlerFunc(func(ctx context.Context, msg []byte, p Peer) []byte {
		mu.Lock()
		gotPeer = p
		mu.Unlock()
		return ackFor(msg)
	}))
	c := dial(t, ts.addr, nil)
	msg := testMessage("RT1", "123")
	if diff := cmp.Diff(string(ackFor(msg)), string(send(t, c, msg))); diff != "" {
		t.Errorf("reply (-want +got):\n%s", diff)
	}
	mu.Lock()
	defer mu.Unlock()
	if gotPeer.ConnID == 0 || gotPeer.Addr.String() != c.LocalAddr().String() || gotPeer.TLS != nil || gotPeer.ClientCertSubject != "" {
		t.Errorf("peer = %+v, want conn id > 0, addr %s, no TLS", gotPeer, c.LocalAddr())
	}
}

func TestListenAndServe(t *testing.T) {
	t.Parallel()
	srv, err := NewServer(Config{Addr: "127.0.0.1:0"}, echoACK, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if srv.Addr() != nil {
		t.Errorf("Addr() = %v before serving, want nil", srv.Addr())
	}
	served := make(chan error, 1)
	go func() { served <- srv.ListenAndServe() }()
	deadline := time.Now().Add(waitLimit)
	for srv.Addr() == nil {
		if time.Now().After(deadline) {
			t.Fatal("no listener")
		}
		time.Sleep(time.Millisecond)
	}
	c := dial(t, srv.Addr().String(), nil)
	if got := ackControlID(send(t, c, testMessage("LS", "x"))); got != "LS" {
		t.Errorf("ACK for %q, want LS", got)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Errorf("ListenAndServe = %v, want ErrServerClosed", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(ln); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve after Shutdown = %v, want ErrServerClosed", err)
	}
	if _, err := ln.Accept(); err == nil {
		t.Errorf("Serve after Shutdown left its listener open")
	}
}

func TestConcurrentConnections(t *testing.T) {
	t.Parallel()
	const conns, perConn = 200, 20
	var handled atomic.Int64
	ts := startServer(t, Config{}, HandlerFunc(func(ctx context.Context, msg []byte, p Peer) []byte {
		handled.Add(1)
		return ackFor(msg)
	}))
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 4*waitLimit)
			defer cancel()
			c, err := Dial(ctx, ts.addr, nil)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			for j := range perConn {
				id := fmt.Sprintf("C%d-%d", i, j)
				reply, err := c.Send(ctx, testMessage(id, "x"))
				if err != nil {
					errs <- fmt.Errorf("conn %d message %d: %w", i, j, err)
					return
				}
				if got := ackControlID(reply); got != id {
					errs <- fmt.Errorf("conn %d message %d: ACK for %q, want %q", i, j, got, id)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := handled.Load(); got != conns*perConn {
		t.Errorf("handled %d messages, want %d", got, conns*perConn)
	}
}

func TestCoalescedAndSplitWrites(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{}, echoACK)

	t.Run("many messages in one write", func(t *testing.T) {
		t.Parallel()
		nc := rawConn(t, ts.addr)
		var buf []byte
		var want []string
		for i := range 50 {
			id := fmt.Sprintf("ONE%d", i)
			buf = AppendFrame(buf, testMessage(id, "x"))
			want = append(want, id)
		}
		if _, err := nc.Write(buf); err != nil {
			t.Fatal(err)
		}
		r := NewReader(nc, 0)
		var got []string
		for range want {
			reply, err := r.Next()
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, ackControlID(reply))
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("ACKs in order (-want +got):\n%s", diff)
		}
	})
	t.Run("one message in tiny writes", func(t *testing.T) {
		t.Parallel()
		nc := rawConn(t, ts.addr)
		frame := AppendFrame(nil, testMessage("SPLIT", strings.Repeat("y", 300)))
		for i := 0; i < len(frame); i += 3 {
			if _, err := nc.Write(frame[i:min(i+3, len(frame))]); err != nil {
				t.Fatal(err)
			}
			if i%60 == 0 {
				time.Sleep(time.Millisecond) // let the pieces arrive as separate reads
			}
		}
		reply, err := NewReader(nc, 0).Next()
		if err != nil {
			t.Fatal(err)
		}
		if got := ackControlID(reply); got != "SPLIT" {
			t.Errorf("ACK for %q, want SPLIT", got)
		}
	})
}

func TestGarbageBeforeStartBlock(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{}, echoACK)
	nc := rawConn(t, ts.addr)
	payload := append([]byte("GARBAGE-WITH-PHI-SMITH\r\n"), AppendFrame(nil, testMessage("G1", "x"))...)
	if _, err := nc.Write(payload); err != nil {
		t.Fatal(err)
	}
	reply, err := NewReader(nc, 0).Next()
	if err != nil {
		t.Fatal(err)
	}
	if got := ackControlID(reply); got != "G1" {
		t.Errorf("ACK for %q, want G1", got)
	}
	nc.Close()
	ts.shutdown(t)
	logs := ts.logs.String()
	if !strings.Contains(logs, "skipped_bytes=24") {
		t.Errorf("logs do not count the 24 skipped bytes:\n%s", logs)
	}
	if strings.Contains(logs, "SMITH") {
		t.Errorf("logs contain the skipped content:\n%s", logs)
	}
}

func TestOversizeFrame(t *testing.T) {
	t.Parallel()
	const limit = 1024
	var gotSize atomic.Int64
	cfg := Config{
		MaxFrameBytes: limit,
		OnOversize: func(ctx context.Context, head []byte, size int64, p Peer) []byte {
			gotSize.Store(size)
			return []byte("MSH|^~\\&|FHIRGATE|GW|||20240101||ACK|N1|P|2.5\rMSA|AR|" + ControlID(head) + "\r")
		},
	}
	ts := startServer(t, cfg, echoACK)
	c := dial(t, ts.addr, nil)
	big := testMessage("BIG1", strings.Repeat("z", 3*limit/2))
	reply := send(t, c, big)
	if !bytes.Contains(reply, []byte("MSA|AR|BIG1\r")) {
		t.Errorf("reply to an oversize frame = %q, want an AR for BIG1", reply)
	}
	if got := gotSize.Load(); got != int64(len(big)) {
		t.Errorf("OnOversize size = %d, want %d", got, len(big))
	}
	if got := ackControlID(send(t, c, testMessage("AFTER", "x"))); got != "AFTER" {
		t.Errorf("after an oversize frame: ACK for %q, want AFTER", got)
	}
}

func TestConnectionClosed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		cfg        Config
		handler    Handler
		write      []byte
		wantReason string
	}{
		{name: "idle timeout", cfg: Config{IdleTimeout: 50 * time.Millisecond}, wantReason: "idle timeout"},
		{name: "read timeout inside a frame", cfg: Config{ReadTimeout: 50 * time.Millisecond},
			write: []byte("\x0bMSH|^~\\&|partial"), wantReason: "read timeout inside a frame"},
		{name: "unterminated frame", cfg: Config{MaxFrameBytes: 1000},
			write: append([]byte{StartBlock}, bytes.Repeat([]byte("u"), 2001)...), wantReason: "frame not terminated"},
		{name: "oversize without OnOversize", cfg: Config{MaxFrameBytes: 1000},
			write: AppendFrame(nil, bytes.Repeat([]byte("o"), 1500)), wantReason: "no reply to send"},
		{name: "handler returns nothing", handler: HandlerFunc(func(context.Context, []byte, Peer) []byte { return nil }),
			write: AppendFrame(nil, testMessage("NIL", "x")), wantReason: "no reply to send"},
		{name: "handler panics", handler: HandlerFunc(func(context.Context, []byte, Peer) []byte { panic("PID|SECRET") }),
			write: AppendFrame(nil, testMessage("PANIC", "x")), wantReason: "handler panicked"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := tt.handler
			if h == nil {
				h = echoACK
			}
			ts := startServer(t, tt.cfg, h)
			nc := rawConn(t, ts.addr)
			if tt.write != nil {
				if _, err := nc.Write(tt.write); err != nil {
					t.Fatal(err)
				}
			}
			expectClosed(t, nc)
			// The server still serves others.
			c := dial(t, ts.addr, nil)
			if tt.handler == nil {
				if got := ackControlID(send(t, c, testMessage("NEXT", "x"))); got != "NEXT" {
					t.Errorf("next connection: ACK for %q, want NEXT", got)
				}
			}
			c.Close()
			ts.shutdown(t)
			if logs := ts.logs.String(); !strings.Contains(logs, tt.wantReason) {
				t.Errorf("logs lack %q:\n%s", tt.wantReason, logs)
			} else if strings.Contains(logs, "SECRET") {
				t.Errorf("logs contain message content:\n%s", logs)
			}
		})
	}
}

func TestSlowClientDoesNotBlockOthers(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	ts := startServer(t, Config{}, HandlerFunc(func(ctx context.Context, msg []byte, p Peer) []byte {
		if ControlID(msg) == "SLOW" {
			<-release
		}
		return ackFor(msg)
	}))
	defer close(release)

	// One sender stalls inside a frame, another waits on a slow handler.
	stalled := rawConn(t, ts.addr)
	if _, err := stalled.Write([]byte("\x0bMSH|^~\\&|half a mess")); err != nil {
		t.Fatal(err)
	}
	slow := rawConn(t, ts.addr)
	if err := WriteFrame(slow, testMessage("SLOW", "x")); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		c := dial(t, ts.addr, nil)
		id := fmt.Sprintf("FAST%d", i)
		if got := ackControlID(send(t, c, testMessage(id, "x"))); got != id {
			t.Errorf("ACK for %q, want %q", got, id)
		}
	}
}

func TestWriteTimeoutCutsOffNonReader(t *testing.T) {
	t.Parallel()
	bigACK := bytes.Repeat([]byte("A"), 1<<20)
	ts := startServer(t, Config{WriteTimeout: 100 * time.Millisecond}, HandlerFunc(func(context.Context, []byte, Peer) []byte {
		return bigACK
	}))
	nc := rawConn(t, ts.addr)
	frame := AppendFrame(nil, testMessage("W", "x"))
	// Send without ever reading the replies until the server gives up.
	for range 200 {
		_ = nc.SetWriteDeadline(time.Now().Add(waitLimit))
		if _, err := nc.Write(frame); err != nil {
			break
		}
		if strings.Contains(ts.logs.String(), "write timeout") {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	deadline := time.Now().Add(waitLimit)
	for !strings.Contains(ts.logs.String(), "write timeout: peer does not read its replies") {
		if time.Now().After(deadline) {
			t.Fatalf("no write timeout logged:\n%s", ts.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMaxConns(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{MaxConns: 2}, echoACK)
	c1, c2 := dial(t, ts.addr, nil), dial(t, ts.addr, nil)
	// Both are registered once they have been served a message.
	send(t, c1, testMessage("M1", "x"))
	send(t, c2, testMessage("M2", "x"))
	extra := rawConn(t, ts.addr)
	expectClosed(t, extra)
	if logs := ts.logs.String(); !strings.Contains(logs, "MaxConns reached") {
		t.Errorf("refusal not logged:\n%s", logs)
	}
	c1.Close()
	// A slot frees up once the server has seen c1 go.
	deadline := time.Now().Add(waitLimit)
	for {
		c3 := dial(t, ts.addr, nil)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c3.Send(ctx, testMessage("M3", "x"))
		cancel()
		c3.Close()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no slot after a connection closed: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNoMessageContentInLogs(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{}, echoACK)
	c := dial(t, ts.addr, nil)
	send(t, c, testMessage("LOG1", "EVERYMAN^ADAM^A^III||19610615|M"))
	c.Close()
	ts.shutdown(t)
	logs := ts.logs.String()
	for _, phi := range []string{"EVERYMAN", "ADAM", "19610615", "PID|"} {
		if strings.Contains(logs, phi) {
			t.Errorf("logs contain %q:\n%s", phi, logs)
		}
	}
	if !strings.Contains(logs, "control_id=LOG1") {
		t.Errorf("logs lack the control id:\n%s", logs)
	}
}

func TestShutdownWaitsForInFlightHandler(t *testing.T) {
	t.Parallel()
	started, release := make(chan struct{}), make(chan struct{})
	ts := startServer(t, Config{}, HandlerFunc(func(ctx context.Context, msg []byte, p Peer) []byte {
		close(started)
		<-release
		return ackFor(msg)
	}))
	c := dial(t, ts.addr, nil)
	idle := rawConn(t, ts.addr)

	replies := make(chan []byte, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		reply, err := c.Send(ctx, testMessage("INFLIGHT", "x"))
		if err != nil {
			t.Errorf("in-flight Send: %v", err)
		}
		replies <- reply
	}()
	<-started
	shutdownDone := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		shutdownDone <- ts.srv.Shutdown(ctx)
	}()
	// The idle connection is closed at once, while the handler still runs.
	expectClosed(t, idle)
	select {
	case err := <-shutdownDone:
		t.Fatalf("Shutdown returned (%v) before the in-flight handler finished", err)
	default:
	}
	close(release)
	if got := ackControlID(<-replies); got != "INFLIGHT" {
		t.Errorf("in-flight reply ACKs %q, want INFLIGHT", got)
	}
	if err := <-shutdownDone; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if _, err := Dial(context.Background(), ts.addr, nil); err == nil {
		t.Errorf("Dial after Shutdown succeeded")
	}
}

func TestShutdownDeadlineForceCloses(t *testing.T) {
	t.Parallel()
	started := make(chan struct{})
	ts := startServer(t, Config{}, HandlerFunc(func(ctx context.Context, msg []byte, p Peer) []byte {
		close(started)
		<-ctx.Done() // only the forced shutdown ends it
		return nil
	}))
	nc := rawConn(t, ts.addr)
	if err := WriteFrame(nc, testMessage("STUCK", "x")); err != nil {
		t.Fatal(err)
	}
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want DeadlineExceeded", err)
	}
	expectClosed(t, nc)
}

func TestClientContextDeadline(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	ts := startServer(t, Config{}, HandlerFunc(func(ctx context.Context, msg []byte, p Peer) []byte {
		<-release
		return ackFor(msg)
	}))
	defer close(release)
	c := dial(t, ts.addr, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Send(ctx, testMessage("T", "x")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Send = %v, want DeadlineExceeded", err)
	}
	if _, err := c.Send(context.Background(), testMessage("T2", "x")); !errors.Is(err, ErrClientBroken) {
		t.Errorf("Send after a failure = %v, want ErrClientBroken", err)
	}
}

func TestNewServerValidation(t *testing.T) {
	t.Parallel()
	cert := newTestPKI(t).serverCert
	tests := []struct {
		name string
		cfg  Config
		want string // "" for valid
	}{
		{name: "defaults", cfg: Config{}},
		{name: "bad addr", cfg: Config{Addr: "2575"}, want: "Addr"},
		{name: "negative frame limit", cfg: Config{MaxFrameBytes: -1}, want: "MaxFrameBytes"},
		{name: "huge frame limit", cfg: Config{MaxFrameBytes: 2 << 30}, want: "MaxFrameBytes"},
		{name: "negative conns", cfg: Config{MaxConns: -5}, want: "MaxConns"},
		{name: "negative idle", cfg: Config{IdleTimeout: -time.Second}, want: "IdleTimeout"},
		{name: "negative read", cfg: Config{ReadTimeout: -time.Second}, want: "ReadTimeout"},
		{name: "negative write", cfg: Config{WriteTimeout: -time.Second}, want: "WriteTimeout"},
		{name: "TLS without certificate", cfg: Config{TLS: &tls.Config{}}, want: "no server certificate"},
		{name: "mutual TLS without CAs", cfg: Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert}}, want: "ClientCAs"},
		{name: "TLS", cfg: Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := NewServer(tt.cfg, echoACK, nil)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("NewServer: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("NewServer error = %v, want one naming %q", err, tt.want)
			case tt.want == "":
				got := s.Config()
				want := Config{Addr: DefaultAddr, TLS: tt.cfg.TLS, MaxFrameBytes: DefaultMaxFrameBytes, IdleTimeout: DefaultIdleTimeout,
					ReadTimeout: DefaultReadTimeout, WriteTimeout: DefaultWriteTimeout, MaxConns: DefaultMaxConns}
				if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b *tls.Config) bool { return a == b })); diff != "" {
					t.Errorf("config with defaults (-want +got):\n%s", diff)
				}
			}
		})
	}
	if _, err := NewServer(Config{}, nil, nil); err == nil {
		t.Errorf("NewServer with a nil handler succeeded")
	}
}

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate, generated per test.
type testPKI struct {
	pool       *x509.CertPool
	serverCert tls.Certificate
	clientCert tls.Certificate
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fhirgate test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP) tls.Certificate {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &testPKI{
		pool:       pool,
		serverCert: issue(2, "mllp.test", x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)}),
		clientCert: issue(3, "interface-engine-1", x509.ExtKeyUsageClientAuth, nil),
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	var subject atomic.Value
	h := HandlerFunc(func(ctx context.Context, msg []byte, p Peer) []byte {
		if p.TLS == nil {
			return nil
		}
		subject.Store(p.ClientCertSubject)
		return ackFor(msg)
	})

	t.Run("server TLS", func(t *testing.T) {
		t.Parallel()
		ts := startServer(t, Config{TLS: &tls.Config{Certificates: []tls.Certificate{pki.serverCert}}}, h)
		c := dial(t, ts.addr, &tls.Config{RootCAs: pki.pool})
		if got := ackControlID(send(t, c, testMessage("TLS1", "x"))); got != "TLS1" {
			t.Errorf("ACK for %q, want TLS1", got)
		}
		// A plain-TCP sender gets no reply.
		nc := rawConn(t, ts.addr)
		if err := WriteFrame(nc, testMessage("PLAIN", "x")); err != nil {
			t.Fatal(err)
		}
		expectClosed(t, nc)
	})

	t.Run("mutual TLS", func(t *testing.T) {
		t.Parallel()
		var handled atomic.Int64
		counting := HandlerFunc(func(ctx context.Context, msg []byte, p Peer) []byte {
			handled.Add(1)
			return h(ctx, msg, p)
		})
		ts := startServer(t, Config{TLS: &tls.Config{
			Certificates: []tls.Certificate{pki.serverCert},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    pki.pool,
		}}, counting)

		// Without a client certificate: refused at the handshake or at
		// the first exchange (TLS 1.3 reports it after the client's
		// handshake completes), and never handled.
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		if c, err := Dial(ctx, ts.addr, &tls.Config{RootCAs: pki.pool}); err == nil {
			if _, err := c.Send(ctx, testMessage("NOCERT", "x")); err == nil {
				t.Errorf("Send without a client certificate succeeded")
			}
			c.Close()
		}
		if n := handled.Load(); n != 0 {
			t.Errorf("%d messages handled from a client without a certificate", n)
		}

		// A certificate from another CA is refused too.
		other := newTestPKI(t)
		if c, err := Dial(ctx, ts.addr, &tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{other.clientCert}}); err == nil {
			if _, err := c.Send(ctx, testMessage("OTHERCA", "x")); err == nil {
				t.Errorf("Send with a certificate from an unknown CA succeeded")
			}
			c.Close()
		}

		c := dial(t, ts.addr, &tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{pki.clientCert}})
		if got := ackControlID(send(t, c, testMessage("MTLS", "x"))); got != "MTLS" {
			t.Errorf("ACK for %q, want MTLS", got)
		}
		if got, _ := subject.Load().(string); got != "interface-engine-1" {
			t.Errorf("Peer.ClientCertSubject = %q, want interface-engine-1", got)
		}
		if n := handled.Load(); n != 1 {
			t.Errorf("handled %d messages, want 1", n)
		}
	})
}

// TestNoGoroutineLeak is not parallel: it compares the process's goroutine
// count before and after, which other running tests would disturb
// (parallel tests are paused while sequential ones run).
func TestNoGoroutineLeak(t *testing.T) {
	settle := func() int {
		runtime.GC()
		return runtime.NumGoroutine()
	}
	before := settle()

	ts := startServer(t, Config{IdleTimeout: time.Minute}, echoACK)
	var clients []*Client
	for i := range 20 {
		c := dial(t, ts.addr, nil)
		send(t, c, testMessage(fmt.Sprintf("L%d", i), "x"))
		clients = append(clients, c)
	}
	half := rawConn(t, ts.addr)
	if _, err := half.Write([]byte("\x0bMSH|partial")); err != nil {
		t.Fatal(err)
	}
	_ = rawConn(t, ts.addr) // connected, silent
	ts.shutdown(t)
	for _, c := range clients {
		c.Close()
	}
	half.Close()

	deadline := time.Now().Add(waitLimit)
	for {
		after := settle()
		if after <= before {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("%d goroutines before, %d after Shutdown:\n%s", before, after, buf[:n])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkServer16Conns measures the transport's own ceiling: 16
// connections sending 1 KiB messages back to back to a handler that only
// builds an ACK.
func BenchmarkServer16Conns(b *testing.B) {
	srv, err := NewServer(Config{}, echoACK, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())
	msg := testMessage("BENCH", strings.Repeat("x", 900))
	var n atomic.Int64
	b.SetParallelism(max(1, 16/runtime.GOMAXPROCS(0)))
	b.SetBytes(int64(len(msg)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c, err := Dial(context.Background(), ln.Addr().String(), nil)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		for pb.Next() {
			if _, err := c.Send(context.Background(), msg); err != nil {
				b.Error(err)
				return
			}
			n.Add(1)
		}
	})
	b.ReportMetric(float64(n.Load())/b.Elapsed().Seconds(), "msgs/s")
}

// TestNoReplyKeepsConnection: a handler answering NoReply (the sender asked
// for no acknowledgement) sends nothing and the next message on the same
// connection is served.
func TestNoReplyKeepsConnection(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{}, HandlerFunc(func(_ context.Context, msg []byte, _ Peer) []byte {
		if bytes.Contains(msg, []byte("SILENT")) {
			return NoReply
		}
		return []byte("ACK " + ControlID(msg))
	}))
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var out []byte
	out = AppendFrame(out, []byte("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|SILENT|P|2.5\r"))
	out = AppendFrame(out, []byte("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|LOUD|P|2.5\r"))
	if _, err := nc.Write(out); err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(waitLimit))
	got, err := NewReader(nc, 1<<20).Next()
	if err != nil {
		t.Fatalf("no reply to the second message: %v", err)
	}
	if string(got) != "ACK LOUD" {
		t.Errorf("first reply on the connection = %q, want the second message's ACK", got)
	}
}
