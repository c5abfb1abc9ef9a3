#!/usr/bin/env bash
# bench/shield.sh: does the edge shield gunicorn's sync workers from slow
# clients? (issue 11)
#
# gunicorn with 2 sync workers serves a small WSGI app behind edged (its
# defaults: request and response buffering on) and behind nginx (its
# defaults: proxy_request_buffering and proxy_buffering on). Fast clients
# (wrk) measure req/s alone, then again while slow clients are connected:
# 8 uploaders each sending a 64 KiB body at 1 KiB/s and 4 readers each
# reading a 16 MiB response at about 20 KiB/s (bench/slowclients). A proxy
# that passes slow clients through to the app leaves no worker for the
# fast ones; a shield keeps their throughput. Rounds interleave (edged
# alone, edged with slow clients, nginx alone, nginx with slow clients).
#
#	bench/shield.sh
#
# Environment: EDGED (binary; default: built from the tree), BENCH_ROUNDS
# (3), BENCH_DURATION (10s), BENCH_WARMUP (3s), BENCH_CONNS (32: the fast
# clients), BENCH_THREADS (2), SHIELD_SETTLE (5: seconds the slow clients
# get to take their places before the fast ones are measured),
# BENCH_PORT_BASE (18380: +0 edged, +1 gunicorn, +10 nginx), BENCH_KEEP=1
# keeps the temp dir, BENCH_VERBOSE=1 shows wrk. It fails only when a
# server cannot start, never because of a number.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
BENCH_CONNS=${BENCH_CONNS:-32}
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

bench_init shield
bench_need curl
bench_need wrk
bench_need nginx
bench_need gunicorn

settle=${SHIELD_SETTLE:-5}
base=${BENCH_PORT_BASE:-18380}
edged_port=$base
gunicorn_port=$((base + 1))
nginx_port=$((base + 10))
for p in "$edged_port" "$gunicorn_port" "$nginx_port"; do
	if ss -Htln "sport = :$p" 2>/dev/null | grep -q .; then
		bench_die "port 127.0.0.1:$p is taken; set BENCH_PORT_BASE to a free range"
	fi
done

nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
if [ -n "${EDGED:-}" ]; then
	edged_bin=$EDGED
else
	edged_bin=$BENCH_TMP/edged
	bench_log "building edged from $root"
	(cd "$root" && go build -trimpath -o "$edged_bin" ./edged) || bench_die "building edged failed"
fi
(cd "$root" && go build -o "$BENCH_TMP/slowclients" ./bench/slowclients) || bench_die "building bench/slowclients failed"

chmod 755 "$BENCH_TMP"
mkdir -p "$BENCH_TMP/app" "$BENCH_TMP/nginx" "$BENCH_TMP/edged-tmp"
cat >"$BENCH_TMP/app/shieldapp.py" <<'PY'
SMALL = b"0" * 99
CHUNK = b"x" * 65536
BIG = 16 << 20


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/upload":
        n = 0
        body = environ["wsgi.input"]
        while True:
            b = body.read(65536)
            if not b:
                break
            n += len(b)
        out = str(n).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
        return [out]
    if path == "/big":
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(BIG))])
        return (CHUNK for _ in range(BIG // len(CHUNK)))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "99")])
    return [SMALL]
PY

# nginx with its defaults for everything under test: request and response
# buffering on, client_body_buffer_size, proxy_buffers and
# proxy_max_temp_file_size as Debian ships them.
cat >"$BENCH_TMP/nginx/nginx.conf" <<EOF
worker_processes 2;
${nginx_common//PREFIX/$BENCH_TMP/nginx}
http {
${nginx_http_common//PREFIX/$BENCH_TMP/nginx}
	upstream app {
		server 127.0.0.1:$gunicorn_port;
	}
	server {
		listen 127.0.0.1:$nginx_port default_server backlog=4096;
		location / {
			proxy_pass http://app;
			proxy_set_header Host \$host;
			proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
			proxy_set_header X-Forwarded-Proto \$scheme;
			proxy_redirect off;
		}
	}
}
EOF

# edged with its defaults; temp_dir is set only to keep the files in the
# benchmark's directory.
cat >"$BENCH_TMP/edged.toml" <<EOF
[server]
http = ["127.0.0.1:$edged_port"]
admin = ""
temp_dir = "$BENCH_TMP/edged-tmp"

[[site]]
  [[site.route]]
  path = "/"
  upstream = "app"

[upstream.app]
servers = ["127.0.0.1:$gunicorn_port"]
EOF

(cd "$BENCH_TMP/app" && exec setsid gunicorn -w 2 -k sync --bind "127.0.0.1:$gunicorn_port" \
	--log-level warning shieldapp:app) >"$BENCH_TMP/app/log" 2>&1 &
gunicorn_pid=$!
bench_track "$gunicorn_pid"
bench_wait_http "http://127.0.0.1:$gunicorn_port/" || bench_die "gunicorn did not start: $(cat "$BENCH_TMP/app/log")"

"$nginx_bin" -t -q -e "$BENCH_TMP/nginx/error.log" -p "$BENCH_TMP/nginx" -c "$BENCH_TMP/nginx/nginx.conf" ||
	bench_die "nginx rejects its configuration: $(cat "$BENCH_TMP/nginx/error.log")"
setsid "$nginx_bin" -e "$BENCH_TMP/nginx/error.log" -p "$BENCH_TMP/nginx" -c "$BENCH_TMP/nginx/nginx.conf" \
	-g 'daemon off;' >"$BENCH_TMP/nginx/stdout.log" 2>&1 &
nginx_pid=$!
bench_track "$nginx_pid"
bench_wait_http "http://127.0.0.1:$nginx_port/" || bench_die "nginx did not start: $(cat "$BENCH_TMP/nginx/error.log")"

"$edged_bin" -t -config "$BENCH_TMP/edged.toml" >/dev/null || bench_die "edged rejects $BENCH_TMP/edged.toml"
env GOMAXPROCS=2 setsid "$edged_bin" -config "$BENCH_TMP/edged.toml" >"$BENCH_TMP/edged.log" 2>&1 &
edged_pid=$!
bench_track "$edged_pid"
bench_wait_http "http://127.0.0.1:$edged_port/" || bench_die "edged did not start: $(tail -n 20 "$BENCH_TMP/edged.log")"

for t in "edged $edged_port" "nginx $nginx_port"; do
	set -- $t # "label port"
	got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' --max-time 10 "http://127.0.0.1:$2/big")
	[ "$got" = "200 16777216" ] || bench_log "WARNING: $1 answered /big with '$got'"
	got=$(curl -s --max-time 10 --data-binary @<(head -c 65536 /dev/zero) "http://127.0.0.1:$2/upload")
	[ "$got" = 65536 ] || bench_log "WARNING: $1 answered /upload with '$got'"
done

declare -A port=([edged]=$edged_port [nginx]=$nginx_port)
declare -A pgid=([edged]=$edged_pid [nginx]=$nginx_pid)
dur=$BENCH_DURATION rounds=$BENCH_ROUNDS conns=$BENCH_CONNS threads=$BENCH_THREADS
slowsecs=$((settle + ${dur%s} + 30))
machine=$(bench_machine)
load0=$(bench_load)
bench_log "machine: $machine"

# One measured run of the fast clients against LABEL in phase SCEN.
measure() { # SCEN LABEL ROUND
	local c0 c1 res cpu url="http://127.0.0.1:${port[$2]}/"
	c0=$(bench_cpu_us "${pgid[$2]}")
	res=$(bench_wrk "$url" "$dur" "$conns" "$threads")
	c1=$(bench_cpu_us "${pgid[$2]}")
	cpu=$(awk -v c="$((c1 - c0))" -v n="${res##* }" 'BEGIN { printf "%.1f", (n > 0 ? c / n : 0) }')
	# shellcheck disable=SC2086 # $res is the list of fields
	bench_log "$1: round $3 $2: $(_bench_fmt_run $res), $cpu µs CPU/request"
	echo "$1 $2 $3 $res $cpu 0" >>"$BENCH_RESULTS"
}

for label in edged nginx; do
	bench_log "warming $label ($BENCH_WARMUP)"
	bench_wrk "http://127.0.0.1:${port[$label]}/" "$BENCH_WARMUP" "$conns" "$threads" >/dev/null
done
slow_summary=$BENCH_TMP/slow-summary
: >"$slow_summary"
# with_slow LABEL ROUND: the fast run while the slow clients are connected.
with_slow() {
	"$BENCH_TMP/slowclients" -addr "127.0.0.1:${port[$1]}" -uploaders 8 -upload-size 65536 \
		-upload-rate 1024 -readers 4 -read-path /big -read-rate 20480 -duration "${slowsecs}s" \
		>"$BENCH_TMP/slow.out" 2>&1 &
	local slow=$!
	sleep "$settle" # the slow clients take their places
	measure slow "$1" "$2"
	kill -TERM "$slow" 2>/dev/null || true
	wait "$slow" || true
	echo "$1 round $2: $(cat "$BENCH_TMP/slow.out")" >>"$slow_summary"
}
# The order alternates (alone then slow, then slow then alone; edged then
# nginx, then nginx then edged), so that load from elsewhere that rises or
# falls during the run does not favour one phase or one server.
for ((r = 1; r <= rounds; r++)); do
	order="edged nginx"
	[ $((r % 2)) = 0 ] && order="nginx edged"
	for label in $order; do
		if [ $((r % 2)) = 1 ]; then
			measure alone "$label" "$r"
			with_slow "$label" "$r"
		else
			with_slow "$label" "$r"
			measure alone "$label" "$r"
		fi
	done
done

echo
echo "Shielding gunicorn -w 2 -k sync from slow clients, on loopback: $machine"
echo "load average before: $load0, after: $(bench_load)"
echo "fast clients: wrk -t$threads -c$conns -d$dur on a 99-byte response, median of $rounds interleaved rounds;"
echo "slow clients: 8 uploading 64 KiB at 1 KiB/s, 4 reading 16 MiB at 20 KiB/s, connected ${settle}s before and during the fast run."
echo "edged: defaults (GOMAXPROCS=2); nginx: defaults, worker_processes 2. CPU/req = the edge's CPU over the fast requests."
echo
bench_table nginx
echo
echo "| server | req/s alone | req/s with slow clients | kept | failed fast requests (with slow clients) | CPU/req alone | CPU/req with slow clients |"
echo "|---|---:|---:|---:|---:|---:|---:|"
awk '
	function median(s,   n, i, j, t, a) {
		n = split(s, a, " ")
		for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	{ rps[$1, $2] = rps[$1, $2] " " $4; cpu[$1, $2] = cpu[$1, $2] " " $10; if ($1 == "slow") bad[$2] += $7 + $8; seen[$2] = 1 }
	END {
		for (l in seen) {
			a = median(rps["alone", l]); s = median(rps["slow", l])
			printf "| %s | %d | %d | %.2f | %d | %.1f µs | %.1f µs |\n", l, a, s, (a > 0 ? s / a : 0), bad[l], median(cpu["alone", l]), median(cpu["slow", l])
		}
	}' "$BENCH_RESULTS" | sort
echo
echo "slow clients, per phase:"
sed 's/^/  /' "$slow_summary"
