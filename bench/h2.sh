#!/bin/bash
# bench/h2.sh: HTTP/2 over TLS 1.3, what browsers speak: edged against
# Debian's nginx, HAProxy and Caddy, each reverse-proxying to the same
# kept-alive origin (a separate nginx answering a fixed 13-byte body), with
# h2load (nghttp2-client) as the client: 32 connections x 10 concurrent
# streams by default, the same ECDSA P-256 certificate for all.
#
#	bench/h2.sh            measure and print the table
#	bench/h2.sh profile    also record edged's CPU profile with perf during
#	                       one extra run and print where the time goes
#
# Each server under test runs on CPU 0 with one worker (nginx
# worker_processes 1, HAProxy nbthread 1, Caddy and edged GOMAXPROCS=1);
# h2load and the origin run on CPU 1. Runs interleave (edged, nginx,
# haproxy, caddy, edged, ...) after a warm-up; the table shows medians and
# the CPU each request cost the server under test (user+system of its
# processes over the run), which stays meaningful on a busy machine where
# req/s does not. p50/p99 come from h2load's per-request log.
#
# Env: DURATION (s per run, default 10), ROUNDS (default 3), CONNS (32),
# STREAMS (10), SERVERS ("edged nginx haproxy caddy"), EDGED (a binary; by
# default built from the tree), EDGED_BASE (another edged binary, run as
# the server "edged-base" to compare a change in the same interleaved
# run: SERVERS="edged edged-base nginx"), EDGED_ENV (extra environment for edged),
# KEEP=1 keeps the temp dir. Installs what is missing with apt (root).
set -euo pipefail

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}
STREAMS=${STREAMS:-10}
SERVERS=${SERVERS:-edged nginx haproxy caddy}
MODE=${1:-measure}
case $MODE in measure | profile) ;; *)
	echo "usage: $0 [profile]" >&2
	exit 2
	;;
esac
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d /tmp/bench-h2.XXXXXX)
PIDS=()

cleanup() {
	for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	[ "${KEEP:-0}" = 1 ] && echo "kept $TMP" >&2 || rm -rf "$TMP"
}
trap cleanup EXIT

need() {
	local missing=()
	for c in "$@"; do
		command -v "${c%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${c%%:*}" ] || missing+=("${c#*:}")
	done
	[ ${#missing[@]} -eq 0 ] && return
	if [ "$(id -u)" != 0 ]; then
		echo "h2.sh: need ${missing[*]} (apt-get install ${missing[*]})" >&2
		exit 1
	fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
need nginx:nginx-light h2load:nghttp2-client haproxy:haproxy caddy:caddy openssl:openssl curl:curl \
	taskset:util-linux python3:python3 setsid:util-linux
[ "$MODE" = profile ] && need perf:linux-perf
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P_UP=$(freeport)
declare -A PORT PID
for s in $SERVERS; do PORT[$s]=$(freeport); done

if [ -n "${EDGED:-}" ]; then
	cp "$EDGED" "$TMP/edged"
else
	echo "building edged" >&2
	(cd "$ROOT" && go build -o "$TMP/edged" ./edged)
fi
if [[ " $SERVERS " == *" edged-base "* ]]; then
	[ -n "${EDGED_BASE:-}" ] || { echo "h2.sh: edged-base needs EDGED_BASE (a binary)" >&2 && exit 2; }
	cp "$EDGED_BASE" "$TMP/edged-base"
fi

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
	-subj /CN=bench.test -addext "subjectAltName=DNS:bench.test,IP:127.0.0.1" \
	-keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
cat "$TMP/cert.pem" "$TMP/key.pem" >"$TMP/combined.pem"

mkdir -p "$TMP/up" "$TMP/ngx" "$TMP/caddy"
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
    location / { return 200 "hello, world\n"; }
  }
}
EOF
# keepalive_requests: nginx closes an HTTP/2 connection after 1000
# requests by default and h2load does not reconnect.
cat >"$TMP/ngx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/ngx/nginx.pid;
error_log $TMP/ngx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  client_body_temp_path $TMP/ngx/client_body;
  proxy_temp_path $TMP/ngx/proxy;
  upstream up { server 127.0.0.1:$P_UP; keepalive 64; }
  server {
    listen 127.0.0.1:${PORT[nginx]:-0} ssl http2;
    ssl_certificate $TMP/cert.pem;
    ssl_certificate_key $TMP/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
cat >"$TMP/haproxy.cfg" <<EOF
global
	nbthread 1
	maxconn 8192
defaults
	mode http
	timeout connect 5s
	timeout client 30s
	timeout server 30s
	http-reuse always
frontend h2
	bind 127.0.0.1:${PORT[haproxy]:-0} ssl crt $TMP/combined.pem alpn h2,http/1.1
	default_backend up
backend up
	server o 127.0.0.1:$P_UP
EOF
cat >"$TMP/Caddyfile" <<EOF
{
	admin off
	auto_https off
	servers {
		protocols h1 h2
	}
}
https://bench.test:${PORT[caddy]:-0}, https://127.0.0.1:${PORT[caddy]:-0} {
	bind 127.0.0.1
	tls $TMP/cert.pem $TMP/key.pem
	reverse_proxy 127.0.0.1:$P_UP
}
EOF
for e in edged edged-base; do
	cat >"$TMP/$e.toml" <<EOF
[server]
http = []
https = ["127.0.0.1:${PORT[$e]:-0}"]
admin = ""
log_level = "warn"

[tls]
storage = "$TMP/$e-state"

[[site]]
hosts = ["bench.test", "127.0.0.1"]
tls = { cert = "$TMP/cert.pem", key = "$TMP/key.pem" }
redirect_http = false
  [[site.route]]
  path = "/"
  upstream = "up"
  compress = false

[upstream.up]
servers = ["127.0.0.1:$P_UP"]
EOF
done

start() { # label, then the command; in its own process group
	local label=$1
	shift
	setsid "$@" >"$TMP/$label.log" 2>&1 &
	PIDS+=($!)
	PID[$label]=$!
}
start origin taskset -c 1 "$NGINX" -c "$TMP/up/nginx.conf" -p "$TMP/up"
for s in $SERVERS; do
	case $s in
	edged | edged-base) start "$s" env GOMAXPROCS=1 ${EDGED_ENV:-} taskset -c 0 "$TMP/$s" -config "$TMP/$s.toml" ;;
	nginx) start nginx taskset -c 0 "$NGINX" -c "$TMP/ngx/nginx.conf" -p "$TMP/ngx" ;;
	haproxy) start haproxy taskset -c 0 "$HAPROXY" -db -f "$TMP/haproxy.cfg" ;;
	caddy) start caddy env XDG_DATA_HOME="$TMP/caddy" XDG_CONFIG_HOME="$TMP/caddy" GOMAXPROCS=1 \
		taskset -c 0 caddy run --config "$TMP/Caddyfile" --adapter caddyfile ;;
	*) echo "h2.sh: unknown server $s" >&2 && exit 2 ;;
	esac
done
for s in $SERVERS; do
	up=
	for _ in $(seq 150); do
		curl -fsk --http2 --max-time 1 -o /dev/null "https://127.0.0.1:${PORT[$s]}/" && up=1 && break
		sleep 0.1 # polling a child process that is starting
	done
	[ -n "$up" ] || { tail -5 "$TMP"/*.log >&2; echo "h2.sh: $s never answered on ${PORT[$s]}" >&2; exit 1; }
done

# cpu_us PGID: user+system CPU µs of the processes of a process group.
HZ=$(getconf CLK_TCK)
cpu_us() {
	{ cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v g="$1" -v hz="$HZ" '{
		sub(/^.*\) /, ""); if ($3 == g) t += $12 + $13 }
		END { printf "%.0f", t * 1000000 / hz }'
}

RESULTS=$TMP/results
: >"$RESULTS"
# one LABEL DURATION [record]: one h2load run against LABEL; with record,
# appends "LABEL RPS P50_US P99_US FAILED DONE CPU_US_PER_REQ" to RESULTS.
one() {
	local s=$1 d=$2 c0 c1 out
	c0=$(cpu_us "${PID[$s]}")
	out=$(timeout $((d + 60)) taskset -c 1 h2load -c "$CONNS" -m "$STREAMS" -t 1 -D "$d" \
		--log-file="$TMP/h2load.log" "https://127.0.0.1:${PORT[$s]}/" 2>&1) || true
	c1=$(cpu_us "${PID[$s]}")
	[ -n "${VERBOSE:-}" ] && echo "$out" >&2
	[ "${3:-}" = record ] || return 0
	python3 - "$s" "$((c1 - c0))" "$TMP/h2load.log" "$out" >>"$RESULTS" <<'END_PY'
import sys, re
label, cpu, log, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rps = float(re.search(r"finished in [0-9.]+\w+, ([0-9.]+) req/s", out).group(1)) if "finished in" in out else 0
m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
done, ok, failed, errored = (int(x) for x in m.groups()) if m else (0, 0, 0, 0)
st = re.search(r"status codes: \d+ 2xx, \d+ 3xx, (\d+) 4xx, (\d+) 5xx", out)
bad = failed + errored + (int(st.group(1)) + int(st.group(2)) if st else 0)
lat = sorted(int(l.split()[2]) for l in open(log) if len(l.split()) == 3)
pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else 0
print(label, round(rps), pct(0.5), pct(0.99), bad, done, "%.1f" % (cpu / done if done else 0))
END_PY
	tail -1 "$RESULTS" | awk '{ printf "h2.sh: %s %s req/s, p50 %s µs, p99 %s µs, failed %s, %s done, %s µs CPU/req\n", $1, $2, $3, $4, $5, $6, $7 }' >&2
}

for s in $SERVERS; do one "$s" 2; done # warm-up: TLS session, pools, JIT-free but page cache and Go heap
for r in $(seq "$ROUNDS"); do
	for s in $SERVERS; do one "$s" "$DURATION" record; done
done

if [ "$MODE" = profile ] && [ -n "${PID[edged]:-}" ]; then
	perf record -F 999 -g -p "${PID[edged]}" -o "$TMP/perf.data" -- sleep "$DURATION" >/dev/null 2>&1 &
	perfpid=$!
	one edged "$DURATION"
	wait "$perfpid" || true
	echo "where edged's time goes (perf, self):" >&2
	perf report -i "$TMP/perf.data" --no-children --percent-limit 1 --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -40 >&2
	perf report -i "$TMP/perf.data" --children --percent-limit 4 --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -40 >&2
fi

echo
echo "HTTP/2 over TLS 1.3, h2load -c $CONNS -m $STREAMS, proxy to a kept-alive origin; ${DURATION}s x $ROUNDS rounds, medians"
echo "$(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), Linux $(uname -r); load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "nginx $("$NGINX" -v 2>&1 | sed 's/.*\///'), $("$HAPROXY" -v | head -1 | awk '{ print "HAProxy " $3 }'), Caddy $(caddy version | awk '{ print $1 }'), h2load $(h2load --version | awk '{ print $2 }')"
echo
python3 - "$RESULTS" <<'END_PY'
import sys, statistics, collections
rows = collections.OrderedDict()
for line in open(sys.argv[1]):
    label, rps, p50, p99, bad, done, cpu = line.split()
    rows.setdefault(label, []).append((float(rps), int(p50), int(p99), int(bad), float(cpu)))
med = lambda rs, i: statistics.median(r[i] for r in rs)
base = rows.get("nginx")
print("| server | req/s | vs nginx | p50 | p99 | server CPU/req | vs nginx | failed |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for label, rs in rows.items():
    rps, cpu = med(rs, 0), med(rs, 4)
    vs = "%.2fx" % (rps / med(base, 0)) if base and med(base, 0) else "n/a"
    vc = "%.2fx" % (cpu / med(base, 4)) if base and med(base, 4) else "n/a"
    print("| %s | %.0f | %s | %d µs | %d µs | %.1f µs | %s | %d |" % (label, rps, vs, med(rs, 1), med(rs, 2), cpu, vc, sum(r[3] for r in rs)))
END_PY
