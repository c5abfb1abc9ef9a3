package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeapp/edgeapp/internal/syncbuf"
)

// mailDir is a directory the mail servers' unprivileged processes can
// reach (t.TempDir is private to root).
func mailDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "edged-mail-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// runPeer starts a mail server in the foreground and stops it with
// SIGTERM to pidOf() (its own pid when pidOf is nil) when the test ends.
func runPeer(t *testing.T, name string, out *syncbuf.Buffer, pidOf func() int, args ...string) {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		pid := cmd.Process.Pid
		if pidOf != nil {
			if p := pidOf(); p > 0 {
				pid = p
			}
		}
		syscall.Kill(pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, out.String())
		}
	})
}

const dovecotConf = `base_dir = {{DIR}}/dovecot/run
state_dir = {{DIR}}/dovecot/state
instance_name = edged-test-{{PORT_IMAP}}
log_path = {{DIR}}/dovecot/log
protocols = imap pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{{DIR}}/mail/%d/%n/Maildir
first_valid_uid = 1
haproxy_trusted_networks = 127.0.0.0/8
login_trusted_networks = 127.0.0.0/8
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {{DIR}}/dovecot/passwd
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home={{DIR}}/mail/%d/%n
}
service imap-login {
  inet_listener imap {
    port = {{PORT_IMAP}}
  }
  inet_listener imap_proxied {
    port = {{PORT_IMAP_PROXIED}}
    haproxy = yes
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
  inet_listener pop3 {
    port = {{PORT_POP3}}
  }
  inet_listener pop3s {
    port = 0
  }
}
service auth {
  inet_listener {
    address = 127.0.0.1
    port = {{PORT_AUTH}}
  }
}
service stats {
  unix_listener stats-reader {
    mode = 0600
  }
  unix_listener stats-writer {
    mode = 0600
  }
}
`

const postfixMain = `compatibility_level = 3.6
queue_directory = {{DIR}}/postfix/queue
data_directory = {{DIR}}/postfix/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
mail_owner = postfix
setgid_group = postdrop
myhostname = mail.test
mydomain = mail.test
myorigin = mail.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.1/32
virtual_mailbox_domains = mail.test
virtual_mailbox_base = {{DIR}}/mail
virtual_mailbox_maps = inline:{ alice@mail.test=mail.test/alice/Maildir/ }
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:{{PORT_AUTH}}
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
smtpd_upstream_proxy_protocol = haproxy
maillog_file = /dev/stdout
alias_maps =
alias_database =
local_recipient_maps =
biff = no
smtputf8_enable = no
`

const postfixMaster = `127.0.0.1:{{PORT_SMTP}} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`

// mailPeers runs Debian's Dovecot (IMAP, POP3, and SASL for Postfix) and
// Postfix (submission with SMTP AUTH, delivering to the maildir Dovecot
// serves), both on loopback, configured in dir, as the test's processes.
// Postfix and Dovecot's proxied listener take PROXY headers. It returns
// their ports and their output.
func mailPeers(t *testing.T, dir string) (ports map[string]string, dovecotLog string, postfixOut *syncbuf.Buffer) {
	t.Helper()
	dovecot := needPeer(t, "dovecot", "dovecot-imapd dovecot-pop3d")
	needPeer(t, "postfix", "postfix")
	for _, u := range []string{"postfix", "dovecot", "dovenull", "nobody"} {
		if _, err := user.Lookup(u); err != nil {
			t.Skipf("SKIPPED LOUDLY: user %s is missing (the postfix and dovecot packages create it): %v", u, err)
		}
	}
	ports = map[string]string{}
	repl := []string{"{{DIR}}", dir}
	for _, p := range []string{"IMAP", "IMAP_PROXIED", "POP3", "AUTH", "SMTP"} {
		addr := freeAddr(t)
		ports[p] = addr
		_, port, _ := strings.Cut(addr, ":")
		repl = append(repl, "{{PORT_"+p+"}}", port)
	}
	r := strings.NewReplacer(repl...)
	for _, d := range []string{"dovecot/run", "dovecot/state", "postfix/conf", "postfix/queue", "postfix/data", "mail"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	nobody, _ := user.Lookup("nobody")
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	os.Chown(filepath.Join(dir, "mail"), uid, gid)
	pf, _ := user.Lookup("postfix")
	pfUID, _ := strconv.Atoi(pf.Uid)
	os.Chown(filepath.Join(dir, "postfix/data"), pfUID, -1)
	files := map[string]string{
		"dovecot/dovecot.conf": dovecotConf,
		"dovecot/passwd":       "alice@mail.test:{PLAIN}wonderland::::::\n",
		"postfix/conf/main.cf": postfixMain, "postfix/conf/master.cf": postfixMaster,
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(r.Replace(text)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dovecotOut := &syncbuf.Buffer{}
	runPeer(t, "dovecot", dovecotOut, nil, dovecot, "-F", "-c", filepath.Join(dir, "dovecot/dovecot.conf"))
	postfixOut = &syncbuf.Buffer{}
	masterPid := func() int {
		b, _ := os.ReadFile(filepath.Join(dir, "postfix/queue/pid/master.pid"))
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
	runPeer(t, "postfix", postfixOut, masterPid, "postfix", "-c", filepath.Join(dir, "postfix/conf"), "start-fg")
	for _, p := range []string{"IMAP", "POP3", "AUTH"} {
		waitListening(t, ports[p], dovecotOut)
	}
	waitListening(t, ports["SMTP"], postfixOut)
	return ports, filepath.Join(dir, "dovecot/log"), postfixOut
}

// TestMailThroughStreams puts edged in front of real Dovecot and Postfix:
// STARTTLS spoken by edged for SMTP submission, IMAP and POP3, and
// implicit TLS for SMTPS, IMAPS and POP3S, all with the certificate edged
// issued (its internal CA), driven by Python's smtplib, imaplib and
// poplib: a login, two messages sent through Postfix and read back from
// Dovecot over every port. Streams come from sockets passed by name as
// systemd does, or bound from listen; the mail servers see the client's
// address through PROXY headers (v1 and v2).
func TestMailThroughStreams(t *testing.T) {
	python := needPeer(t, "python3", "python3")
	dir := mailDir(t)
	ports, dovecotLog, postfixOut := mailPeers(t, dir)
	smtpsAddr := freeAddr(t)
	names := []string{"http", "https", "submission", "imap", "imaps", "pop3", "pop3s"}
	e, addrs := startEdgedWith(t, fmt.Sprintf(`
[server]
admin = "{{ADMIN}}"
[tls]
storage = "{{DIR}}/tls"
[[site]]
hosts = ["www.mail.test"]
tls = "internal"
  [[site.route]]
  path = "/"
  respond = "web"

[[stream]]
name = "submission"
upstream = "postfix"
protocol = "smtp"
starttls = true
tls = "internal"
hosts = ["mail.test"]
send_proxy_protocol = "v2"

[[stream]]
name = "smtps"
listen = [%q]
upstream = "postfix"
protocol = "smtp"
tls = "internal"
hosts = ["mail.test"]
send_proxy_protocol = "v1"

[[stream]]
name = "imap"
upstream = "imap"
protocol = "imap"
starttls = true
tls = "internal"
hosts = ["mail.test"]

[[stream]]
name = "imaps"
upstream = "imap_proxied"
tls = "internal"
hosts = ["mail.test"]
send_proxy_protocol = "v2"

[[stream]]
name = "pop3"
upstream = "pop3"
protocol = "pop3"
starttls = true
tls = "internal"
hosts = ["mail.test"]

[[stream]]
name = "pop3s"
upstream = "pop3"
tls = "internal"
hosts = ["mail.test"]

[upstream.postfix]
servers = [%q]
health = { tcp = true, interval = "1s" }
[upstream.imap]
servers = [%q]
[upstream.imap_proxied]
servers = [%q]
[upstream.pop3]
servers = [%q]
`, smtpsAddr, ports["SMTP"], ports["IMAP"], ports["IMAP_PROXIED"], ports["POP3"]), names...)
	port := func(i int) string { _, p, _ := strings.Cut(addrs[i], ":"); return p }
	_, smtpsPort, _ := strings.Cut(smtpsAddr, ":")

	var root string
	filepath.Walk(filepath.Join(filepath.Dir(e.config), "tls"), func(p string, info os.FileInfo, err error) error {
		if err == nil && strings.HasSuffix(p, "root.crt") {
			root = p
		}
		return nil
	})
	if root == "" {
		t.Fatal("edged's internal CA exported no root.crt")
	}
	script, _ := filepath.Abs("testdata/mailclient.py")
	cmd := exec.Command(python, script, root, "mail.test", "alice@mail.test", "wonderland",
		"smtp-starttls:"+port(2), "smtps:"+smtpsPort, "imap-starttls:"+port(3), "imaps:"+port(4),
		"pop3-starttls:"+port(5), "pop3s:"+port(6))
	out, err := cmd.CombinedOutput()
	t.Logf("mail client:\n%s", out)
	if err != nil {
		t.Fatalf("mail client failed: %v", err)
	}
	for _, step := range []string{"smtp-starttls OK mail.test", "smtps OK mail.test", "imap-starttls OK mail.test, 2 messages",
		"imaps OK mail.test, 2 messages", "pop3-starttls OK mail.test, 2 messages", "pop3s OK mail.test, 2 messages"} {
		if !strings.Contains(string(out), step) {
			t.Errorf("mail client did not report %q", step)
		}
	}
	// The PROXY headers gave the servers the client's own address.
	if !strings.Contains(postfixOut.String(), "[127.0.0.7]") {
		t.Errorf("postfix never saw the client 127.0.0.7 (PROXY header)")
	}
	if b, _ := os.ReadFile(dovecotLog); !strings.Contains(string(b), "rip=127.0.0.7") {
		t.Errorf("dovecot never saw the client 127.0.0.7 (PROXY header); its log:\n%s", b)
	}
	metrics := adminGet(t, e, "/metrics")
	for _, s := range []string{"submission", "smtps", "imap", "imaps", "pop3", "pop3s"} {
		want := `edged_stream_connections_total{result="ok",stream="` + s + `"}`
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
