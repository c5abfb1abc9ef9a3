#!/bin/bash
# Runs testssl.sh (Debian package "testssl.sh") against edged's https
# listener on loopback and fails if any finding is rated HIGH or CRITICAL.
#
# What is judged is edged's TLS: protocols, cipher suites, key exchange,
# vulnerabilities, ALPN, tickets. The certificate's own content (lifetime,
# CRL/OCSP URLs) belongs to the CA that issued it, so by default edged
# serves a chain shaped like a public ACME CA's (ECDSA P-256 leaf, 90 days,
# CRL distribution point, signed by an intermediate) as a manual
# certificate; testssl trusts its root (--add-ca), so the chain of trust is
# judged as for a public CA. MODE=internal serves edged's internal CA
# instead (testssl rates its 7-day leaves without CRL/OCSP URLs HIGH in its
# certificate checks, which is what a local CA is).
#
# Usage: edged/tlsconf/testdata/testssl.sh   (as root to install testssl.sh)
# Env: MODE=manual|internal, KEEP=1 keeps the temp dir (testssl JSON, logs).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
TMP=$(mktemp -d /tmp/testssl-edged.XXXXXX)
MODE=${MODE:-manual}
EDGED_PID=

cleanup() {
	if [ -n "$EDGED_PID" ]; then
		kill "$EDGED_PID" 2>/dev/null || true
		wait "$EDGED_PID" 2>/dev/null || true
	fi
	if [ "${KEEP:-0}" = 1 ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

if ! command -v testssl >/dev/null 2>&1; then
	if [ "$(id -u)" != 0 ]; then
		echo "testssl.sh: install it with apt-get install testssl.sh" >&2
		exit 1
	fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq testssl.sh >/dev/null
fi

freeport() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
		echo $((20000 + RANDOM % 20000))
}
P_HTTPS=$(freeport)
P_HTTP=$(freeport)

(cd "$ROOT" && go build -o "$TMP/edged" ./edged)

# make_chain writes root.crt, chain.crt (leaf + intermediate) and leaf.key.
make_chain() {
	cat >"$TMP/ext.cnf" <<-END
	[ca]
	basicConstraints = critical, CA:true
	keyUsage = critical, keyCertSign, cRLSign, digitalSignature
	subjectKeyIdentifier = hash
	[inter]
	basicConstraints = critical, CA:true, pathlen:0
	keyUsage = critical, keyCertSign, cRLSign, digitalSignature
	subjectKeyIdentifier = hash
	authorityKeyIdentifier = keyid
	[leaf]
	basicConstraints = critical, CA:false
	keyUsage = critical, digitalSignature
	extendedKeyUsage = serverAuth
	subjectAltName = DNS:localhost
	subjectKeyIdentifier = hash
	authorityKeyIdentifier = keyid
	crlDistributionPoints = URI:http://127.0.0.1:$P_HTTP/crl.der
	END
	local d=$TMP
	for k in root inter leaf; do openssl ecparam -name prime256v1 -genkey -noout -out "$d/$k.key"; done
	openssl req -new -x509 -key "$d/root.key" -subj "/O=edged test/CN=test root" -days 3650 -sha256 \
		-addext "basicConstraints=critical,CA:true" \
		-addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" -out "$d/root.crt"
	openssl req -new -key "$d/inter.key" -subj "/O=edged test/CN=test intermediate" -out "$d/inter.csr"
	openssl x509 -req -in "$d/inter.csr" -CA "$d/root.crt" -CAkey "$d/root.key" -CAcreateserial -days 1825 \
		-sha256 -extfile "$d/ext.cnf" -extensions inter -out "$d/inter.crt" 2>/dev/null
	openssl req -new -key "$d/leaf.key" -subj "/CN=localhost" -out "$d/leaf.csr"
	openssl x509 -req -in "$d/leaf.csr" -CA "$d/inter.crt" -CAkey "$d/inter.key" -CAcreateserial -days 90 \
		-sha256 -extfile "$d/ext.cnf" -extensions leaf -out "$d/leaf.crt" 2>/dev/null
	cat "$d/leaf.crt" "$d/inter.crt" >"$d/chain.crt"
}

if [ "$MODE" = internal ]; then
	TLS='"internal"'
	CA="$TMP/state/internal-ca/root.crt"
else
	make_chain
	TLS="{ cert = \"$TMP/chain.crt\", key = \"$TMP/leaf.key\" }"
	CA="$TMP/root.crt"
fi

cat >"$TMP/edged.toml" <<EOF
[server]
http = ["127.0.0.1:$P_HTTP"]
https = ["127.0.0.1:$P_HTTPS"]
admin = ""

[tls]
storage = "$TMP/state"
hsts = "max-age=63072000"

[[site]]
hosts = ["localhost"]
tls = $TLS
  [[site.route]]
  path = "/"
  respond = "ok\n"
EOF
"$TMP/edged" -config "$TMP/edged.toml" 2>"$TMP/edged.log" &
EDGED_PID=$!

serving() {
	[ -f "$CA" ] && curl -fsS --max-time 2 --cacert "$CA" \
		--resolve "localhost:$P_HTTPS:127.0.0.1" -o /dev/null "https://localhost:$P_HTTPS/"
}
# An internal certificate is issued in the background: wait for it.
for _ in $(seq 1 100); do
	serving 2>/dev/null && break
	sleep 0.1 # polling a child process
done
serving || {
	echo "testssl.sh: edged does not serve HTTPS; its log:" >&2
	cat "$TMP/edged.log" >&2
	exit 1
}

echo "running testssl against edged on 127.0.0.1:$P_HTTPS, $MODE certificate (a few minutes)" >&2
set +e
timeout 900 testssl --quiet --color 0 --warnings off --ip 127.0.0.1 \
	--add-ca "$CA" --jsonfile "$TMP/testssl.json" "localhost:$P_HTTPS" >"$TMP/testssl.txt" 2>&1
rc=$?
set -e
if [ ! -s "$TMP/testssl.json" ]; then
	echo "testssl.sh: testssl produced no JSON (exit $rc):" >&2
	cat "$TMP/testssl.txt" >&2
	exit 1
fi

# Every finding above OK/INFO, worst first.
summary=$(python3 - "$TMP/testssl.json" <<'PY'
import json, sys
findings = json.load(open(sys.argv[1]))
for sev in ["CRITICAL", "HIGH", "MEDIUM", "LOW", "WARN"]:
    for f in findings:
        if f.get("severity") == sev:
            print(f'{sev:8} {f["id"]}: {f["finding"]}')
PY
)
[ -n "$summary" ] && echo "$summary"
if echo "$summary" | grep -Eq '^(CRITICAL|HIGH) '; then
	echo "testssl.sh: FAIL: findings rated HIGH or CRITICAL (above)" >&2
	exit 1
fi
echo "testssl.sh: OK: no finding rated HIGH or CRITICAL"
