package rfc2136

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// ReadKeyFile reads the TSIG keys in a file, in any of these forms:
//
//	base64secret                         a bare secret (name and algorithm from the config)
//	hmac-sha256:name:base64secret        nsupdate -y / kdig -y form
//	key "name" { algorithm hmac-sha256; secret "base64secret"; };
//	                                     BIND (tsig-keygen, ddns-confgen, rndc-confgen)
//	key:
//	  - id: name                         Knot (keymgr -t)
//	    algorithm: hmac-sha256
//	    secret: base64secret
//
// Lines starting with '#', ';' or "//" are comments. Errors never include
// the secret.
func ReadKeyFile(path string) ([]Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading TSIG key file: %w", err)
	}
	keys, err := parseKeys(b)
	if err != nil {
		return nil, fmt.Errorf("TSIG key file %s: %w", path, err)
	}
	return keys, nil
}

var (
	bindKey = regexp.MustCompile(`(?s)key\s+"?([^"\s{]+)"?\s*\{(.*?)\}\s*;`)
	bindAlg = regexp.MustCompile(`algorithm\s+"?([A-Za-z0-9.-]+)"?\s*;`)
	bindSec = regexp.MustCompile(`secret\s+"([^"]*)"\s*;`)
)

func parseKeys(b []byte) ([]Key, error) {
	text := stripComments(b)
	if strings.TrimSpace(text) == "" {
		return nil, errors.New("it is empty")
	}
	var keys []Key
	switch {
	case bindKey.MatchString(text):
		for _, m := range bindKey.FindAllStringSubmatch(text, -1) {
			k := Key{Name: m[1]}
			if a := bindAlg.FindStringSubmatch(m[2]); a != nil {
				k.Algorithm = strings.ToLower(a[1])
			}
			if s := bindSec.FindStringSubmatch(m[2]); s != nil {
				k.Secret = s[1]
			}
			keys = append(keys, k)
		}
	case strings.Contains(text, "secret:"):
		keys = parseKnotKeys(text)
	default:
		line := strings.TrimSpace(text)
		if strings.ContainsAny(line, " \t\n") {
			return nil, errors.New("not a TSIG key: want a base64 secret, alg:name:secret, a BIND key { } block or a Knot key: list")
		}
		if parts := strings.Split(line, ":"); len(parts) == 3 {
			keys = append(keys, Key{Algorithm: strings.ToLower(parts[0]), Name: parts[1], Secret: parts[2]})
		} else {
			keys = append(keys, Key{Secret: line})
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("no key found in it")
	}
	for i, k := range keys {
		if k.Secret == "" {
			return nil, fmt.Errorf("key %q has no secret", k.Name)
		}
		raw, err := base64.StdEncoding.DecodeString(k.Secret)
		if err != nil || len(raw) == 0 {
			return nil, fmt.Errorf("the secret of key %q is not base64", keys[i].Name)
		}
	}
	return keys, nil
}

func stripComments(b []byte) string {
	var out strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || l[0] == '#' || l[0] == ';' || strings.HasPrefix(l, "//") {
			continue
		}
		out.WriteString(sc.Text())
		out.WriteByte('\n')
	}
	return out.String()
}

// parseKnotKeys reads Knot's YAML key list: "- id:" starts a key.
func parseKnotKeys(text string) []Key {
	var keys []Key
	for _, line := range strings.Split(text, "\n") {
		l := strings.TrimSpace(line)
		newKey := strings.HasPrefix(l, "- ")
		l = strings.TrimSpace(strings.TrimPrefix(l, "- "))
		name, val, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		val = strings.Trim(strings.TrimSpace(val), `"'`)
		if newKey || len(keys) == 0 {
			if name == "key" {
				continue
			}
			keys = append(keys, Key{})
		}
		k := &keys[len(keys)-1]
		switch strings.TrimSpace(name) {
		case "id":
			k.Name = val
		case "algorithm":
			k.Algorithm = strings.ToLower(val)
		case "secret":
			k.Secret = val
		}
	}
	return keys
}

// pick selects the key named name from keys, or the only one.
func pick(keys []Key, name, file string) (Key, error) {
	if name == "" {
		if len(keys) > 1 {
			return Key{}, fmt.Errorf("TSIG key file %s holds %d keys: set which one (tsig_key)", file, len(keys))
		}
		return keys[0], nil
	}
	for _, k := range keys {
		if k.Name == "" || strings.EqualFold(strings.TrimSuffix(k.Name, "."), strings.TrimSuffix(name, ".")) {
			return k, nil
		}
	}
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.Name
	}
	return Key{}, fmt.Errorf("TSIG key file %s has no key %q (it has %s)", file, name, strings.Join(names, ", "))
}
