// Package mail speaks the part of IMAP (RFC 9051, 3501), POP3 (RFC 1939,
// 2595) and SMTP submission (RFC 5321, 3207, 6409) that comes before
// STARTTLS, so that edged can terminate TLS for a mail server with its own
// managed certificate, as nginx's mail module does.
//
// Front answers the client's greeting and capability exchange, refuses
// everything else until the client asks for TLS (credentials never cross
// the network in the clear), and returns when the client has asked: the
// caller then performs the TLS handshake. After it, the client starts
// afresh (RFC 3207 §4.2, RFC 2595 §3.1): it sends EHLO or CAPABILITY again
// and gets the mail server's own answers. Back reads the mail server's
// greeting on the new upstream connection, so that the client, which
// already had edged's greeting, does not see a second one; from there the
// two are joined byte for byte.
package mail

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// Protocols.
const (
	IMAP = "imap"
	POP3 = "pop3"
	SMTP = "smtp"
)

// Known reports whether p is a protocol this package speaks.
func Known(p string) bool { return p == IMAP || p == POP3 || p == SMTP }

// maxLine bounds a command line before STARTTLS (RFC 5321 allows 512
// octets for SMTP command lines; IMAP and POP3 ones are shorter here).
const maxLine = 1024

// maxCommands bounds the commands a client may send before STARTTLS.
const maxCommands = 32

// ErrQuit: the client ended the session before asking for TLS.
var ErrQuit = errors.New("client quit before STARTTLS")

// Front greets the client on c as hostname and answers it until it asks
// for STARTTLS (nil error: hand c to the TLS handshake now), quits
// (ErrQuit) or misbehaves. Every line must arrive within timeout.
func Front(c net.Conn, proto, hostname string, timeout time.Duration) error {
	br := bufio.NewReaderSize(c, 512)
	f := front{c: c, br: br, host: hostname, timeout: timeout}
	switch proto {
	case IMAP:
		return f.imap()
	case POP3:
		return f.pop3()
	case SMTP:
		return f.smtp()
	}
	return fmt.Errorf("mail: unknown protocol %q", proto)
}

type front struct {
	c       net.Conn
	br      *bufio.Reader
	host    string
	timeout time.Duration
}

func (f *front) send(s string) error {
	f.c.SetWriteDeadline(time.Now().Add(f.timeout))
	_, err := io.WriteString(f.c, s)
	return err
}

// line reads one CRLF (or LF) terminated line without its end.
func (f *front) line() (string, error) {
	f.c.SetReadDeadline(time.Now().Add(f.timeout))
	b, err := f.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) || len(b) > maxLine {
		return "", errors.New("mail: command line too long")
	}
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// handoff checks that nothing follows the STARTTLS command in the buffer:
// bytes sent before the TLS handshake must not be taken as sent inside it
// (the STARTTLS command-injection attack, CVE-2011-0411).
func (f *front) handoff() error {
	f.c.SetReadDeadline(time.Time{})
	f.c.SetWriteDeadline(time.Time{})
	if f.br.Buffered() > 0 {
		return errors.New("mail: data pipelined after STARTTLS")
	}
	return nil
}

func verb(line string) (string, string) {
	v, rest, _ := strings.Cut(line, " ")
	return strings.ToUpper(v), rest
}

func (f *front) smtp() error {
	if err := f.send("220 " + f.host + " ESMTP ready\r\n"); err != nil {
		return err
	}
	for range maxCommands {
		l, err := f.line()
		if err != nil {
			return err
		}
		v, arg := verb(l)
		switch v {
		case "EHLO":
			if arg == "" {
				err = f.send("501 5.5.4 EHLO needs a domain\r\n")
				break
			}
			err = f.send("250-" + f.host + "\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 STARTTLS\r\n")
		case "HELO":
			err = f.send("250 " + f.host + "\r\n")
		case "STARTTLS":
			if arg != "" {
				err = f.send("501 5.5.4 STARTTLS takes no argument\r\n")
				break
			}
			if err := f.handoff(); err != nil {
				f.send("554 5.5.1 Error: data pipelined after STARTTLS\r\n")
				return err
			}
			return f.send("220 2.0.0 Ready to start TLS\r\n")
		case "NOOP", "RSET":
			err = f.send("250 2.0.0 OK\r\n")
		case "QUIT":
			f.send("221 2.0.0 Bye\r\n")
			return ErrQuit
		default:
			err = f.send("530 5.7.0 Must issue a STARTTLS command first\r\n")
		}
		if err != nil {
			return err
		}
	}
	f.send("421 4.7.0 " + f.host + " Too many commands before STARTTLS\r\n")
	return errors.New("mail: too many commands before STARTTLS")
}

const imapCaps = "IMAP4rev1 STARTTLS LOGINDISABLED"

func (f *front) imap() error {
	if err := f.send("* OK [CAPABILITY " + imapCaps + "] " + f.host + " ready\r\n"); err != nil {
		return err
	}
	for range maxCommands {
		l, err := f.line()
		if err != nil {
			return err
		}
		tag, rest, _ := strings.Cut(l, " ")
		if tag == "" || strings.ContainsAny(tag, "(){%*\"\\]+") {
			err = f.send("* BAD Invalid tag\r\n")
			if err != nil {
				return err
			}
			continue
		}
		cmd, _ := verb(rest)
		switch cmd {
		case "CAPABILITY":
			err = f.send("* CAPABILITY " + imapCaps + "\r\n" + tag + " OK CAPABILITY completed\r\n")
		case "NOOP":
			err = f.send(tag + " OK NOOP completed\r\n")
		case "LOGOUT":
			f.send("* BYE " + f.host + " logging out\r\n" + tag + " OK LOGOUT completed\r\n")
			return ErrQuit
		case "STARTTLS":
			if err := f.handoff(); err != nil {
				f.send(tag + " BAD Data pipelined after STARTTLS\r\n")
				return err
			}
			return f.send(tag + " OK Begin TLS negotiation now\r\n")
		default:
			err = f.send(tag + " BAD Must issue STARTTLS first\r\n")
		}
		if err != nil {
			return err
		}
	}
	f.send("* BYE Too many commands before STARTTLS\r\n")
	return errors.New("mail: too many commands before STARTTLS")
}

func (f *front) pop3() error {
	if err := f.send("+OK " + f.host + " POP3 ready\r\n"); err != nil {
		return err
	}
	for range maxCommands {
		l, err := f.line()
		if err != nil {
			return err
		}
		v, _ := verb(l)
		switch v {
		case "CAPA":
			err = f.send("+OK Capability list follows\r\nSTLS\r\n.\r\n")
		case "STLS":
			if err := f.handoff(); err != nil {
				f.send("-ERR Data pipelined after STLS\r\n")
				return err
			}
			return f.send("+OK Begin TLS negotiation\r\n")
		case "NOOP":
			err = f.send("+OK\r\n")
		case "QUIT":
			f.send("+OK Bye\r\n")
			return ErrQuit
		default:
			err = f.send("-ERR Command not permitted before STLS\r\n")
		}
		if err != nil {
			return err
		}
	}
	f.send("-ERR Too many commands before STLS\r\n")
	return errors.New("mail: too many commands before STLS")
}

// Back reads the mail server's greeting on up within timeout and checks
// that it accepts the session. A refusal or anything unreadable is an
// error that quotes what the server said.
func Back(up net.Conn, proto string, timeout time.Duration) error {
	up.SetReadDeadline(time.Now().Add(timeout))
	defer up.SetReadDeadline(time.Time{})
	// Byte by byte: anything past the greeting belongs to the client,
	// and the server sends nothing more before the client speaks.
	var line []byte
	b := make([]byte, 1)
	for {
		line = line[:0]
		for {
			if _, err := up.Read(b); err != nil {
				return fmt.Errorf("reading the mail server's greeting: %w", err)
			}
			line = append(line, b[0])
			if b[0] == '\n' {
				break
			}
			if len(line) > maxLine {
				return errors.New("the mail server's greeting is too long")
			}
		}
		s := strings.TrimRight(string(line), "\r\n")
		switch proto {
		case SMTP:
			if len(s) < 4 || !strings.HasPrefix(s, "220") {
				return fmt.Errorf("the mail server refused the session: %q", s)
			}
			if s[3] == '-' {
				continue // multi-line greeting
			}
			return nil
		case IMAP:
			if strings.HasPrefix(s, "* OK") {
				return nil
			}
			return fmt.Errorf("the mail server refused the session: %q", s)
		case POP3:
			if strings.HasPrefix(s, "+OK") {
				return nil
			}
			return fmt.Errorf("the mail server refused the session: %q", s)
		}
		return fmt.Errorf("mail: unknown protocol %q", proto)
	}
}

// Unavailable is what the client is told, in its protocol, when no mail
// server can take the session.
func Unavailable(proto, host string) string {
	switch proto {
	case SMTP:
		return "421 4.3.0 " + host + " Service not available, try again later\r\n"
	case IMAP:
		return "* BYE [UNAVAILABLE] Service not available, try again later\r\n"
	case POP3:
		return "-ERR [SYS/TEMP] Service not available, try again later\r\n"
	}
	return ""
}
