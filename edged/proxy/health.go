package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/edgeapp/edgeapp/edged/httpwire"
)

// recordFailure counts a failed attempt against s (passive health): MaxFails
// of them within FailTimeout take s out for FailTimeout. Logged once when s
// goes down, not on every failure.
func (p *Pool) recordFailure(s *server, cause int, err error) {
	st := s.st
	st.metrics.failures[cause].Inc()
	msg := err.Error()
	st.mu.Lock()
	st.lastErr = msg
	if p.cfg.MaxFails == 0 || len(p.servers()) == 1 {
		// Like nginx, a lone server is never taken out: there is nothing
		// to fail over to, and refusing requests for fail_timeout after an
		// app restart would only lengthen the outage.
		st.mu.Unlock()
		return
	}
	now := nanotime()
	ft := int64(p.cfg.FailTimeout)
	if st.fails.Load() == 0 || now-st.windowStart > ft {
		st.windowStart = now
		st.fails.Store(0)
	}
	n := st.fails.Add(1)
	logDown := false
	if int(n) >= p.cfg.MaxFails && st.downEnd.Load() <= now {
		st.downEnd.Store(now + ft)
		logDown = !st.passiveDown
		st.passiveDown = true
	}
	st.mu.Unlock()
	if logDown {
		p.log.Warn("upstream server marked down; taking no requests until the time-out passes",
			"server", st.addr, "failures", n, "within", p.cfg.FailTimeout, "cause", msg, "timeout", p.cfg.FailTimeout)
	}
}

// recordSuccess clears passive failures; the fast path is one atomic load.
func (p *Pool) recordSuccess(s *server) {
	st := s.st
	if st.fails.Load() == 0 {
		return
	}
	st.mu.Lock()
	st.fails.Store(0)
	wasDown := st.passiveDown
	st.passiveDown = false
	st.downEnd.Store(0)
	st.mu.Unlock()
	if wasDown {
		p.log.Info("upstream server is back up: a request succeeded", "server", st.addr)
	}
}

// checkLoop runs active health checks on s until the pool closes or s
// leaves it (stop).
func (p *Pool) checkLoop(s *server, stop <-chan struct{}) {
	defer p.checkers.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-p.stop:
			cancel()
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	t := time.NewTicker(p.cfg.Health.Interval)
	defer t.Stop()
	for {
		p.checkOnce(ctx, s)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checkOnce sends one health check and applies Rise/Fall; it logs only when
// the server's state changes.
func (p *Pool) checkOnce(parent context.Context, s *server) {
	h := p.cfg.Health
	ctx, cancel := context.WithTimeout(parent, h.Timeout)
	defer cancel()
	reason := probe(ctx, s, h, p.cfg.HostHeader)
	if parent.Err() != nil {
		return // the pool closed mid-check; that says nothing about the server
	}
	st := s.st
	st.mu.Lock()
	st.lastCheck = time.Now()
	var change string
	if reason == "" {
		st.rises++
		st.fall = 0
		if st.sick.Load() && st.rises >= h.Rise {
			st.sick.Store(false)
			st.checkReason = ""
			change = "up"
		}
	} else {
		st.fall++
		st.rises = 0
		st.checkReason = reason
		if !st.sick.Load() && st.fall >= h.Fall {
			st.sick.Store(true)
			change = "down"
		}
	}
	rises, falls := st.rises, st.fall
	st.mu.Unlock()
	switch change {
	case "down":
		p.log.Warn("upstream server failed its health checks; taking it out until they pass again",
			"server", st.addr, "failed_checks", falls, "cause", reason, "path", h.Path)
	case "up":
		p.log.Info("upstream server passed its health checks; taking requests again",
			"server", st.addr, "passed_checks", rises, "path", h.Path)
	}
}

// probe returns "" if the server answered the check as expected, else why not.
func probe(ctx context.Context, s *server, h HealthConfig, hostHeader string) string {
	if h.Path == "" && !h.GRPC {
		return probeConnect(ctx, s) // TCP: connecting is the check (stream.go)
	}
	host := s.cfg.Addr
	if strings.HasPrefix(host, "unix:") {
		host = "localhost"
	}
	switch {
	case h.Host != "":
		host = h.Host
	case hostHeader != "":
		host = hostHeader
	}
	if s.cp.h2 != nil {
		return probeH2(ctx, s, h, host)
	}
	c, err := s.conn(ctx, nanotime(), false, false)
	if err != nil {
		return err.Error()
	}
	ex := getExchange()
	defer putExchange(ex)
	head := httpwire.AppendRequestLine(ex.head[:0], "GET", h.Path)
	head = httpwire.AppendField(head, "Host", host)
	head = append(head, "User-Agent: edged-health-check\r\n\r\n"...)
	ex.head = head
	dl, _ := ctx.Deadline()
	hard := nanotime() + int64(time.Until(dl))
	noAnswer := fmt.Errorf("no answer within %v", h.Timeout)
	wt := waiter{ctx: ctx, poll: min(headPoll, h.Timeout), hard: hard, err: noAnswer}
	c.arm(nanotime(), wt.poll)
	if err = c.write(head, &wt); err == nil {
		err = ex.readHead(c, nil, &wt, false)
	}
	if err != nil {
		c.close()
		if errors.Is(err, context.DeadlineExceeded) || err == noAnswer || (err == errClientGone && ctx.Err() == context.DeadlineExceeded) {
			return noAnswer.Error()
		}
		return err.Error()
	}
	status := ex.resp.Status
	kind, length := ex.resp.BodyFor("GET")
	c.consume(ex.headLen)
	ex.body.reset(c, kind, length, !ex.resp.Close, wt)
	_, _ = io.Copy(io.Discard, io.LimitReader(&ex.body, 64<<10))
	ex.body.Close()
	return h.statusVerdict(status)
}
