package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// Active health checks over HTTP/2: a GET of the check's path on one of
// the server's connections, or, with grpc = true, the gRPC health
// checking protocol (grpc.health.v1.Health/Check), which gRPC servers
// answer and which a GET cannot ask them (they refuse anything that is
// not gRPC). The check passes when the server says SERVING for the
// service named (by default "", the server as a whole).

// probeH2 returns "" if the server answered the check as expected, else
// why not.
func probeH2(ctx context.Context, s *server, h HealthConfig, host string) string {
	scheme := "http"
	if s.cp.isTLS {
		scheme = "https"
	}
	req := &http.Request{
		Method: "GET", Header: http.Header{"User-Agent": {"edged-health-check"}},
		URL:  &url.URL{Scheme: scheme, Host: host, Path: h.Path},
		Host: host, Proto: "HTTP/2.0", ProtoMajor: 2, Body: http.NoBody,
	}
	var msg []byte
	if h.GRPC {
		msg = grpcHealthRequest(h.GRPCService)
		req.Method, req.URL.Path = "POST", "/grpc.health.v1.Health/Check"
		req.Header["Content-Type"] = []string{"application/grpc"}
		req.Header["Te"] = []string{"trailers"}
		req.ContentLength = int64(len(msg))
		req.Body = io.NopCloser(strings.NewReader(string(msg)))
	}
	resp, err := s.cp.h2.roundTrip(req.WithContext(ctx))
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Sprintf("no answer within %v", h.Timeout)
		}
		return err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Sprintf("no answer within %v", h.Timeout)
		}
		return "reading the answer: " + err.Error()
	}
	status := resp.StatusCode
	if h.GRPC {
		return grpcHealthVerdict(resp, body)
	}
	return h.statusVerdict(status)
}

// grpcHealthRequest is a HealthCheckRequest{service} in a gRPC message
// frame (uncompressed flag, length, protobuf).
func grpcHealthRequest(service string) []byte {
	var pb []byte
	if service != "" {
		pb = protowire.AppendTag(pb, 1, protowire.BytesType)
		pb = protowire.AppendString(pb, service)
	}
	b := make([]byte, 5, 5+len(pb))
	binary.BigEndian.PutUint32(b[1:], uint32(len(pb)))
	return append(b, pb...)
}

// grpcHealthVerdict reads a HealthCheckResponse: "" when it says SERVING.
func grpcHealthVerdict(resp *http.Response, body []byte) string {
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("gRPC health check: HTTP status %d", resp.StatusCode)
	}
	code := resp.Trailer.Get("Grpc-Status")
	if code == "" {
		code = resp.Header.Get("Grpc-Status") // Trailers-Only
	}
	if code != "0" {
		msg := resp.Trailer.Get("Grpc-Message")
		if msg == "" {
			msg = resp.Header.Get("Grpc-Message")
		}
		if code == "" {
			return "gRPC health check: no grpc-status"
		}
		if n, _ := strconv.Atoi(code); n == 12 {
			return "gRPC health check: the server does not implement grpc.health.v1.Health (UNIMPLEMENTED)"
		}
		return fmt.Sprintf("gRPC health check: grpc-status %s %s", code, msg)
	}
	st, err := healthStatus(body)
	if err != nil {
		return "gRPC health check: " + err.Error()
	}
	if st != 1 {
		name := map[uint64]string{0: "UNKNOWN", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}[st]
		if name == "" {
			name = strconv.FormatUint(st, 10)
		}
		return "gRPC health check: " + name
	}
	return ""
}

// healthStatus takes the status (field 1) out of one framed
// HealthCheckResponse.
func healthStatus(b []byte) (uint64, error) {
	if len(b) < 5 {
		return 0, errors.New("no response message")
	}
	if b[0] != 0 {
		return 0, errors.New("compressed response message")
	}
	n := binary.BigEndian.Uint32(b[1:5])
	if uint64(len(b)-5) < uint64(n) {
		return 0, errors.New("truncated response message")
	}
	pb := b[5 : 5+n]
	var status uint64 // absent: 0, UNKNOWN
	for len(pb) > 0 {
		num, typ, l := protowire.ConsumeTag(pb)
		if l < 0 {
			return 0, protowire.ParseError(l)
		}
		pb = pb[l:]
		if num == 1 && typ == protowire.VarintType {
			v, l := protowire.ConsumeVarint(pb)
			if l < 0 {
				return 0, protowire.ParseError(l)
			}
			status, pb = v, pb[l:]
			continue
		}
		l = protowire.ConsumeFieldValue(num, typ, pb)
		if l < 0 {
			return 0, protowire.ParseError(l)
		}
		pb = pb[l:]
	}
	return status, nil
}
