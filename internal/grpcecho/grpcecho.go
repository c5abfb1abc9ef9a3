// Package grpcecho is a small gRPC service for tests and benchmarks,
// without generated code: Say echoes one message (unary; "fail:MSG"
// answers NOT_FOUND with MSG, "sleep:DURATION" answers after it), Chat
// echoes each message of a bidirectional stream as it arrives. Messages
// are google.protobuf.StringValue. Serve runs it beside gRPC's health
// service on a listener.
package grpcecho

import (
	"context"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Method names, for clients.
const (
	SayMethod  = "/edged.test.Echo/Say"
	ChatMethod = "/edged.test.Echo/Chat"
)

// Service describes the echo service to grpc-go.
var Service = grpc.ServiceDesc{
	ServiceName: "edged.test.Echo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Say", Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			return srv.(*Server).say(ctx, in)
		}},
	},
	Streams: []grpc.StreamDesc{{
		StreamName: "Chat", ServerStreams: true, ClientStreams: true,
		Handler: func(srv any, stream grpc.ServerStream) error { return srv.(*Server).chat(stream) },
	}},
}

// Server answers with its Name before each echo ("a:hello").
type Server struct {
	Name  string
	Calls atomic.Int32 // calls begun
}

func (e *Server) say(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	e.Calls.Add(1)
	md, _ := metadata.FromIncomingContext(ctx)
	v := in.GetValue()
	switch {
	case strings.HasPrefix(v, "fail:"):
		return nil, status.Error(codes.NotFound, strings.TrimPrefix(v, "fail:"))
	case strings.HasPrefix(v, "sleep:"):
		d, _ := time.ParseDuration(strings.TrimPrefix(v, "sleep:"))
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	grpc.SetHeader(ctx, metadata.Pairs("x-echo-server", e.Name))
	grpc.SetTrailer(ctx, metadata.Pairs("x-echo-trailer", "t-"+v))
	got := ""
	if xff := md.Get("x-forwarded-for"); len(xff) > 0 {
		got = " xff=" + xff[0]
	}
	return wrapperspb.String(e.Name + ":" + v + got), nil
}

func (e *Server) chat(stream grpc.ServerStream) error {
	e.Calls.Add(1)
	for {
		in := new(wrapperspb.StringValue)
		if err := stream.RecvMsg(in); err != nil {
			if err == io.EOF {
				stream.SetTrailer(metadata.Pairs("x-chat-end", "bye"))
				return nil
			}
			return err
		}
		if err := stream.SendMsg(wrapperspb.String(e.Name + ":" + in.GetValue())); err != nil {
			return err
		}
	}
}

// Serve serves the echo and health services on ln until the returned
// server is stopped.
func Serve(ln net.Listener, name string, opts ...grpc.ServerOption) (*grpc.Server, *Server, *health.Server) {
	e := &Server{Name: name}
	hs := health.NewServer()
	srv := grpc.NewServer(opts...)
	srv.RegisterService(&Service, e)
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(ln)
	return srv, e, hs
}

// Say calls Say.
func Say(ctx context.Context, cc grpc.ClientConnInterface, msg string, opts ...grpc.CallOption) (string, error) {
	out := new(wrapperspb.StringValue)
	err := cc.Invoke(ctx, SayMethod, wrapperspb.String(msg), out, opts...)
	return out.GetValue(), err
}

// Chat opens a Chat stream.
func Chat(ctx context.Context, cc grpc.ClientConnInterface) (grpc.ClientStream, error) {
	return cc.NewStream(ctx, &Service.Streams[0], ChatMethod)
}
