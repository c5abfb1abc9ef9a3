#!/usr/bin/python3
"""Mail client for edged's stream tests, on Python's own imaplib, poplib and
smtplib: each step connects to edged on 127.0.0.1 under the name NAME (so
TLS is verified against that name and the CA file given, never skipped),
logs in and sends or reads a message. Prints one line per step; exits 1 on
the first failure.

    mailclient.py CAFILE NAME USER PASSWORD STEP:PORT...

Steps: smtp-starttls, smtps, imap-starttls, imaps, pop3-starttls, pop3s.
"""
import imaplib
import poplib
import smtplib
import socket
import ssl
import sys
import time

ca, name, user, password = sys.argv[1:5]
steps = sys.argv[5:]
ctx = ssl.create_default_context(cafile=ca)
SUBJECT = "edged stream test %d" % time.time_ns()
SOURCE = ("127.0.0.7", 0)  # the client edged reports to the mail servers


def connect(port, timeout=10):
    return socket.create_connection(("127.0.0.1", port), timeout, SOURCE)


def peer(sock):
    cert = sock.getpeercert()
    return dict(x[0] for x in cert["subject"]).get("commonName", "") or cert["subjectAltName"][0][1]


class SMTP(smtplib.SMTP):
    def _get_socket(self, host, port, timeout):
        return connect(port, timeout)


class SMTPS(smtplib.SMTP_SSL):
    def _get_socket(self, host, port, timeout):
        return self.context.wrap_socket(connect(port, timeout), server_hostname=name)


class IMAP(imaplib.IMAP4):
    def _create_socket(self, timeout):
        return connect(self.port, timeout)


class IMAPS(imaplib.IMAP4_SSL):
    def _create_socket(self, timeout):
        return self.ssl_context.wrap_socket(connect(self.port, timeout), server_hostname=name)


class POP3(poplib.POP3):
    def _create_socket(self, timeout):
        return connect(self.port, timeout)


class POP3S(poplib.POP3_SSL):
    def _create_socket(self, timeout):
        return self.context.wrap_socket(connect(self.port, timeout), server_hostname=name)


def send(s, how):
    s.ehlo("client.test")
    s.login(user, password)
    msg = "From: %s\r\nTo: %s\r\nSubject: %s (%s)\r\n\r\nHello through edged.\r\n" % (user, user, SUBJECT, how)
    s.sendmail(user, [user], msg)
    s.quit()


def smtp_starttls(port):
    s = SMTP(name, port, timeout=10)
    s.ehlo("client.test")
    if not s.has_extn("starttls"):
        raise SystemExit("edged does not offer STARTTLS")
    # Before TLS, edged refuses to take credentials or mail.
    code, _ = s.docmd("MAIL FROM:<%s>" % user)
    if code != 530:
        raise SystemExit("MAIL before STARTTLS answered %d, want 530" % code)
    s.starttls(context=ctx)
    cn = peer(s.sock)
    send(s, "submission")
    return cn


def smtps(port):
    s = SMTPS(name, port, timeout=10, context=ctx)
    cn = peer(s.sock)
    send(s, "smtps")
    return cn


def read_imap(m, how):
    typ, caps = m.capability()
    m.login(user, password)
    # Delivery is asynchronous: wait for both messages to arrive.
    for _ in range(100):
        m.select("INBOX")
        typ, data = m.search(None, "SUBJECT", '"%s"' % SUBJECT)
        ids = data[0].split()
        if len(ids) >= 2:
            break
        time.sleep(0.1)
    else:
        raise SystemExit("%s: %d of 2 messages arrived" % (how, len(ids)))
    typ, msg = m.fetch(ids[0], "(BODY[TEXT])")
    if b"Hello through edged." not in msg[0][1]:
        raise SystemExit("%s: message body %r" % (how, msg))
    m.logout()
    return len(ids)


def imap_starttls(port):
    m = IMAP(name, port, timeout=10)
    if "STARTTLS" not in m.capabilities or "LOGINDISABLED" not in m.capabilities:
        raise SystemExit("edged's IMAP capabilities before TLS: %r" % (m.capabilities,))
    m.starttls(ssl_context=ctx)
    cn = peer(m.sock)
    n = read_imap(m, "imap-starttls")
    return "%s, %d messages" % (cn, n)


def imaps(port):
    m = IMAPS(name, port, ssl_context=ctx, timeout=10)
    cn = peer(m.sock)
    n = read_imap(m, "imaps")
    return "%s, %d messages" % (cn, n)


def read_pop3(p, how):
    p.user(user)
    p.pass_(password)
    count, _ = p.stat()
    if count < 2:
        raise SystemExit("%s: %d messages" % (how, count))
    resp, lines, _ = p.retr(1)
    if b"Hello through edged." not in lines:
        raise SystemExit("%s: message %r" % (how, lines))
    p.quit()
    return count


def pop3_starttls(port):
    p = POP3(name, port, timeout=10)
    if "STLS" not in p.capa():
        raise SystemExit("edged's POP3 capabilities before TLS lack STLS")
    p.stls(context=ctx)
    cn = peer(p.sock)
    return "%s, %d messages" % (cn, read_pop3(p, "pop3-starttls"))


def pop3s(port):
    p = POP3S(name, port, context=ctx, timeout=10)
    cn = peer(p.sock)
    return "%s, %d messages" % (cn, read_pop3(p, "pop3s"))


STEPS = {"smtp-starttls": smtp_starttls, "smtps": smtps, "imap-starttls": imap_starttls,
         "imaps": imaps, "pop3-starttls": pop3_starttls, "pop3s": pop3s}

for step in steps:
    what, port = step.split(":")
    try:
        print("%s OK %s" % (what, STEPS[what](int(port))), flush=True)
    except Exception as e:
        print("%s FAILED %s: %s" % (what, type(e).__name__, e), flush=True)
        sys.exit(1)
