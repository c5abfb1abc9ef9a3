package mail

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// talk runs Front on one end of a pipe, sends the client's lines at once
// and returns everything edged answered and Front's result.
func talk(t *testing.T, proto, client string) (string, error) {
	t.Helper()
	srv, cli := net.Pipe()
	defer cli.Close()
	errc := make(chan error, 1)
	go func() { errc <- Front(srv, proto, "mail.test", 2*time.Second); srv.Close() }()
	go io.WriteString(cli, client)
	var out strings.Builder
	io.Copy(&out, cli)
	return out.String(), <-errc
}

func TestSMTPFront(t *testing.T) {
	out, err := talk(t, SMTP, "EHLO c.test\r\nMAIL FROM:<a@b>\r\nAUTH PLAIN AGFAAGI=\r\nSTARTTLS\r\n")
	if err != nil {
		t.Fatalf("Front: %v\n%s", err, out)
	}
	for _, want := range []string{"220 mail.test ESMTP", "250 STARTTLS", "530 5.7.0 Must issue a STARTTLS command first\r\n530", "220 2.0.0 Ready to start TLS"} {
		if !strings.Contains(out, want) {
			t.Errorf("answer lacks %q:\n%s", want, out)
		}
	}
}

func TestPipelinedAfterSTARTTLSIsRefused(t *testing.T) {
	// CVE-2011-0411: a command sent in the clear behind STARTTLS must not
	// be executed as if it came inside TLS.
	for proto, cmd := range map[string]string{SMTP: "STARTTLS\r\nRSET\r\n", IMAP: "a STARTTLS\r\nb LOGIN x y\r\n", POP3: "STLS\r\nUSER x\r\n"} {
		out, err := talk(t, proto, cmd)
		if err == nil {
			t.Errorf("%s: pipelined command after STARTTLS accepted:\n%s", proto, out)
		}
	}
}

func TestIMAPFront(t *testing.T) {
	out, err := talk(t, IMAP, "a1 CAPABILITY\r\na2 LOGIN alice secret\r\na3 STARTTLS\r\n")
	if err != nil {
		t.Fatalf("Front: %v\n%s", err, out)
	}
	for _, want := range []string{"* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\na1 OK", "a2 BAD Must issue STARTTLS first", "a3 OK Begin TLS"} {
		if !strings.Contains(out, want) {
			t.Errorf("answer lacks %q:\n%s", want, out)
		}
	}
	out, err = talk(t, IMAP, "a1 LOGOUT\r\n")
	if !errors.Is(err, ErrQuit) || !strings.Contains(out, "a1 OK LOGOUT") {
		t.Errorf("LOGOUT: %v %q", err, out)
	}
}

func TestPOP3Front(t *testing.T) {
	out, err := talk(t, POP3, "CAPA\r\nUSER alice\r\nSTLS\r\n")
	if err != nil {
		t.Fatalf("Front: %v\n%s", err, out)
	}
	for _, want := range []string{"+OK mail.test POP3 ready", "STLS\r\n.\r\n", "-ERR Command not permitted before STLS", "+OK Begin TLS"} {
		if !strings.Contains(out, want) {
			t.Errorf("answer lacks %q:\n%s", want, out)
		}
	}
}

func TestLongLineAndTooManyCommands(t *testing.T) {
	if _, err := talk(t, SMTP, "EHLO "+strings.Repeat("x", 2000)+"\r\n"); err == nil {
		t.Error("a 2000-byte command line was accepted")
	}
	if out, err := talk(t, POP3, strings.Repeat("NOOP\r\n", maxCommands+1)); err == nil || !strings.Contains(out, "Too many") {
		t.Errorf("%d commands before STLS: %v", maxCommands+1, err)
	}
}

func TestBack(t *testing.T) {
	for _, tc := range []struct {
		proto, greeting string
		ok              bool
	}{
		{SMTP, "220-mail.test ESMTP\r\n220 more\r\n", true},
		{SMTP, "554 go away\r\n", false},
		{IMAP, "* OK Dovecot ready.\r\n", true},
		{IMAP, "* BYE busy\r\n", false},
		{POP3, "+OK ready\r\n", true},
		{POP3, "-ERR no\r\n", false},
	} {
		srv, up := net.Pipe()
		go func() { io.WriteString(srv, tc.greeting+"client bytes"); srv.Close() }()
		err := Back(up, tc.proto, time.Second)
		if (err == nil) != tc.ok {
			t.Errorf("%s %q: %v", tc.proto, tc.greeting, err)
		}
		if tc.ok {
			// What follows the greeting is left for the client.
			rest, _ := bufio.NewReader(up).ReadString(0)
			if rest != "client bytes" {
				t.Errorf("%s: after the greeting %q", tc.proto, rest)
			}
		}
		up.Close()
	}
}
