#!/bin/bash
# bench/grpc.sh: gRPC unary calls through edged and through nginx's
# grpc_pass (Debian's nginx has the gRPC module), both in front of the same
# grpc-go server (bench/grpcecho), and straight to that server ("direct"),
# on loopback. The client is h2load
# (nghttp2-client) speaking HTTP/2 in cleartext to the proxy and sending
# Say's request as a framed gRPC message (POST, application/grpc, TE:
# trailers); each proxy speaks h2c to the server over kept-alive
# connections.
#
#	bench/grpc.sh            measure and print the table
#	bench/grpc.sh profile    also record edged's CPU profile with perf during
#	                         one extra run and print where the time goes
#
# Each proxy runs on CPU 0 with one worker (nginx worker_processes 1,
# edged GOMAXPROCS=1); h2load and the gRPC server run on CPU 1. Runs
# interleave (direct, edged, nginx, direct, ...) after a warm-up; the table shows
# medians and the CPU each call cost the proxy (user+system of its process
# group over the run), which stays meaningful on a busy machine where
# calls/s does not. Before measuring, one call through each proxy must come
# back with status OK (grpcecho -call).
#
# Env: DURATION (s per run, default 5), ROUNDS (3), CONNS (16), STREAMS
# (10), EDGED (a binary; by default built from the tree), BENCH_KEEP=1
# keeps the temp dir. Installs what is missing with apt (root).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-16}
STREAMS=${STREAMS:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODE=${1:-measure}
case $MODE in measure | profile) ;; *)
	echo "usage: $0 [profile]" >&2
	exit 2
	;;
esac

bench_init grpc
bench_need nginx nginx-light
bench_need h2load nghttp2-client
bench_need taskset util-linux
bench_need setsid util-linux
bench_need python3 python3
[ "$MODE" = profile ] && bench_need perf linux-perf
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
TMP=$BENCH_TMP

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P_UP=$(freeport)
declare -A PORT PID
PORT[edged]=$(freeport)
PORT[nginx]=$(freeport)
PORT[direct]=$P_UP

bench_log "building edged and bench/grpcecho"
if [ -n "${EDGED:-}" ]; then cp "$EDGED" "$TMP/edged"; else (cd "$ROOT" && go build -o "$TMP/edged" ./edged); fi
(cd "$ROOT" && go build -o "$TMP/grpcecho" ./bench/grpcecho)
"$TMP/grpcecho" -frame hello >"$TMP/say.bin"

mkdir -p "$TMP/ngx"
# keepalive_requests: nginx ends an HTTP/2 connection after 1000 requests
# by default and h2load does not reconnect. listen ... http2 without ssl
# is HTTP/2 with prior knowledge (h2c).
cat >"$TMP/ngx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/ngx/nginx.pid;
error_log $TMP/ngx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  http2_max_concurrent_streams 128;
  client_body_temp_path $TMP/ngx/client_body;
  upstream g { server 127.0.0.1:$P_UP; keepalive 64; }
  server {
    listen 127.0.0.1:${PORT[nginx]} http2;
    location / { grpc_pass grpc://g; }
  }
}
EOF
cat >"$TMP/edged.toml" <<EOF
[server]
http = ["127.0.0.1:${PORT[edged]}"]
https = []
h2c = true
admin = ""
log_level = "warn"

[tls]
storage = "$TMP/edged-state"

[[site]]
hosts = ["127.0.0.1"]
tls = "off"
  [[site.route]]
  path = "/"
  upstream = "g"
  compress = false

[upstream.g]
servers = ["127.0.0.1:$P_UP"]
protocol = "h2c"
EOF

start() { # label, then the command; in its own process group
	local label=$1
	shift
	setsid "$@" >"$TMP/$label.log" 2>&1 &
	bench_track $!
	PID[$label]=$!
}
start upstream taskset -c 1 "$TMP/grpcecho" -listen "127.0.0.1:$P_UP"
start edged env GOMAXPROCS=1 taskset -c 0 "$TMP/edged" -config "$TMP/edged.toml"
start nginx taskset -c 0 "$NGINX" -c "$TMP/ngx/nginx.conf" -p "$TMP/ngx"
for s in direct edged nginx; do
	ok=
	for _ in $(seq 100); do
		if out=$("$TMP/grpcecho" -call "127.0.0.1:${PORT[$s]}" -msg hello 2>&1); then ok=1 && break; fi
		sleep 0.1 # polling a child process that is starting
	done
	[ -n "$ok" ] && [ "${out%% *}" = "echo:hello" ] || {
		tail -n 5 "$TMP"/*.log >&2
		bench_die "a call through $s did not come back OK: $out"
	}
done

# one LABEL DURATION [record]: one h2load run against LABEL; with record,
# appends "LABEL CALLS/S P50_US P99_US FAILED DONE CPU_US_PER_CALL UP_CPU_US_PER_CALL".
one() {
	local s=$1 d=$2 c0=0 c1=0 u0 u1 out
	[ "$s" != direct ] && c0=$(bench_cpu_us "${PID[$s]}")
	u0=$(bench_cpu_us "${PID[upstream]}")
	out=$(timeout $((d + 60)) taskset -c 1 h2load -c "$CONNS" -m "$STREAMS" -t 1 -D "$d" \
		-d "$TMP/say.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
		--log-file="$TMP/h2load.log" "http://127.0.0.1:${PORT[$s]}/edged.test.Echo/Say" 2>&1) || true
	[ "$s" != direct ] && c1=$(bench_cpu_us "${PID[$s]}")
	u1=$(bench_cpu_us "${PID[upstream]}")
	[ -n "${BENCH_VERBOSE:-}" ] && echo "$out" >&2
	[ "${3:-}" = record ] || return 0
	python3 - "$s" "$((c1 - c0))" "$((u1 - u0))" "$TMP/h2load.log" "$out" >>"$BENCH_RESULTS" <<'END_PY'
import sys, re
label, cpu, upcpu, log, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
rps = float(re.search(r"finished in [0-9.]+\w+, ([0-9.]+) req/s", out).group(1)) if "finished in" in out else 0
m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
done, ok, failed, errored = (int(x) for x in m.groups()) if m else (0, 0, 0, 0)
st = re.search(r"status codes: \d+ 2xx, \d+ 3xx, (\d+) 4xx, (\d+) 5xx", out)
bad = failed + errored + (int(st.group(1)) + int(st.group(2)) if st else 0)
lat = sorted(int(l.split()[2]) for l in open(log) if len(l.split()) == 3)
pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else 0
print(label, round(rps), pct(0.5), pct(0.99), bad, done, "%.1f" % (cpu / done if done else 0), "%.1f" % (upcpu / done if done else 0))
END_PY
	tail -1 "$BENCH_RESULTS" | awk '{ printf "grpc.sh: %s %s calls/s, p50 %s µs, p99 %s µs, failed %s, %s done, %s µs proxy CPU/call, %s µs server CPU/call\n", $1, $2, $3, $4, $5, $6, $7, $8 }' >&2
}

for s in direct edged nginx; do one "$s" 2; done # warm-up
for r in $(seq "$ROUNDS"); do
	for s in direct edged nginx; do one "$s" "$DURATION" record; done
done
if [ "$MODE" = profile ]; then
	perf record -F 999 -g -p "${PID[edged]}" -o "$TMP/perf.data" -- sleep "$DURATION" >/dev/null 2>&1 &
	perfpid=$!
	one edged "$DURATION"
	wait "$perfpid" || true
	echo "where edged's time goes (perf, self):" >&2
	perf report -i "$TMP/perf.data" --no-children --percent-limit 1 --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -40 >&2
	perf report -i "$TMP/perf.data" --children --percent-limit 4 --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -50 >&2
fi
# Still answering with status OK after the load?
for s in direct edged nginx; do
	out=$("$TMP/grpcecho" -call "127.0.0.1:${PORT[$s]}" -msg after 2>&1) || bench_die "a call through $s after the load failed: $out"
done

echo
echo "gRPC unary (h2load -c $CONNS -m $STREAMS, h2c to the proxy, h2c to a grpc-go server); ${DURATION}s x $ROUNDS rounds, medians"
echo "$(bench_machine); load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "nginx $("$NGINX" -v 2>&1 | sed 's/.*\///') (grpc_pass, keepalive 64), h2load $(h2load --version | awk '{ print $2 }')"
echo
python3 - "$BENCH_RESULTS" <<'END_PY'
import sys, statistics, collections
rows = collections.OrderedDict()
for line in open(sys.argv[1]):
    label, rps, p50, p99, bad, done, cpu, upcpu = line.split()
    rows.setdefault(label, []).append((float(rps), int(p50), int(p99), int(bad), float(cpu), float(upcpu)))
med = lambda rs, i: statistics.median(r[i] for r in rs)
base = rows.get("nginx")
print("| proxy | calls/s | vs nginx | p50 | p99 | proxy CPU/call | vs nginx | server CPU/call | failed |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for label, rs in rows.items():
    rps, cpu = med(rs, 0), med(rs, 4)
    vs = "%.2fx" % (rps / med(base, 0)) if base and med(base, 0) else "n/a"
    vc = "%.2fx" % (cpu / med(base, 4)) if base and med(base, 4) else "n/a"
    if label == "direct":
        cpus, vc = "n/a", "n/a"
    else:
        cpus = "%.1f µs" % cpu
    print("| %s | %.0f | %s | %d µs | %d µs | %s | %s | %.1f µs | %d |" % (label, rps, vs, med(rs, 1), med(rs, 2), cpus, vc, med(rs, 5), sum(r[3] for r in rs)))
END_PY
