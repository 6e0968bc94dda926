package mllp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Handler handles one framed message and returns the bytes of the reply
// (the ACK) to frame and send back.
//
// It is called synchronously per connection (MLLP is request/response per
// connection, in order) and concurrently across connections. msg is only
// valid during the call: a handler that keeps it must copy it. A nil
// reply sends nothing and closes the connection (the sender will resend
// elsewhere or later); an empty non-nil reply (NoReply) sends nothing and
// keeps the connection, for senders that asked for no acknowledgement
// (HL7 enhanced mode, MSH-15 NE); ctx is cancelled when Shutdown gives up
// waiting. A panic is recovered and closes the connection.
type Handler interface {
	HandleMessage(ctx context.Context, msg []byte, peer Peer) []byte
}

// NoReply is the reply of a handler that answers nothing but keeps the
// connection open.
var NoReply = []byte{}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, msg []byte, peer Peer) []byte

// HandleMessage calls f.
func (f HandlerFunc) HandleMessage(ctx context.Context, msg []byte, peer Peer) []byte {
	return f(ctx, msg, peer)
}

// Peer is the sending side of a connection.
type Peer struct {
	Addr net.Addr
	// TLS is the connection state after the handshake; nil on plain TCP.
	TLS *tls.ConnectionState
	// ClientCertSubject is the subject common name of the client
	// certificate, set only when the certificate was verified against the
	// server's ClientCAs; "" otherwise.
	ClientCertSubject string
	// ConnID numbers the server's connections from 1, for log correlation.
	ConnID uint64
}

// Defaults of Config.
const (
	DefaultAddr         = "127.0.0.1:2575"
	DefaultIdleTimeout  = 5 * time.Minute
	DefaultReadTimeout  = 30 * time.Second
	DefaultWriteTimeout = 10 * time.Second
	DefaultMaxConns     = 256
)

// Config is the server's configuration. Zero values take the defaults.
type Config struct {
	// Addr is the TCP address ListenAndServe listens on (default
	// 127.0.0.1:2575, loopback only: listening beyond needs it explicit).
	Addr string
	// TLS, when set, makes every connection TLS; set ClientAuth to
	// tls.RequireAndVerifyClientCert (with ClientCAs) for mutual TLS.
	// nil is plain TCP.
	TLS *tls.Config `json:"-"`
	// MaxFrameBytes limits one message (default 4 MiB). A larger frame is
	// read and discarded up to its end block and answered with the reply
	// of OnOversize; without an end block within twice the limit the
	// connection is closed.
	MaxFrameBytes int
	// OnOversize builds the reply (an AR NAK) to a frame over the limit
	// from its first bytes (head, at most 64 KiB, normally holding the
	// MSH segment) and its size. When nil, or when it returns nil, the
	// connection is closed instead.
	OnOversize func(ctx context.Context, head []byte, size int64, peer Peer) []byte
	// IdleTimeout closes a connection that sends nothing between frames
	// for this long (default 5 min).
	IdleTimeout time.Duration
	// ReadTimeout bounds the reading of one frame once its start block
	// arrived, and the TLS handshake (default 30 s).
	ReadTimeout time.Duration
	// WriteTimeout bounds the writing of one reply (default 10 s): a
	// client that does not read its ACKs is cut off.
	WriteTimeout time.Duration
	// MaxConns caps concurrent connections (default 256). Beyond it a
	// connection is accepted and closed at once, so the sender sees the
	// refusal immediately instead of waiting in the listen backlog.
	MaxConns int
}

// ErrServerClosed is returned by Serve and ListenAndServe after Shutdown.
var ErrServerClosed = errors.New("mllp: server closed")

// Server is an MLLP server.
type Server struct {
	cfg    Config
	h      Handler
	log    *slog.Logger
	baseCt context.Context
	cancel context.CancelFunc
	nextID atomic.Uint64

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   bool
	wg        sync.WaitGroup // connection goroutines

	refused     atomic.Uint64 // connections refused over MaxConns since the last log line
	lastRefusal atomic.Int64  // unix nanoseconds of the last refusal log line
}

// NewServer validates cfg, applies its defaults and returns a server
// calling h for each message. logger may be nil (slog.Default).
func NewServer(cfg Config, h Handler, logger *slog.Logger) (*Server, error) {
	if h == nil {
		return nil, errors.New("mllp: nil Handler")
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	var errs []error
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		errs = append(errs, fmt.Errorf("mllp: Addr %q: %w", cfg.Addr, err))
	}
	if cfg.TLS != nil && len(cfg.TLS.Certificates) == 0 && cfg.TLS.GetCertificate == nil && cfg.TLS.GetConfigForClient == nil {
		errs = append(errs, errors.New("mllp: TLS: no server certificate (Certificates, GetCertificate or GetConfigForClient)"))
	}
	if cfg.TLS != nil && cfg.TLS.ClientAuth >= tls.VerifyClientCertIfGiven && cfg.TLS.ClientCAs == nil && cfg.TLS.GetConfigForClient == nil {
		errs = append(errs, errors.New("mllp: TLS: client certificates are verified but ClientCAs is nil"))
	}
	check := func(name string, v *int, def, maxV int) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0 || *v > maxV:
			errs = append(errs, fmt.Errorf("mllp: %s must be between 1 and %d, got %d", name, maxV, *v))
		}
	}
	check("MaxFrameBytes", &cfg.MaxFrameBytes, DefaultMaxFrameBytes, 1<<30)
	check("MaxConns", &cfg.MaxConns, DefaultMaxConns, 1<<20)
	checkDur := func(name string, v *time.Duration, def time.Duration) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			errs = append(errs, fmt.Errorf("mllp: %s must be > 0, got %s", name, *v))
		}
	}
	checkDur("IdleTimeout", &cfg.IdleTimeout, DefaultIdleTimeout)
	checkDur("ReadTimeout", &cfg.ReadTimeout, DefaultReadTimeout)
	checkDur("WriteTimeout", &cfg.WriteTimeout, DefaultWriteTimeout)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		cfg:       cfg,
		h:         h,
		log:       logger,
		baseCt:    ctx,
		cancel:    cancel,
		listeners: map[net.Listener]struct{}{},
		conns:     map[*conn]struct{}{},
	}, nil
}

// Config returns the configuration with its defaults applied.
func (s *Server) Config() Config { return s.cfg }

// ListenAndServe listens on Config.Addr and serves until Shutdown.
func (s *Server) ListenAndServe() error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("mllp: listen: %w", err)
	}
	return s.Serve(ln)
}

// Addr returns the address of a listener being served, nil when none.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ln := range s.listeners {
		return ln.Addr()
	}
	return nil
}

// Serve accepts connections on ln (a plain TCP listener: the server applies
// Config.TLS itself) until Shutdown, then returns ErrServerClosed. It
// closes ln.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		ln.Close()
	}()
	s.log.Info("mllp: listening", "addr", ln.Addr().String(), "tls", s.cfg.TLS != nil)

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) || isTemporary(err) {
				// Out of file descriptors and the like: wait, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("mllp: accept failed; retrying", "error", err, "retry_in", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("mllp: accept: %w", err)
		}
		backoff = 0
		c, ok := s.track(nc)
		if !ok {
			continue
		}
		go s.serveConn(c)
	}
}

// isTemporary reports accept errors worth retrying (EMFILE, ECONNABORTED).
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// track registers a new connection, or closes it when the server is
// shutting down or full.
func (s *Server) track(nc net.Conn) (*conn, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		nc.Close()
		return nil, false
	}
	if len(s.conns) >= s.cfg.MaxConns {
		s.refused.Add(1)
		now := time.Now().UnixNano()
		if last := s.lastRefusal.Load(); now-last >= int64(time.Second) && s.lastRefusal.CompareAndSwap(last, now) {
			s.log.Warn("mllp: connection refused: MaxConns reached", "peer", nc.RemoteAddr().String(), "max_conns", s.cfg.MaxConns, "refused", s.refused.Swap(0))
		}
		nc.Close()
		return nil, false
	}
	c := &conn{nc: nc, id: s.nextID.Add(1)}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return c, true
}

// Connection states, guarded by Server.mu.
const (
	stateIdle   = iota // waiting for or reading a frame: Shutdown may close it
	stateActive        // a handler runs or its reply is being written
	stateClosed        // closed by Shutdown
)

type conn struct {
	nc    net.Conn
	id    uint64
	state int
}

// setActive moves c to active before its handler runs; false means the
// server is shutting down and the frame must be dropped unanswered.
func (s *Server) setActive(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing || c.state == stateClosed {
		return false
	}
	c.state = stateActive
	return true
}

// setIdle moves c back to idle after its reply; false means the server is
// shutting down and c must close instead of reading another frame.
func (s *Server) setIdle(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing || c.state == stateClosed {
		return false
	}
	c.state = stateIdle
	return true
}

// Shutdown stops accepting, lets running handlers finish and their replies
// be written, and closes every connection as soon as it is not running a
// handler (a frame being received then is dropped unanswered: the sender
// resends, as MLLP senders do when no ACK comes). At ctx's end it closes
// the remaining connections, cancels the handlers' context and returns
// ctx.Err() without waiting further.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
	s.closeIdleLocked()
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.state = stateClosed
			c.nc.Close()
		}
		s.mu.Unlock()
		s.cancel()
		return fmt.Errorf("mllp: shutdown: %w", ctx.Err())
	}
}

func (s *Server) closeIdleLocked() {
	for c := range s.conns {
		if c.state == stateIdle {
			c.state = stateClosed
			c.nc.Close()
		}
	}
}

func (s *Server) serveConn(c *conn) {
	start := time.Now()
	peer := Peer{Addr: c.nc.RemoteAddr(), ConnID: c.id}
	log := s.log.With("conn", c.id, "peer", peer.Addr.String())
	var (
		frames, bytesIn, bytesOut uint64
		fr                        *Reader
		reason                    = "closed by peer"
	)
	defer func() {
		c.nc.Close()
		attrs := []any{"reason", reason, "messages", frames, "bytes_in", bytesIn, "bytes_out", bytesOut, "duration", time.Since(start).Round(time.Millisecond)}
		if fr != nil {
			st := fr.Stats()
			attrs = append(attrs, "skipped_bytes", st.Skipped, "restarts", st.Restarts, "missing_cr", st.MissingCR)
		}
		log.Info("mllp: connection closed", attrs...)
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.wg.Done()
	}()

	nc := c.nc
	if s.cfg.TLS != nil {
		tc := tls.Server(c.nc, s.cfg.TLS)
		hctx, cancel := context.WithTimeout(s.baseCt, s.cfg.ReadTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			reason = "TLS handshake failed"
			log.Warn("mllp: TLS handshake failed", "error", err)
			return
		}
		st := tc.ConnectionState()
		peer.TLS = &st
		if len(st.VerifiedChains) > 0 && len(st.PeerCertificates) > 0 {
			peer.ClientCertSubject = st.PeerCertificates[0].Subject.CommonName
		}
		nc = tc
	}
	log.Info("mllp: connection opened", "tls", peer.TLS != nil, "client_cert_subject", peer.ClientCertSubject)

	fr = NewReader(nc, s.cfg.MaxFrameBytes)
	fr.OnStart = func() { _ = nc.SetReadDeadline(time.Now().Add(s.cfg.ReadTimeout)) }
	var wbuf []byte
	warnedSkip := false
	for {
		_ = nc.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		msg, err := fr.Next()
		if st := fr.Stats(); st.Skipped > 0 && !warnedSkip {
			warnedSkip = true
			log.Warn("mllp: bytes outside frames skipped", "skipped_bytes", st.Skipped, "restarts", st.Restarts)
		}
		var reply []byte
		var oversize *OversizeError
		switch {
		case err == nil:
			frames++
			bytesIn += uint64(len(msg))
			if !s.setActive(c) {
				reason = "shutdown"
				return
			}
			t0 := time.Now()
			var ok bool
			reply, ok = s.handle(log, msg, peer)
			if !ok {
				reason = "handler panicked"
				return
			}
			log.Debug("mllp: message handled", "control_id", ControlID(msg), "bytes", len(msg), "reply_bytes", len(reply), "duration", time.Since(t0))
		case errors.As(err, &oversize):
			frames++
			bytesIn += uint64(oversize.Size)
			log.Warn("mllp: frame over MaxFrameBytes discarded", "control_id", ControlID(oversize.Head), "bytes", oversize.Size, "max_frame_bytes", oversize.Limit)
			if !s.setActive(c) {
				reason = "shutdown"
				return
			}
			if s.cfg.OnOversize != nil {
				reply = s.cfg.OnOversize(s.baseCt, oversize.Head, oversize.Size, peer)
			}
		default:
			reason = s.readErrorReason(c, err, fr)
			return
		}
		if reply == nil {
			reason = "no reply to send"
			return
		}
		// An empty reply (NoReply): the sender asked for no acknowledgement.
		if len(reply) > 0 {
			wbuf = AppendFrame(wbuf[:0], reply)
			_ = nc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
			if _, err := nc.Write(wbuf); err != nil {
				if isTimeout(err) {
					reason = "write timeout: peer does not read its replies"
				} else {
					reason = "write failed"
				}
				return
			}
			bytesOut += uint64(len(reply))
			if cap(wbuf) > keepBuffer {
				wbuf = nil
			}
		}
		if !s.setIdle(c) {
			reason = "shutdown"
			return
		}
	}
}

// handle calls the handler, turning a panic into a closed connection.
func (s *Server) handle(log *slog.Logger, msg []byte, peer Peer) (reply []byte, ok bool) {
	defer func() {
		if p := recover(); p != nil {
			// The panic value may quote the message: log only its type.
			log.Error("mllp: handler panicked", "control_id", ControlID(msg), "panic_type", fmt.Sprintf("%T", p))
			ok = false
		}
	}()
	return s.h.HandleMessage(s.baseCt, msg, peer), true
}

func (s *Server) readErrorReason(c *conn, err error, fr *Reader) string {
	s.mu.Lock()
	closed := c.state == stateClosed
	s.mu.Unlock()
	switch {
	case closed:
		return "shutdown"
	case errors.Is(err, io.EOF):
		return "closed by peer"
	case errors.Is(err, ErrTruncated):
		return "closed by peer inside a frame"
	case errors.Is(err, ErrUnterminated):
		return "frame not terminated within twice MaxFrameBytes"
	case isTimeout(err):
		// OnStart moved the deadline to ReadTimeout if a frame had begun.
		if fr.inFrame() {
			return "read timeout inside a frame"
		}
		return "idle timeout"
	default:
		return "read failed: " + err.Error()
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}
