package tlsconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"github.com/edgeapp/edgeapp/internal/gotool"
	"github.com/edgeapp/edgeapp/internal/syncbuf"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Pebble (Let's Encrypt's test CA) and pebble-challtestsrv (as DNS only,
// answering 127.0.0.1 for every name) are built from the module's pinned
// tool versions and run on loopback; challenges are validated for real.

var (
	pebbleOnce   sync.Once
	pebbleBinDir string
	pebbleModDir string
	pebbleErr    error
)

func TestMain(m *testing.M) {
	if peer := os.Getenv("TLSCONF_PEER"); peer != "" {
		os.Exit(runPeer(peer))
	}
	code := m.Run()
	if pebbleBinDir != "" {
		os.RemoveAll(pebbleBinDir)
	}
	os.Exit(code)
}

// pebbleBinaries builds pebble and pebble-challtestsrv once per test binary.
// Pebble is a tool pinned in go.mod, not an optional peer: a failure to get
// or build it fails the tests instead of skipping them.
func pebbleBinaries(t testing.TB) (bindir, moddir string) {
	t.Helper()
	pebbleOnce.Do(func() {
		pebbleModDir, pebbleErr = gotool.ModuleDir("github.com/letsencrypt/pebble/v2")
		if pebbleErr != nil {
			return
		}
		pebbleBinDir, pebbleErr = os.MkdirTemp("", "tlsconf-pebble-")
		if pebbleErr != nil {
			return
		}
		for _, cmd := range []string{"pebble", "pebble-challtestsrv"} {
			if _, pebbleErr = gotool.Build(pebbleBinDir, "github.com/letsencrypt/pebble/v2/cmd/"+cmd); pebbleErr != nil {
				return
			}
		}
	})
	if pebbleErr != nil {
		t.Fatalf("Pebble (pinned in go.mod) cannot be built, so the ACME tests cannot run: %v", pebbleErr)
	}
	return pebbleBinDir, pebbleModDir
}

type pebbleOpts struct {
	httpPort, tlsPort int // where the validation authority connects
	shortlived        int // validity in seconds of the "shortlived" profile
	listenPort        int // 0: pick one
	// dnsServer is the DNS server pebble's validation authority asks
	// (a real authoritative server for DNS-01 tests); "" starts
	// pebble-challtestsrv answering 127.0.0.1 for every name.
	dnsServer string
}

type pebble struct {
	dir     string // ACME directory URL
	caRoot  string // PEM file trusting pebble's own HTTPS (Options.CARoot)
	roots   *x509.CertPool
	rootPEM []byte
	out     *syncbuf.Buffer
	cmds    []*exec.Cmd
}

// orders counts the orders pebble created.
func (p *pebble) orders() int { return strings.Count(p.out.String(), "Added order") }

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func startPebble(t testing.TB, o pebbleOpts) *pebble {
	t.Helper()
	bin, mod := pebbleBinaries(t)
	dir := t.TempDir()
	dnsPort, mgmtPort, chalMgmt := freePort(t), freePort(t), freePort(t)
	if o.listenPort == 0 {
		o.listenPort = freePort(t)
	}
	if o.shortlived == 0 {
		o.shortlived = 3600
	}
	p := &pebble{
		dir:    fmt.Sprintf("https://127.0.0.1:%d/dir", o.listenPort),
		caRoot: filepath.Join(mod, "test/certs/pebble.minica.pem"),
		out:    &syncbuf.Buffer{},
	}
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  fmt.Sprintf("127.0.0.1:%d", o.listenPort),
		"managementListenAddress":        fmt.Sprintf("127.0.0.1:%d", mgmtPort),
		"certificate":                    filepath.Join(mod, "test/certs/localhost/cert.pem"),
		"privateKey":                     filepath.Join(mod, "test/certs/localhost/key.pem"),
		"httpPort":                       o.httpPort,
		"tlsPort":                        o.tlsPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"retryAfter":                     map[string]int{"authz": 1, "order": 1},
		"keyAlgorithm":                   "ecdsa",
		"profiles": map[string]any{
			"default":    map[string]any{"description": "90 days", "validityPeriod": 7776000},
			"shortlived": map[string]any{"description": "for renewal tests", "validityPeriod": o.shortlived},
		},
	}}
	cfgJSON, _ := json.Marshal(cfg)
	cfgFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(cfgFile, cfgJSON, 0o600); err != nil {
		t.Fatal(err)
	}

	var cmds []*exec.Cmd
	dnsServer := o.dnsServer
	if dnsServer == "" {
		dnsServer = fmt.Sprintf("127.0.0.1:%d", dnsPort)
		chal := exec.Command(filepath.Join(bin, "pebble-challtestsrv"),
			"-dnsserver", dnsServer,
			"-management", fmt.Sprintf("127.0.0.1:%d", chalMgmt),
			"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "",
			"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "")
		chal.Stdout, chal.Stderr = p.out, p.out
		cmds = append(cmds, chal)
	}
	peb := exec.Command(filepath.Join(bin, "pebble"), "-config", cfgFile, "-dnsserver", dnsServer)
	peb.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	peb.Stdout, peb.Stderr = p.out, p.out
	for _, c := range append(cmds, peb) {
		if err := c.Start(); err != nil {
			t.Fatalf("starting %s: %v", c.Path, err)
		}
		p.cmds = append(p.cmds, c)
	}
	t.Cleanup(p.stop)

	// Pebble makes a new root at every start: fetch it from management.
	caPEM, err := os.ReadFile(p.caRoot)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := hc.Get(fmt.Sprintf("https://127.0.0.1:%d/roots/0", mgmtPort))
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				p.rootPEM = body
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble did not come up: %v\n%s", err, p.out.String())
		}
		time.Sleep(50 * time.Millisecond) // polling an external process
	}
	p.roots = x509.NewCertPool()
	if !p.roots.AppendCertsFromPEM(p.rootPEM) {
		t.Fatalf("pebble root is not PEM: %q", p.rootPEM)
	}
	return p
}

func (p *pebble) stop() {
	for _, c := range p.cmds {
		if c.Process != nil {
			c.Process.Kill()
			c.Wait()
		}
	}
	p.cmds = nil
}

// edge is a test stand-in for edged's two listeners: a real HTTP server
// with HTTPChallenge around its handler and a real TLS listener with
// TLSConfig, both on loopback.
type edge struct {
	httpPort, tlsPort int
	httpSrv, tlsSrv   *http.Server
}

func startEdge(t testing.TB, m *Manager, httpLn, tlsLn net.Listener) *edge {
	t.Helper()
	e := &edge{
		httpPort: httpLn.Addr().(*net.TCPAddr).Port,
		tlsPort:  tlsLn.Addr().(*net.TCPAddr).Port,
	}
	e.httpSrv = &http.Server{Handler: m.HTTPChallenge(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "plain "+r.Host)
	}))}
	e.tlsSrv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello "+r.Host)
	}), ErrorLog: log.New(io.Discard, "", 0)} // refused handshakes are expected
	go e.httpSrv.Serve(httpLn)
	go e.tlsSrv.Serve(tls.NewListener(tlsLn, m.TLSConfig()))
	t.Cleanup(func() {
		e.httpSrv.Close()
		e.tlsSrv.Close()
	})
	return e
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// httpsGet makes one request on a new connection to 127.0.0.1:port with
// SNI host, verifying against roots; it returns the body and the leaf.
func httpsGet(port int, host string, roots *x509.CertPool) (string, *x509.Certificate, error) {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots, ServerName: host},
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
		},
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	resp, err := c.Get("https://" + host + "/")
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", nil, err
	}
	return string(body), resp.TLS.PeerCertificates[0], nil
}

// waitState polls Status until host reaches a state with prefix want.
func waitState(t testing.TB, m *Manager, host, want string, timeout time.Duration) CertStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last CertStatus
	for time.Now().Before(deadline) {
		for _, s := range m.Status() {
			if s.Host == host {
				last = s
				if strings.HasPrefix(s.State, want) {
					return s
				}
			}
		}
		time.Sleep(20 * time.Millisecond) // polling background issuance
	}
	t.Fatalf("%s did not reach state %q within %s; last status %+v", host, want, timeout, last)
	return last
}

// peerConfig is what a peer process (another edged on the same storage)
// is told through TLSCONF_PEER.
type peerConfig struct {
	Options Options
	Host    string
}

// runPeer is the body of a peer process: it obtains a certificate for one
// host, serving nothing itself, and prints its serial number.
func runPeer(spec string) int {
	var pc peerConfig
	if err := json.Unmarshal([]byte(spec), &pc); err != nil {
		fmt.Fprintln(os.Stderr, "peer:", err)
		return 2
	}
	m, err := New(pc.Options, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "peer:", err)
		return 2
	}
	defer m.Close()
	if err := m.Apply(context.Background(), []Site{{Hosts: []string{pc.Host}}}); err != nil {
		fmt.Fprintln(os.Stderr, "peer:", err)
		return 2
	}
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		for _, s := range m.Status() {
			if s.Host == pc.Host && s.State == "valid" {
				fmt.Println(s.NotAfter.UTC().Format(time.RFC3339Nano))
				return 0
			}
			if s.Host == pc.Host && strings.HasPrefix(s.State, "failed") {
				fmt.Fprintln(os.Stderr, "peer:", s.State)
				return 1
			}
		}
		time.Sleep(20 * time.Millisecond) // polling background issuance
	}
	fmt.Fprintln(os.Stderr, "peer: no certificate in time")
	return 1
}
