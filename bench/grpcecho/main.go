// Command grpcecho is the gRPC side of bench/grpc.sh and of edged's gRPC
// integration test: a grpc-go server with internal/grpcecho's echo
// service and the health service (h2c), a client that makes one call
// and says what came back, and the framed request body h2load sends.
//
//	grpcecho -listen 127.0.0.1:50051 [-name a]
//	grpcecho -call 127.0.0.1:8080 [-msg hello]   prints the answer, exits 1 on a gRPC error
//	grpcecho -frame hello                        writes Say's request as one gRPC message frame
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/edgeapp/edgeapp/internal/grpcecho"
)

func main() {
	listen := flag.String("listen", "", "serve on this address")
	name := flag.String("name", "echo", "the server's name, put before each echo")
	call := flag.String("call", "", "call Say on this address (h2c) and print the answer")
	msg := flag.String("msg", "hello", "the message -call sends")
	frame := flag.String("frame", "", "write this message as Say's framed request body")
	flag.Parse()
	switch {
	case *listen != "":
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			fmt.Fprintln(os.Stderr, "grpcecho:", err)
			os.Exit(1)
		}
		srv, _, _ := grpcecho.Serve(ln, *name)
		fmt.Println("serving on", ln.Addr())
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		srv.Stop()
	case *call != "":
		cc, err := grpc.NewClient(*call, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			fmt.Fprintln(os.Stderr, "grpcecho:", err)
			os.Exit(1)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		got, err := grpcecho.Say(ctx, cc, *msg)
		if err != nil {
			st, _ := status.FromError(err)
			fmt.Fprintf(os.Stderr, "grpcecho: %s: %s\n", st.Code(), st.Message())
			os.Exit(1)
		}
		fmt.Println(got)
	case *frame != "":
		b, _ := proto.Marshal(wrapperspb.String(*frame))
		var hdr [5]byte
		binary.BigEndian.PutUint32(hdr[1:], uint32(len(b)))
		os.Stdout.Write(hdr[:])
		os.Stdout.Write(b)
	default:
		flag.Usage()
		os.Exit(2)
	}
}
