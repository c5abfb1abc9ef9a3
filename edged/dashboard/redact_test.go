package dashboard

import (
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"dial tcp 127.0.0.1:8000: connection refused", "dial tcp 127.0.0.1:8000: connection refused"},
		{`ask https://auth.example.com/check?domain=x.com&token=s3cr3t: 403`, `ask https://auth.example.com/check?[redacted]: 403`},
		{`GET "https://user:pa55@api.example.com/v1?k=v".`, `GET "https://[redacted]@api.example.com/v1?[redacted]".`},
		{"contacting http://ca.example/dir.", "contacting http://ca.example/dir."},
		{`users.bob: "$2y$10$abcdefghijklmnopqrstuuJ8Xb0P5wqZQm4gS1iYx4hY8mM3sVvG2" is not`, `users.bob: "[redacted]" is not`},
		{"Authorization: Bearer abcdefgh12345678", "Authorization: [redacted] [redacted]"},
		{"token: Bearer abcdefgh12345678", "token: [redacted] [redacted]"},
		{"Bearer abcdefgh12345678 sent", "Bearer [redacted] sent"},
		{"admin_token = 0123456789abcdef and more", "admin_token = [redacted] and more"},
		{`tsig_secret: "c2VjcmV0"`, `tsig_secret: [redacted]`},
		{"password=hunter2;", "password=[redacted];"},
	} {
		if got := Redact(c.in); got != c.want {
			t.Errorf("Redact(%q)\n got %q\nwant %q", c.in, got, c.want)
		}
	}
}

func TestKeyLabel(t *testing.T) {
	if got := KeyLabel("client_ip", "192.0.2.7"); got != "192.0.2.7" {
		t.Errorf("client address: %q", got)
	}
	got := KeyLabel("header:X-Api-Key", "key-abc-123")
	if strings.Contains(got, "abc") || !strings.HasPrefix(got, "sha256:") || len(got) != len("sha256:")+12 {
		t.Errorf("header key shown as %q", got)
	}
	if KeyLabel("cookie:session", "a") == KeyLabel("cookie:session", "b") {
		t.Error("two keys, one label")
	}
}
