package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// HTTP/2 upstream connections. Each server's connection pool (connPool)
// keeps a few HTTP/2 connections that carry many requests at once, each
// its own stream: a request takes a stream on the first connection with a
// free one (the server's SETTINGS_MAX_CONCURRENT_STREAMS says how many),
// and a new connection is dialled only when every connection is full.
// Concurrent requests that find none free wait for one dial together
// rather than each dialling its own.
//
// The frames, flow control and header compression are x/net/http2's
// client (a Transport whose connection pool is this one, over connections
// edged dials itself, TLS and session resumption included); edged decides
// which connection, when to dial, and what happens to a request x/net
// could not send. x/net sends a request again by itself, on another
// connection to the same server, when the server refused its stream
// (REFUSED_STREAM) or went away (GOAWAY) before the stream began: the
// server has then done nothing with it. That happens once on the same
// server; after that the handler takes over (errRetryElsewhere), and may
// send it to another server.

// h2Pool is one server's HTTP/2 connections; it is the x/net Transport's
// ClientConnPool, so x/net asks it for a connection for every request and
// tells it when one dies or is told to go away.
type h2Pool struct {
	t    *http2.Transport
	dial func(context.Context) (net.Conn, error)
	addr string
	tls  bool

	mu      sync.Mutex
	conns   []*http2.ClientConn // live, oldest first
	dialing *h2Dial             // a dial in progress that waiters share
}

// h2Dial is one dial that every request waiting for a connection shares.
type h2Dial struct {
	done chan struct{}
	err  error
}

// h2MaxHeaderBytes bounds an HTTP/2 response's header list as maxHeadSize
// bounds an HTTP/1.1 head.
const h2MaxHeaderBytes = maxHeadSize

func newH2Pool(p *connPool, idle time.Duration) *h2Pool {
	hp := &h2Pool{dial: p.dial, addr: p.key.addr, tls: p.isTLS}
	hp.t = &http2.Transport{
		ConnPool: hp,
		// h2c: the URL's scheme is "http" on a cleartext connection.
		AllowHTTP: true,
		// Accept-Encoding is the client's to ask: x/net must not add
		// gzip of its own and unpack the answer.
		DisableCompression: true,
		IdleConnTimeout:    idle,
		MaxHeaderListSize:  h2MaxHeaderBytes,
		// No PINGs of edged's own on quiet connections: gRPC servers
		// count pings without data as abuse (grpc-go answers GOAWAY
		// "too_many_pings" after three within five minutes), which would
		// end a quiet long-lived stream. A server that dies closes its
		// connections; one that hangs runs into response_header_timeout.
	}
	return hp
}

// errRetryElsewhere ends x/net's own resending of a request after one
// try on a new stream of the same server: the server refused the stream
// or went away before it began, so the handler may send the request to
// another server (the request's body can still be replayed: teeBody).
type errRetryElsewhere struct{ cause string }

func (e *errRetryElsewhere) Error() string {
	return "the server refused the stream or went away before it began, twice (" + e.cause + ")"
}

// attemptKey finds an attempt's h2Attempt in its request's context.
type attemptKey struct{}

// h2Attempt is one attempt of a request on one server, as x/net's calls
// to the pool see it.
type h2Attempt struct {
	conns int // connections x/net asked for: more than one means it resent the request
}

// GetClientConn returns a connection with a stream reserved for req: the
// oldest with room, or a new one.
func (hp *h2Pool) GetClientConn(req *http.Request, _ string) (*http2.ClientConn, error) {
	ctx := req.Context()
	if a, _ := ctx.Value(attemptKey{}).(*h2Attempt); a != nil {
		if a.conns++; a.conns > 2 {
			return nil, &errRetryElsewhere{cause: "sent twice on " + hp.addr}
		}
	}
	for {
		hp.mu.Lock()
		for _, cc := range hp.conns {
			if cc.ReserveNewRequest() {
				hp.mu.Unlock()
				return cc, nil
			}
		}
		d := hp.dialing
		if d == nil {
			d = &h2Dial{done: make(chan struct{})}
			hp.dialing = d
			go hp.dialNew(d)
		}
		hp.mu.Unlock()
		select {
		case <-d.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if d.err != nil {
			return nil, d.err
		}
	}
}

// dialNew dials a connection for d's waiters. It does not belong to any
// one request, so a client that leaves does not fail the others' dial;
// connect_timeout bounds it.
func (hp *h2Pool) dialNew(d *h2Dial) {
	cc, err := hp.connect()
	hp.mu.Lock()
	if err == nil {
		hp.conns = append(hp.conns, cc)
	}
	d.err = err
	hp.dialing = nil
	hp.mu.Unlock()
	close(d.done)
}

// connect dials the server and starts HTTP/2 on the connection. Any
// failure is a *DialError: no request has been sent.
func (hp *h2Pool) connect() (*http2.ClientConn, error) {
	nc, err := hp.dial(context.Background())
	if err != nil {
		var de *DialError
		if hp.tls && errors.As(err, &de) {
			// A server that speaks no HTTP/2 refuses the handshake
			// ("no application protocol"): say what was offered.
			return nil, &DialError{Addr: de.Addr, Err: fmt.Errorf("%w (protocol h2: ALPN offered only h2)", de.Err)}
		}
		return nil, err
	}
	if tc, ok := nc.(*tls.Conn); ok {
		if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
			nc.Close()
			if p == "" {
				p = "none"
			}
			return nil, &DialError{Addr: hp.addr, Err: fmt.Errorf("TLS with %s: the server did not agree to HTTP/2 (ALPN protocol %s); set protocol = \"http/1.1\" for it", hp.addr, p)}
		}
	}
	cc, err := hp.t.NewClientConn(nc)
	if err != nil {
		nc.Close()
		return nil, &DialError{Addr: hp.addr, Err: fmt.Errorf("starting HTTP/2 with %s: %w", hp.addr, err)}
	}
	return cc, nil
}

// MarkDead forgets a connection that closed or was told to go away; x/net
// lets its streams finish.
func (hp *h2Pool) MarkDead(cc *http2.ClientConn) {
	hp.mu.Lock()
	if i := slices.Index(hp.conns, cc); i >= 0 {
		hp.conns = slices.Delete(hp.conns, i, i+1)
	}
	hp.mu.Unlock()
}

// closeIdle closes the connections that carry no stream. With final (no
// pool uses this server's connections any more), the busy ones are shut
// down gracefully too: they take no new stream and close when their
// streams are done, however long those last.
func (hp *h2Pool) closeIdle(final bool) {
	hp.mu.Lock()
	conns := hp.conns
	if final {
		hp.conns = nil
	}
	hp.mu.Unlock()
	var kept []*http2.ClientConn
	for _, cc := range conns {
		st := cc.State()
		if st.StreamsActive+st.StreamsReserved+st.StreamsPending == 0 {
			cc.Close()
			continue
		}
		if final {
			go cc.Shutdown(context.Background()) //nolint:errcheck // it ends when the streams do
			continue
		}
		kept = append(kept, cc)
	}
	if !final {
		hp.mu.Lock()
		// Connections dialled meanwhile stay too.
		for _, cc := range hp.conns {
			if !slices.Contains(conns, cc) {
				kept = append(kept, cc)
			}
		}
		hp.conns = kept
		hp.mu.Unlock()
	}
}

// connCount is the number of live connections (tests, status).
func (hp *h2Pool) connCount() int {
	hp.mu.Lock()
	defer hp.mu.Unlock()
	return len(hp.conns)
}

// roundTrip sends req on one of the pool's connections.
func (hp *h2Pool) roundTrip(req *http.Request) (*http.Response, error) {
	return hp.t.RoundTripOpt(req, http2.RoundTripOpt{})
}

// isH2Refused reports whether err says the server did nothing with the
// request: it refused the stream, or x/net gave up resending it.
func isH2Refused(err error) bool {
	var re *errRetryElsewhere
	if errors.As(err, &re) {
		return true
	}
	var se http2.StreamError
	return errors.As(err, &se) && se.Code == http2.ErrCodeRefusedStream
}
