#!/usr/bin/env bash
# bench/proxy.sh: edged against Debian's nginx, configured alike, on loopback.
#
#	bench/proxy.sh            measure and print the table (what `make bench` runs)
#	bench/proxy.sh profile    also record edged's CPU profile with perf under
#	                          the proxy and static loads and print where the time goes
#
# Scenarios: (1) reverse proxy to a keep-alive upstream, with BENCH_CONNS
# (64) clients and (proxy-c256) with 256, (2) a 1 KiB static file, (3) the
# seed's own arrangement: gunicorn with 2 sync workers behind each proxy,
# on TCP (gunicorn) and on a unix socket (gunicorn-unix); sync workers
# answer Connection: close, so every request opens a new upstream
# connection. The keep-alive scenarios' upstream is a separate nginx (1
# worker) on another loopback port answering a fixed 99-byte body; nginx
# proxies to gunicorn as gunicorn's documentation configures it. Runs
# interleave (edged, nginx, edged, nginx, ...) after a warm-up; the table
# shows medians, and the upstream's CPU per request beside each proxy's.
# It never fails because a number is low, only when a server cannot start.
#
# Also measured in both scenarios, unless BENCH_REFERENCE=0: two
# reference proxies in Go from bench/upstream (go-nethttp: bare net/http
# server + Transport; go-raw: bare HTTP/1.1 on net.Conn; go-hybrid, proxy
# only: net/http's server with go-raw's upstream exchange), which tell the
# cost of the HTTP engine from the cost of edged's own code.
#
# Environment: EDGED (binary; default: built from the tree, unstripped),
# BENCH_ROUNDS, BENCH_DURATION, BENCH_WARMUP, BENCH_CONNS, BENCH_THREADS
# (see bench/lib.sh), BENCH_SCENARIOS ("proxy proxy-c256 static-1KiB gunicorn
# gunicorn-unix"), EDGED_ENV (extra environment for edged, e.g. "GOGC=400"
# for experiments), BENCH_PORT_BASE (default 18280: +0 edged, +1 upstream,
# +2..+4 references, +5 gunicorn, +6 edged-base, +10 nginx), BENCH_KEEP=1
# keeps the temp dir, BENCH_VERBOSE=1 shows wrk. EDGED_BASE=binary runs a
# second edged ("edged-base", e.g. a build of main) in every scenario, for
# a before/after in the same run.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

mode=${1:-measure}
case $mode in measure | profile) ;; *)
	echo "usage: $0 [profile]" >&2
	exit 2
	;;
esac

bench_init proxy
bench_need curl
bench_need wrk
bench_need nginx
[ "$mode" = profile ] && bench_need perf linux-perf

scenarios=${BENCH_SCENARIOS:-proxy proxy-c256 static-1KiB gunicorn gunicorn-unix}
want() { case " $scenarios " in *" $1 "*) return 0 ;; esac; return 1; }
with_gunicorn=
if want gunicorn || want gunicorn-unix; then
	with_gunicorn=1
	bench_need gunicorn
fi

base=${BENCH_PORT_BASE:-18280}
edged_port=$base
upstream_port=$((base + 1))
gunicorn_port=$((base + 5))
nginx_port=$((base + 10))
base_port=
[ -n "${EDGED_BASE:-}" ] && base_port=$((base + 6))
for p in "$edged_port" "$upstream_port" "$((base + 2))" "$((base + 3))" "$((base + 4))" "$gunicorn_port" "$nginx_port" $base_port; do
	if ss -Htln "sport = :$p" 2>/dev/null | grep -q .; then
		bench_die "port 127.0.0.1:$p is taken; set BENCH_PORT_BASE to a free range"
	fi
done

nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
if [ -n "${EDGED:-}" ]; then
	edged_bin=$EDGED
else
	# Build from the tree as it is (perf needs the symbol table, so no -s -w);
	# fall back to bin/edged when the tree does not build right now.
	edged_bin=$BENCH_TMP/edged
	bench_log "building edged from $root"
	if ! (cd "$root" && go build -trimpath -o "$edged_bin" ./edged); then
		[ -x "$root/bin/edged" ] || bench_die "building edged failed and there is no bin/edged"
		bench_log "WARNING: building edged failed; measuring $root/bin/edged instead"
		edged_bin=$root/bin/edged
	fi
fi

# nginx's workers run as nobody: the tree they read must be world-readable.
chmod 755 "$BENCH_TMP"
mkdir -p "$BENCH_TMP/static" "$BENCH_TMP/nginx" "$BENCH_TMP/upstream"
head -c 1024 /dev/urandom >"$BENCH_TMP/static/1k.bin"
chmod 644 "$BENCH_TMP/static/1k.bin"
body=$(printf "%099d" 0) # a 99-byte body, sent as is by nginx's return

# The upstream: one nginx worker answering a fixed body from memory.
cat >"$BENCH_TMP/upstream/nginx.conf" <<EOF
worker_processes 1;
${nginx_common//PREFIX/$BENCH_TMP/upstream}
http {
${nginx_http_common//PREFIX/$BENCH_TMP/upstream}
	server {
		listen 127.0.0.1:$upstream_port default_server reuseport backlog=4096;
		location / {
			default_type text/plain;
			return 200 "$body";
		}
	}
}
EOF

# gunicorn, 2 sync workers, on TCP and on a unix socket, answering the same
# 99-byte body from a minimal WSGI app.
gunicorn_sock=$BENCH_TMP/gunicorn/app.sock
gunicorn_nginx=
gunicorn_edged_routes=
gunicorn_edged_upstreams=
if [ -n "$with_gunicorn" ]; then
	mkdir -p "$BENCH_TMP/gunicorn"
	cat >"$BENCH_TMP/gunicorn/benchapp.py" <<'PY'
BODY = b"0" * 99


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "99")])
    return [BODY]
PY
	# The proxy_set_header lines of gunicorn's own nginx example, and
	# nginx's defaults otherwise (HTTP/1.0 upstream, buffering on).
	gunicorn_nginx="
		location /g/ {
			proxy_pass http://127.0.0.1:$gunicorn_port;
			proxy_set_header Host \$host;
			proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
			proxy_set_header X-Forwarded-Proto \$scheme;
			proxy_set_header X-Request-ID \$request_id;
			proxy_redirect off;
		}
		location /gu/ {
			proxy_pass http://unix:$gunicorn_sock:;
			proxy_set_header Host \$host;
			proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
			proxy_set_header X-Forwarded-Proto \$scheme;
			proxy_set_header X-Request-ID \$request_id;
			proxy_redirect off;
		}"
	gunicorn_edged_routes="
  [[site.route]]
  path = \"/g/\"
  upstream = \"gtcp\"

  [[site.route]]
  path = \"/gu/\"
  upstream = \"gunix\"
"
	gunicorn_edged_upstreams="
[upstream.gtcp]
servers = [\"127.0.0.1:$gunicorn_port\"]

[upstream.gunix]
servers = [\"unix:$gunicorn_sock\"]
"
fi

# nginx as the system under comparison: 2 workers (one per core, as edged
# uses GOMAXPROCS=2), Debian's defaults for sendfile/tcp_nopush, and the
# request headers edged adds by default (Host kept, X-Forwarded-*, Forwarded,
# a request ID echoed on the response).
cat >"$BENCH_TMP/nginx/nginx.conf" <<EOF
worker_processes 2;
${nginx_common//PREFIX/$BENCH_TMP/nginx}
http {
${nginx_http_common//PREFIX/$BENCH_TMP/nginx}
	sendfile on;
	tcp_nopush on;
	types { application/octet-stream bin; }
	default_type application/octet-stream;
	upstream app {
		server 127.0.0.1:$upstream_port;
		keepalive 256;
		keepalive_requests 1000000;
		keepalive_timeout 90s;
	}
	server {
		listen 127.0.0.1:$nginx_port default_server backlog=4096;
		location /static/ {
			alias $BENCH_TMP/static/;
			add_header X-Request-ID \$request_id always;
		}
		location / {
			proxy_pass http://app;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header Host \$host;
			proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
			proxy_set_header X-Forwarded-Proto \$scheme;
			proxy_set_header X-Forwarded-Host \$host;
			proxy_set_header Forwarded "for=\$remote_addr;host=\$host;proto=\$scheme";
			proxy_set_header X-Request-ID \$request_id;
			add_header X-Request-ID \$request_id always;
		}$gunicorn_nginx
	}
}
EOF

# max_connections_per_ip = 0: every benchmark client comes from 127.0.0.1,
# and the c256 scenario alone would sit at the default cap of 256.
cat >"$BENCH_TMP/edged.toml" <<EOF
[server]
http = ["127.0.0.1:$edged_port"]
admin = ""
max_connections_per_ip = 0

[[site]]
  [[site.route]]
  path = "/static/"
  static = "$BENCH_TMP/static"

  [[site.route]]
  path = "/"
  upstream = "app"
$gunicorn_edged_routes
[upstream.app]
servers = ["127.0.0.1:$upstream_port"]
$gunicorn_edged_upstreams
EOF

start_nginx() { # NAME; sets started_pid (no subshell: bench_track must see it)
	local dir=$BENCH_TMP/$1
	"$nginx_bin" -t -q -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" ||
		bench_die "nginx ($1) rejects its configuration: $(cat "$dir/error.log" 2>/dev/null)"
	setsid "$nginx_bin" -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' \
		>"$dir/stdout.log" 2>&1 &
	started_pid=$!
	bench_track "$started_pid"
}

start_nginx upstream
upstream_pid=$started_pid
bench_wait_http "http://127.0.0.1:$upstream_port/" ||
	bench_die "the upstream nginx did not start: $(cat "$BENCH_TMP/upstream/error.log" "$BENCH_TMP/upstream/stdout.log" 2>/dev/null)"
BENCH_UPSTREAM_PGID[proxy]=$upstream_pid
BENCH_UPSTREAM_PGID[proxy-c256]=$upstream_pid

if [ -n "$with_gunicorn" ]; then
	(cd "$BENCH_TMP/gunicorn" && exec setsid gunicorn -w 2 -k sync --bind "127.0.0.1:$gunicorn_port" \
		--bind "unix:$gunicorn_sock" --log-level warning benchapp:app) >"$BENCH_TMP/gunicorn/log" 2>&1 &
	gunicorn_pid=$!
	bench_track "$gunicorn_pid"
	bench_wait_http "http://127.0.0.1:$gunicorn_port/" ||
		bench_die "gunicorn did not start: $(cat "$BENCH_TMP/gunicorn/log")"
	chmod 666 "$gunicorn_sock" # nginx's workers run as nobody
	BENCH_UPSTREAM_PGID[gunicorn]=$gunicorn_pid
	BENCH_UPSTREAM_PGID[gunicorn-unix]=$gunicorn_pid
fi

start_nginx nginx
nginx_pid=$started_pid
bench_wait_http "http://127.0.0.1:$nginx_port/" ||
	bench_die "nginx did not start: $(cat "$BENCH_TMP/nginx/error.log" "$BENCH_TMP/nginx/stdout.log" 2>/dev/null)"

"$edged_bin" -t -config "$BENCH_TMP/edged.toml" >/dev/null ||
	bench_die "edged rejects the benchmark configuration ($BENCH_TMP/edged.toml)"
# shellcheck disable=SC2086 # EDGED_ENV is a list of VAR=value words
env GOMAXPROCS=2 ${EDGED_ENV:-} setsid "$edged_bin" -config "$BENCH_TMP/edged.toml" >"$BENCH_TMP/edged.log" 2>&1 &
edged_pid=$!
bench_track "$edged_pid"
bench_wait_http "http://127.0.0.1:$edged_port/" ||
	bench_die "edged did not start: $(tail -n 20 "$BENCH_TMP/edged.log")"

BENCH_PGID[edged]=$edged_pid
BENCH_PGID[nginx]=$nginx_pid

# bt PATH: the baseline edged's target for a scenario, if there is one.
bt() { :; }
if [ -n "$base_port" ]; then
	sed "s/127.0.0.1:$edged_port\"/127.0.0.1:$base_port\"/" "$BENCH_TMP/edged.toml" >"$BENCH_TMP/edged-base.toml"
	# shellcheck disable=SC2086 # EDGED_ENV is a list of VAR=value words
	env GOMAXPROCS=2 ${EDGED_ENV:-} setsid "$EDGED_BASE" -config "$BENCH_TMP/edged-base.toml" >"$BENCH_TMP/edged-base.log" 2>&1 &
	BENCH_PGID[edged-base]=$!
	bench_track $!
	bench_wait_http "http://127.0.0.1:$base_port/" ||
		bench_die "edged-base did not start: $(tail -n 20 "$BENCH_TMP/edged-base.log")"
	bt() { echo "edged-base=http://127.0.0.1:$base_port$1"; }
fi

# Reference proxies in Go (bench/upstream): a bare net/http reverse proxy and
# a bare HTTP/1.1 proxy on net.Conn. They split edged's cost into the HTTP
# engine's and its own.
ref_targets=() ref_static=()
if [ "${BENCH_REFERENCE:-1}" != 0 ]; then
	if (cd "$root" && go build -o "$BENCH_TMP/refproxy" ./bench/upstream); then
		for m in nethttp raw hybrid; do
			case $m in nethttp) p=$((base + 2)) ;; raw) p=$((base + 3)) ;; hybrid) p=$((base + 4)) ;; esac
			env GOMAXPROCS=2 setsid "$BENCH_TMP/refproxy" -mode $m -listen "127.0.0.1:$p" \
				-upstream "127.0.0.1:$upstream_port" -static "$BENCH_TMP/static" >"$BENCH_TMP/ref-$m.log" 2>&1 &
			bench_track $!
			BENCH_PGID[go-$m]=$!
			bench_wait_http "http://127.0.0.1:$p/" ||
				bench_die "the reference proxy ($m) did not start: $(cat "$BENCH_TMP/ref-$m.log")"
			ref_targets+=("go-$m=http://127.0.0.1:$p/")
			# hybrid differs from nethttp only on the upstream side.
			[ $m = hybrid ] || ref_static+=("go-$m=http://127.0.0.1:$p/static/1k.bin")
		done
	else
		bench_log "WARNING: building bench/upstream failed; no reference proxies"
	fi
fi

# A wrong answer is not a performance result: say so before measuring it.
check() { # LABEL URL WANT_BYTES
	local got
	got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' --max-time 5 "$2" || echo "000 0")
	if [ "$got" != "200 $3" ]; then
		bench_log "WARNING: $1 answered $2 with status/bytes '$got', want '200 $3'; its numbers below count non-2xx"
	fi
}
check upstream "http://127.0.0.1:$upstream_port/" 99
check edged "http://127.0.0.1:$edged_port/" 99
check nginx "http://127.0.0.1:$nginx_port/" 99
check edged "http://127.0.0.1:$edged_port/static/1k.bin" 1024
check nginx "http://127.0.0.1:$nginx_port/static/1k.bin" 1024
if [ -n "$with_gunicorn" ]; then
	for p in g gu; do
		check edged "http://127.0.0.1:$edged_port/$p/" 99
		check nginx "http://127.0.0.1:$nginx_port/$p/" 99
	done
fi
for t in ${ref_targets[@]+"${ref_targets[@]}"}; do check "${t%%=*}" "${t#*=}" 99; done
for t in ${ref_static[@]+"${ref_static[@]}"}; do check "${t%%=*}" "${t#*=}" 1024; done

machine=$(bench_machine)
load0=$(bench_load)
conns=$BENCH_CONNS threads=$BENCH_THREADS dur=$BENCH_DURATION rounds=$BENCH_ROUNDS
bench_log "machine: $machine"
bench_log "edged $("$edged_bin" -version 2>/dev/null || true) (GOMAXPROCS=2 ${EDGED_ENV:-}), $("$nginx_bin" -v 2>&1 | sed 's/.*: //') (worker_processes 2), upstream nginx (1 worker)"
bench_log "wrk -t$threads -c$conns -d$dur --latency, $rounds interleaved rounds after a $BENCH_WARMUP warm-up"

if want proxy; then
	bench_interleave "proxy" "$rounds" "$dur" "$conns" "$threads" \
		"edged=http://127.0.0.1:$edged_port/" "nginx=http://127.0.0.1:$nginx_port/" $(bt /) ${ref_targets[@]+"${ref_targets[@]}"}
fi
if want proxy-c256; then
	bench_interleave "proxy-c256" "$rounds" "$dur" 256 "$threads" \
		"edged=http://127.0.0.1:$edged_port/" "nginx=http://127.0.0.1:$nginx_port/" $(bt /) ${ref_targets[@]+"${ref_targets[@]}"}
fi
if want static-1KiB; then
	bench_interleave "static-1KiB" "$rounds" "$dur" "$conns" "$threads" \
		"edged=http://127.0.0.1:$edged_port/static/1k.bin" "nginx=http://127.0.0.1:$nginx_port/static/1k.bin" \
		$(bt /static/1k.bin) ${ref_static[@]+"${ref_static[@]}"}
fi
if want gunicorn; then
	bench_interleave "gunicorn" "$rounds" "$dur" "$conns" "$threads" \
		"edged=http://127.0.0.1:$edged_port/g/" "nginx=http://127.0.0.1:$nginx_port/g/" $(bt /g/)
fi
if want gunicorn-unix; then
	bench_interleave "gunicorn-unix" "$rounds" "$dur" "$conns" "$threads" \
		"edged=http://127.0.0.1:$edged_port/gu/" "nginx=http://127.0.0.1:$nginx_port/gu/" $(bt /gu/)
fi

echo
echo "edged vs nginx on loopback: $machine"
echo "load average before: $load0, after: $(bench_load) (anything above ~0.1 before means other work shared the cores)"
echo "wrk -t$threads -c$conns -d$dur, median of $rounds interleaved runs each; edged GOMAXPROCS=2, nginx worker_processes 2;"
echo "upstream: nginx, 1 worker, fixed 99-byte body, kept alive by every proxy (nginx: keepalive 256; edged: its default pool). CPU/req = the server's user+sys CPU / requests."
[ -n "$with_gunicorn" ] && echo "gunicorn: $(gunicorn --version 2>&1 | head -n1) -w 2 -k sync, the same 99-byte body from a WSGI app, on TCP and a unix socket (Connection: close: a new upstream connection per request)."
[ ${#ref_targets[@]} -gt 0 ] && echo "go-*: references from bench/upstream, GOMAXPROCS=2: nethttp = bare net/http (Transport; http.FileServer), raw = bare HTTP/1.1 on net.Conn, hybrid = net/http server + raw upstream exchange."
echo
bench_table nginx

if grep -qiE 'panic|fatal' "$BENCH_TMP/edged.log"; then
	echo
	echo "edged logged a panic or fatal error during the run:"
	grep -iE -m 5 'panic|fatal' "$BENCH_TMP/edged.log"
fi

if [ "$mode" = profile ]; then
	prof() { # NAME URL
		local data=$BENCH_TMP/perf-$1.data
		bench_log "profiling edged under the $1 load (perf, 10s)"
		perf record -q -F 999 -g -p "$edged_pid" -o "$data" -- sleep 10 >/dev/null 2>&1 &
		local perf_pid=$!
		bench_wrk "$2" 10s "$conns" "$threads" >/dev/null
		wait "$perf_pid" || true
		echo
		echo "== edged, $1: functions by own CPU (perf, flat) =="
		perf report -i "$data" --stdio --no-children --sort symbol --percent-limit 0.7 -g none 2>/dev/null |
			grep -v '^#' | grep -v '^$' | head -n 45 || true
		echo
		echo "== edged, $1: by cumulative CPU (self + callees) =="
		perf report -i "$data" --stdio --children --sort symbol --percent-limit 4 -g none 2>/dev/null |
			grep -v '^#' | grep -v '^$' | head -n 45 || true
	}
	# Syscalls and context switches per request, both servers: where the
	# kernel share of the CPU comes from.
	percount() { # LABEL PGID URL
		local out=$BENCH_TMP/perfstat-$1 res n u0 s0 u1 s1
		perf stat -x, -e raw_syscalls:sys_enter,context-switches,task-clock \
			-p "$(pgrep -d, -g "$2")" -o "$out" -- sleep 6 >/dev/null 2>&1 &
		local perf_pid=$!
		sleep 0.5
		u0=$(bench_cpu_us "$2" user) s0=$(bench_cpu_us "$2" sys)
		res=$(bench_wrk "$3" 5s "$conns" "$threads")
		u1=$(bench_cpu_us "$2" user) s1=$(bench_cpu_us "$2" sys)
		wait "$perf_pid" || true
		n=${res##* }
		awk -F, -v n="$n" -v l="$1" -v u="$((u1 - u0))" -v k="$((s1 - s0))" '
			$3 ~ /sys_enter/ { sc = $1 } $3 ~ /context-switches/ { cs = $1 }
			END { if (n > 0) printf "| %s | %.2f | %.3f | %.1f µs | %.1f µs | %.1f µs |\n", l, sc / n, cs / n, (u + k) / n, u / n, k / n }' "$out"
	}
	prof proxy "http://127.0.0.1:$edged_port/"
	prof static "http://127.0.0.1:$edged_port/static/1k.bin"
	echo
	echo "== per request, perf stat over a 5s wrk run (all threads of the server) =="
	echo "| server, scenario | syscalls | context switches | CPU | user | kernel |"
	echo "|---|---:|---:|---:|---:|---:|"
	percount "edged, proxy" "$edged_pid" "http://127.0.0.1:$edged_port/"
	percount "nginx, proxy" "$nginx_pid" "http://127.0.0.1:$nginx_port/"
	for t in ${ref_targets[@]+"${ref_targets[@]}"}; do
		percount "${t%%=*}, proxy" "${BENCH_PGID[${t%%=*}]}" "${t#*=}"
	done
	percount "edged, static-1KiB" "$edged_pid" "http://127.0.0.1:$edged_port/static/1k.bin"
	percount "nginx, static-1KiB" "$nginx_pid" "http://127.0.0.1:$nginx_port/static/1k.bin"
	for t in ${ref_static[@]+"${ref_static[@]}"}; do
		percount "${t%%=*}, static-1KiB" "${BENCH_PGID[${t%%=*}]}" "${t#*=}"
	done
fi
