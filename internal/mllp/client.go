package mllp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// ErrClientBroken is returned by Client.Send after an earlier Send failed
// part-way: the stream's position is unknown, so the connection is unusable.
var ErrClientBroken = errors.New("mllp: client connection unusable after an earlier error")

// Client is one MLLP connection that sends a message and waits for its
// reply, in order. It is safe for concurrent use, but calls are serialised
// (MLLP has one outstanding message per connection).
type Client struct {
	mu     sync.Mutex
	nc     net.Conn
	r      *Reader
	wbuf   []byte
	broken bool
}

// Dial connects to addr, over TLS when tlsCfg is set (the handshake is done
// before Dial returns, so certificate problems show here; with TLS 1.3 a
// server's refusal of the client certificate only shows at the first Send).
func Dial(ctx context.Context, addr string, tlsCfg *tls.Config) (*Client, error) {
	var (
		nc  net.Conn
		err error
	)
	d := &net.Dialer{KeepAlive: 30 * time.Second}
	if tlsCfg != nil {
		nc, err = (&tls.Dialer{NetDialer: d, Config: tlsCfg}).DialContext(ctx, "tcp", addr)
	} else {
		nc, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("mllp: dial %s: %w", addr, err)
	}
	return NewClient(nc), nil
}

// NewClient returns a Client over an established connection, accepting
// replies of up to DefaultMaxFrameBytes.
func NewClient(nc net.Conn) *Client {
	return &Client{nc: nc, r: NewReader(nc, DefaultMaxFrameBytes)}
}

// Send writes msg as one frame and returns the content of the next frame
// received (the reply, which the caller owns). ctx bounds the whole
// exchange; after a failure the Client is unusable and Send returns
// ErrClientBroken.
func (c *Client) Send(ctx context.Context, msg []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken {
		return nil, ErrClientBroken
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Time{}
	}
	_ = c.nc.SetDeadline(dl)
	interrupted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = c.nc.SetDeadline(time.Unix(1, 0))
		close(interrupted)
	})
	defer func() {
		if !stop() {
			<-interrupted // so a late interrupt cannot hit the next Send
		}
	}()

	c.wbuf = AppendFrame(c.wbuf[:0], msg)
	if _, err := c.nc.Write(c.wbuf); err != nil {
		c.broken = true
		return nil, c.wrap(ctx, "write", err)
	}
	if cap(c.wbuf) > keepBuffer {
		c.wbuf = nil
	}
	reply, err := c.r.Next()
	if err != nil {
		c.broken = true
		return nil, c.wrap(ctx, "read reply", err)
	}
	return append([]byte(nil), reply...), nil
}

func (c *Client) wrap(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("mllp: %s: %w", op, ctx.Err())
	}
	// The connection's deadline is ctx's: it may fire a moment before
	// ctx reports it.
	if dl, ok := ctx.Deadline(); ok && isTimeout(err) && !time.Now().Before(dl) {
		return fmt.Errorf("mllp: %s: %w", op, context.DeadlineExceeded)
	}
	return fmt.Errorf("mllp: %s: %w", op, err)
}

// LocalAddr is the client's end of the connection.
func (c *Client) LocalAddr() net.Addr { return c.nc.LocalAddr() }

// Close closes the connection.
func (c *Client) Close() error { return c.nc.Close() }
