package server

import (
	"crypto/subtle"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"github.com/edgeapp/edgeapp/internal/systemd"
	"github.com/edgeapp/edgeapp/internal/tomlconf"
)

// ReadAdminToken reads the bearer token the admin API requires from path
// ("" = none): the file's first line, at least 16 characters.
func ReadAdminToken(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := tomlconf.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("admin_token_file: %w", err)
	}
	tok, _, _ := strings.Cut(string(b), "\n")
	tok = strings.TrimSpace(tok)
	if len(tok) < 16 {
		return "", fmt.Errorf("admin_token_file %s: the token is %d characters; use at least 16 (openssl rand -hex 32)", path, len(tok))
	}
	return tok, nil
}

// adminAuth requires the bearer token, when one is configured, on every
// admin request.
func (s *Server) adminAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tok := s.current.Load().adminToken; tok != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(tok)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="edged admin"`)
				http.Error(w, "401 Unauthorized: the admin API wants Authorization: Bearer TOKEN (admin_token_file)", http.StatusUnauthorized)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// warnAdminAddress says when the admin API listens on TCP, where anyone
// who can connect may purge and reload unless a token guards it.
func warnAdminAddress(log *slog.Logger, admin, tokenFile string) {
	network, _, err := systemd.SplitAddr(admin)
	if err != nil || network != "tcp" {
		return
	}
	if tokenFile == "" {
		log.Warn("the admin API listens on TCP without a token: every local user and process can purge caches and reload; prefer a unix: socket or set admin_token_file", "admin", admin)
		return
	}
	log.Warn("the admin API listens on TCP; requests need the bearer token", "admin", admin, "admin_token_file", tokenFile)
	if fi, err := os.Stat(tokenFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("the admin token file is readable by other users; chmod 600 it", "admin_token_file", tokenFile, "mode", fi.Mode().Perm().String())
	}
}
