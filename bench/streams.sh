#!/bin/bash
# HTTP/3 and TLS stream benchmarks, on loopback:
#
#   h3:        HTTP/3 GETs answered by the server itself (a fixed body),
#              edged against Debian's Caddy (HTTP/3 on quic-go too), from a
#              Go client on quic-go (bench/streamload; curl here has no
#              HTTP/3): 4 QUIC connections, 64 requests in flight.
#   tls-conn:  a TLS stream proxy terminating TLS in front of a TCP echo
#              server, edged's [[stream]] against HAProxy's mode tcp with
#              "ssl crt": a new TLS connection per 1 KiB exchange (full
#              handshakes; the proxy connects to the echo server each time).
#   tls-bulk:  the same proxies, 16 KiB messages echoed on 16 kept
#              connections (throughput, MiB/s both ways).
#
# Each server runs on CPU 0 with one thread (GOMAXPROCS=1, nbthread 1);
# the client and the echo server run on CPU 1. Rows alternate servers for
# ROUNDS rounds; the table has medians and CPU µs per operation of the
# server process (steadier than rates on a shared machine).
#
# Env: DURATION (s per run, default 5), ROUNDS (default 2), KEEP=1 keeps
# the temp dir. Needs caddy, haproxy, openssl (apt-get installs them as
# root).
set -euo pipefail

DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d /tmp/bench-streams.XXXXXX)
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
		echo "streams.sh: need ${missing[*]} (apt-get install ${missing[*]})" >&2
		exit 1
	fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}
need caddy:caddy haproxy:haproxy openssl:openssl taskset:util-linux python3:python3

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P_EDGE=$(freeport); P_CADDY=$(freeport); P_STREAM=$(freeport); P_HAP=$(freeport); P_ECHO=$(freeport)

echo "building edged and streamload" >&2
(cd "$ROOT" && go build -o "$TMP/edged" ./edged && go build -o "$TMP/streamload" ./bench/streamload)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
	-subj /CN=bench.test -addext "subjectAltName=DNS:bench.test,DNS:stream.test" \
	-keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
cat "$TMP/cert.pem" "$TMP/key.pem" >"$TMP/combined.pem"

cat >"$TMP/edged.toml" <<END_EDGED
[server]
http = []
https = ["127.0.0.1:$P_EDGE"]
admin = ""
[tls]
storage = "$TMP/edged-tls"
[[site]]
hosts = ["bench.test"]
tls = { cert = "$TMP/cert.pem", key = "$TMP/key.pem" }
redirect_http = false
  [[site.route]]
  path = "/"
  respond = "hello, world\n"
[[stream]]
name = "tls"
listen = ["127.0.0.1:$P_STREAM"]
upstream = "echo"
tls = { cert = "$TMP/cert.pem", key = "$TMP/key.pem" }
hosts = ["stream.test"]
[upstream.echo]
servers = ["127.0.0.1:$P_ECHO"]
END_EDGED
cat >"$TMP/Caddyfile" <<END_CADDY
{
	admin off
	auto_https off
	servers {
		protocols h1 h2 h3
	}
}
https://bench.test:$P_CADDY {
	bind 127.0.0.1
	tls $TMP/cert.pem $TMP/key.pem
	respond "hello, world
" 200
}
END_CADDY
cat >"$TMP/haproxy.cfg" <<END_HAPROXY
global
	nbthread 1
	maxconn 8192
defaults
	mode tcp
	timeout connect 5s
	timeout client 30s
	timeout server 30s
frontend tls
	bind 127.0.0.1:$P_HAP ssl crt $TMP/combined.pem
	default_backend echo
backend echo
	server e 127.0.0.1:$P_ECHO
END_HAPROXY

declare -A PID
start() { # label, then the command
	local label=$1
	shift
	"$@" >"$TMP/$label.log" 2>&1 &
	PIDS+=($!)
	PID[$label]=$!
}
start echo taskset -c 1 "$TMP/streamload" echo -addr "127.0.0.1:$P_ECHO"
start edged env GOMAXPROCS=1 taskset -c 0 "$TMP/edged" -config "$TMP/edged.toml"
start caddy env XDG_DATA_HOME="$TMP/caddy" XDG_CONFIG_HOME="$TMP/caddy" GOMAXPROCS=1 taskset -c 0 caddy run --config "$TMP/Caddyfile" --adapter caddyfile
start haproxy taskset -c 0 haproxy -db -f "$TMP/haproxy.cfg"
for p in $P_EDGE $P_CADDY $P_STREAM $P_HAP $P_ECHO; do
	up=
	for _ in $(seq 100); do
		python3 -c "import socket; socket.create_connection(('127.0.0.1',$p),1)" 2>/dev/null && up=1 && break
		sleep 0.1
	done
	[ -n "$up" ] || { tail -5 "$TMP"/*.log >&2; echo "streams.sh: port $p never listened" >&2; exit 1; }
done

ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
RESULTS=$TMP/results
: >"$RESULTS"
one() { # scenario label args...
	local scen=$1 label=$2
	shift 2
	local pid=${PID[$label]} t0 out t1
	t0=$(ticks "$pid")
	out=$(taskset -c 1 "$TMP/streamload" "$@" -d "${DURATION}s")
	t1=$(ticks "$pid")
	read -r ops p50 p99 errs n mib <<<"$out"
	local cpu=$(((t1 - t0) * 1000000 / HZ))
	local per=$((n > 0 ? cpu / n : 0))
	echo "$scen $label $ops $p50 $p99 $errs $n $mib $per" | tee -a "$RESULTS" >&2
}
# Warm up each server once.
taskset -c 1 "$TMP/streamload" h3 -url "https://127.0.0.1:$P_EDGE/" -name bench.test -d 1s >/dev/null
taskset -c 1 "$TMP/streamload" h3 -url "https://127.0.0.1:$P_CADDY/" -name bench.test -d 1s >/dev/null
for _ in $(seq "$ROUNDS"); do
	one h3 edged h3 -url "https://127.0.0.1:$P_EDGE/" -name bench.test -conns 4 -c 64
	one h3 caddy h3 -url "https://127.0.0.1:$P_CADDY/" -name bench.test -conns 4 -c 64
	one tls-conn edged tls -addr "127.0.0.1:$P_STREAM" -name stream.test -c 32
	one tls-conn haproxy tls -addr "127.0.0.1:$P_HAP" -name stream.test -c 32
	one tls-bulk edged tls -addr "127.0.0.1:$P_STREAM" -name stream.test -c 16 -keep
	one tls-bulk haproxy tls -addr "127.0.0.1:$P_HAP" -name stream.test -c 16 -keep
done

echo
echo "$(nproc) CPUs, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg); ${DURATION}s runs, $ROUNDS rounds, medians"
echo
echo "| scenario | server | ops/s | p50 µs | p99 µs | MiB/s | CPU µs/op | errors |"
echo "|---|---|---|---|---|---|---|---|"
python3 - "$RESULTS" <<'END_PY'
import sys, statistics, collections
rows = collections.OrderedDict()
for line in open(sys.argv[1]):
    scen, label, ops, p50, p99, errs, n, mib, per = line.split()
    rows.setdefault((scen, label), []).append((float(ops), int(p50), int(p99), float(mib), int(per), int(errs)))
for (scen, label), rs in rows.items():
    med = lambda i: statistics.median(r[i] for r in rs)
    print("| %s | %s | %.0f | %.0f | %.0f | %.1f | %.0f | %d |" % (scen, label, med(0), med(1), med(2), med(3), med(4), sum(r[5] for r in rs)))
END_PY
