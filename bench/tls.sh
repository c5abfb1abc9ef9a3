#!/bin/bash
# TLS benchmark: edged against Debian's nginx, same ECDSA P-256 certificate,
# on loopback, printed as ratios (edged / nginx; above 1 means edged is
# faster).
#
#   handshakes: a new TLS connection per request (wrk with
#               "Connection: close"; wrk does not resume sessions, so each
#               is a full handshake), answered by a fixed response.
#   proxy:      HTTPS keep-alive requests reverse-proxied to one upstream
#               (a third nginx returning a fixed body) over keep-alive.
#
# The server under test runs on CPU 0 with one worker (nginx
# worker_processes 1, edged GOMAXPROCS=1); wrk and the upstream run on
# CPU 1, so the servers get the same single core.
#
# A third row, keep-alive requests answered by the server itself, separates
# the TLS/HTTP cost from the proxying cost.
#
# Env: DURATION (s per run, default 10), CONNS (default 32), ROUNDS
# (default 3, alternating servers), KEEP=1 keeps the temp dir.
# Installs nginx and wrk with apt if missing (needs root).
set -euo pipefail

DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
ROUNDS=${ROUNDS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d /tmp/bench-tls.XXXXXX)
PIDS=()

cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	[ "${KEEP:-0}" = 1 ] && echo "kept $TMP" || rm -rf "$TMP"
}
trap cleanup EXIT

need() {
	local missing=()
	for c in "$@"; do command -v "${c%%:*}" >/dev/null 2>&1 || missing+=("${c#*:}"); done
	[ ${#missing[@]} -eq 0 ] && return
	if [ "$(id -u)" != 0 ]; then
		echo "tls.sh: need ${missing[*]} (apt-get install ${missing[*]})" >&2
		exit 1
	fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}
need nginx:nginx-light wrk:wrk openssl:openssl curl:curl taskset:util-linux
NGINX=$(command -v nginx)

freeport() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
		echo $((20000 + RANDOM % 20000))
}
P_UP=$(freeport); P_NGX=$(freeport); P_EDGE=$(freeport); P_EDGE_HTTP=$(freeport)

echo "building edged" >&2
(cd "$ROOT" && go build -o "$TMP/edged" ./edged)

# One certificate for both: ECDSA P-256, like edged's ACME default.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
	-subj /CN=bench.test -addext "subjectAltName=DNS:bench.test,IP:127.0.0.1" \
	-keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null

BODY='hello, world'
mkdir -p "$TMP/up" "$TMP/ngx"
cat >"$TMP/up/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/up/nginx.pid;
error_log $TMP/up/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$P_UP;
    location / { return 200 "$BODY\n"; }
  }
}
EOF
cat >"$TMP/ngx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/ngx/nginx.pid;
error_log $TMP/ngx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream up { server 127.0.0.1:$P_UP; keepalive 64; }
  server {
    listen 127.0.0.1:$P_NGX ssl;
    http2 on;
    ssl_certificate $TMP/cert.pem;
    ssl_certificate_key $TMP/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location = /hs { return 200 "ok\n"; }
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
# nginx 1.22 has no "http2 on;" (1.25+): use the listen parameter instead.
if ! "$NGINX" -t -q -c "$TMP/ngx/nginx.conf" -p "$TMP/ngx" 2>/dev/null; then
	sed -i -e 's/^    http2 on;$//' -e "s/listen 127.0.0.1:$P_NGX ssl;/listen 127.0.0.1:$P_NGX ssl http2;/" "$TMP/ngx/nginx.conf"
fi
cat >"$TMP/edged.toml" <<EOF
[server]
http = ["127.0.0.1:$P_EDGE_HTTP"]
https = ["127.0.0.1:$P_EDGE"]
admin = ""
log_level = "warn"

[tls]
storage = "$TMP/edged-state"

[[site]]
hosts = ["bench.test", "127.0.0.1"]
tls = { cert = "$TMP/cert.pem", key = "$TMP/key.pem" }
redirect_http = false
  [[site.route]]
  path = "/hs"
  exact = true
  respond = "ok\n"
  [[site.route]]
  path = "/"
  upstream = "up"
  compress = false

[upstream.up]
servers = ["127.0.0.1:$P_UP"]
EOF

taskset -c 1 "$NGINX" -c "$TMP/up/nginx.conf" -p "$TMP/up" &
PIDS+=($!)
taskset -c 0 "$NGINX" -c "$TMP/ngx/nginx.conf" -p "$TMP/ngx" &
PIDS+=($!)
NGX_PID=$!
GOMAXPROCS=1 taskset -c 0 "$TMP/edged" -config "$TMP/edged.toml" 2>"$TMP/edged.log" &
PIDS+=($!)
EDGE_PID=$!

# cpu_us PID: user+system CPU µs of PID and its children (nginx's worker).
cpu_us() {
	local hz p t=0
	hz=$(getconf CLK_TCK)
	for p in "$1" $(pgrep -P "$1"); do
		t=$((t + $(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
	done
	echo $((t * 1000000 / hz))
}

waitup() { # url
	for _ in $(seq 1 100); do
		curl -fsk --max-time 1 -o /dev/null "$1" && return 0
		sleep 0.1 # polling a child process
	done
	echo "tls.sh: $1 did not answer; logs:" >&2
	cat "$TMP/edged.log" "$TMP/ngx/error.log" >&2 || true
	exit 1
}
waitup "https://127.0.0.1:$P_NGX/hs"
waitup "https://127.0.0.1:$P_EDGE/hs"
waitup "https://127.0.0.1:$P_NGX/"
waitup "https://127.0.0.1:$P_EDGE/"

# rps PID URL [extra wrk args...]: "requests/s CPU-µs-per-request" of the
# server PID, and fails on errors.
rps() {
	local pid=$1 url=$2; shift 2
	local out c0 c1
	c0=$(cpu_us "$pid")
	out=$(timeout $((DURATION + 30)) taskset -c 1 wrk -t 1 -c "$CONNS" -d "${DURATION}s" "$@" "$url")
	c1=$(cpu_us "$pid")
	echo "$out" | sed 's/^/    /' >&2
	if echo "$out" | grep -q "Non-2xx"; then
		echo "tls.sh: non-2xx responses from $url" >&2
		exit 1
	fi
	echo "$out" | awk -v c=$((c1 - c0)) '/ requests in / { n = $1 } /Requests\/sec/ { r = $2 } END { printf "%s %.1f", r, (n > 0 ? c / n : 0) }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

median() { sort -n | awk '{a[NR]=$1} END { if (NR == 0) print 0; else if (NR % 2) print a[(NR+1)/2]; else printf "%.2f", (a[NR/2]+a[NR/2+1])/2 }'; }

# Rounds alternate the servers so that load from elsewhere on the machine
# hits both alike; the median of the rounds is reported.
declare -A R C
run() { # KEY SRV PID URL [wrk args...]
	local k=$1 srv=$2 res
	shift 2
	res=$(rps "$@")
	R[${k}_$srv]+="${res% *} "
	C[${k}_$srv]+="${res#* } "
}
for round in $(seq 1 "$ROUNDS"); do
	for srv in nginx edged; do
		port=$P_NGX pid=$NGX_PID
		[ $srv = edged ] && port=$P_EDGE pid=$EDGE_PID
		echo "round $round, $srv: handshakes (new connection per request)" >&2
		run hs $srv "$pid" "https://127.0.0.1:$port/hs" -H "Connection: close"
		echo "round $round, $srv: HTTPS keep-alive, fixed response" >&2
		run ka $srv "$pid" "https://127.0.0.1:$port/hs"
		echo "round $round, $srv: HTTPS keep-alive reverse proxy" >&2
		run px $srv "$pid" "https://127.0.0.1:$port/"
	done
done
med() { echo "${R[$1]}" | tr ' ' '\n' | grep . | median; }
medc() { echo "${C[$1]}" | tr ' ' '\n' | grep . | median; }

echo
echo "edged vs nginx $(nginx -v 2>&1 | sed 's/.*\///'), ECDSA P-256, loopback, 1 core each, wrk -c $CONNS, ${DURATION}s x $ROUNDS rounds (median)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); CPU/req = the server's user+system CPU per request"
printf '%-40s %12s %12s %8s %14s %14s\n' "benchmark" "edged" "nginx" "ratio" "edged CPU/req" "nginx CPU/req"
for row in "hs:tls handshakes/s (new conn per req)" "px:https keep-alive proxy req/s" "ka:https keep-alive fixed response req/s"; do
	k=${row%%:*}
	e=$(med "${k}_edged"); n=$(med "${k}_nginx")
	printf '%-40s %12s %12s %8s %11s µs %11s µs\n' "${row#*:}" "$e" "$n" "$(ratio "$e" "$n")" "$(medc "${k}_edged")" "$(medc "${k}_nginx")"
done
