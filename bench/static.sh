#!/usr/bin/env bash
# bench/static.sh: edged's HTTP engine and static files against Debian's
# nginx, Caddy and HAProxy, on loopback.
#
#	bench/static.sh
#
# Scenarios (BENCH_SCENARIOS, default all):
#   static-1KiB  a 1 KiB file, kept-alive connections (wrk -c64)
#   static-1MiB  a 1 MiB file, kept-alive connections (wrk -c64)
#   tls-keepalive  the 1 KiB file over HTTPS (TLS 1.3, ECDSA P-256), kept alive
#   tls-new-conn   the same with a new TLS connection per request (a full
#                handshake each: wrk neither keeps nor resumes sessions)
#   idle         memory: IDLE_CONNS (10000) kept-alive connections that
#                each made one request for the 1 KiB file, then wait; the
#                servers' RSS and PSS growth per connection
# Runs interleave (edged, nginx, ..., edged, nginx, ...) after a warm-up;
# the tables show medians. Every row has the server's CPU per request.
#
# Servers: edged (GOMAXPROCS=2, its defaults: open-file cache for small
# files, sendfile for large ones); nginx (worker_processes 2, Debian's
# sendfile on and tcp_nopush on, no open_file_cache); nginx-ofc (the same
# with open_file_cache, the equivalent of edged's cache); caddy
# (file_server, GOMAXPROCS=2); haproxy (nbthread 2; it serves no files:
# "http-request return ... file" answers from a copy loaded at start, so
# it is the memory-cache bound, 1 KiB only).
#
# Environment: EDGED (binary; default: built from the tree), BENCH_ROUNDS,
# BENCH_DURATION, BENCH_WARMUP, BENCH_CONNS, BENCH_THREADS (bench/lib.sh),
# BENCH_SCENARIOS, IDLE_CONNS, IDLE_SETTLE (seconds between the last
# connection and the memory reading, default 15: edged gives the stacks of
# the goroutines that parked connections no longer need back to the kernel
# up to 10s after the wave), IDLE_SERVERS (default: every server, e.g.
# "edged nginx-ofc"), BENCH_PORT_BASE (default 18480), BENCH_KEEP=1.
# EDGED_BASE=binary adds a second edged ("edged-base", e.g. a build of
# main; port base+5) to static-1KiB and idle, for a before/after in the
# same run.
# It fails only when a server cannot start, never because of a number.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

bench_init static
bench_need curl
bench_need wrk
bench_need nginx
bench_need caddy
bench_need haproxy

base=${BENCH_PORT_BASE:-18480}
p_edged=$base p_nginx=$((base + 1)) p_ofc=$((base + 2)) p_caddy=$((base + 3)) p_haproxy=$((base + 4)) p_base=$((base + 5))
# HTTPS listeners: +10.
s_edged=$((base + 10)) s_nginx=$((base + 11)) s_caddy=$((base + 13)) s_haproxy=$((base + 14))
for p in "$p_edged" "$p_nginx" "$p_ofc" "$p_caddy" "$p_haproxy" "$s_edged" "$s_nginx" "$s_caddy" "$s_haproxy"; do
	if ss -Htln "sport = :$p" 2>/dev/null | grep -q .; then
		bench_die "port 127.0.0.1:$p is taken; set BENCH_PORT_BASE to a free range"
	fi
done
idle_n=${IDLE_CONNS:-10000}
# The client and each server hold idle_n descriptors, HAProxy two per
# connection: it gets as many connections as the descriptor limit allows.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fdlim=$(ulimit -n)
haproxy_max=$(((fdlim - 100) / 2))
scenarios=${BENCH_SCENARIOS:-static-1KiB static-1MiB tls-keepalive tls-new-conn idle}

if [ -n "${EDGED:-}" ]; then
	edged_bin=$EDGED
else
	edged_bin=$BENCH_TMP/edged
	bench_log "building edged from $root"
	(cd "$root" && go build -trimpath -o "$edged_bin" ./edged) || bench_die "building edged failed"
fi
(cd "$root" && go build -o "$BENCH_TMP/idleconns" ./bench/idleconns) || bench_die "building bench/idleconns failed"

chmod 755 "$BENCH_TMP"
mkdir -p "$BENCH_TMP/www/static" "$BENCH_TMP/nginx" "$BENCH_TMP/nginx-ofc" "$BENCH_TMP/caddy"
head -c 1024 /dev/urandom >"$BENCH_TMP/www/static/1k.bin"
head -c $((1 << 20)) /dev/urandom >"$BENCH_TMP/www/static/1m.bin"
chmod 644 "$BENCH_TMP/www/static/"*
www=$BENCH_TMP/www
bench_need openssl
# One certificate for every server: ECDSA P-256, like edged's ACME default.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
	-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
	-keyout "$BENCH_TMP/key.pem" -out "$BENCH_TMP/cert.pem" 2>/dev/null || bench_die "openssl cannot make a certificate"
cat "$BENCH_TMP/cert.pem" "$BENCH_TMP/key.pem" >"$BENCH_TMP/both.pem"
chmod 644 "$BENCH_TMP/"*.pem

nginx_conf() { # DIR PORT EXTRA [TLS_PORT]
	local dir=$BENCH_TMP/$1 common=${nginx_common//PREFIX/$BENCH_TMP/$1}
	cat >"$dir/nginx.conf" <<EOF
worker_processes 2;
worker_rlimit_nofile 30000;
${common//worker_connections 4096/worker_connections 20000}
http {
${nginx_http_common//PREFIX/$dir}
	sendfile on;
	tcp_nopush on;
	$3
	types { application/octet-stream bin; }
	default_type application/octet-stream;
	server {
		listen 127.0.0.1:$2 default_server backlog=4096;
		${4:+listen 127.0.0.1:$4 ssl default_server backlog=4096;}
		${4:+ssl_certificate $BENCH_TMP/cert.pem; ssl_certificate_key $BENCH_TMP/key.pem; ssl_protocols TLSv1.3;}
		root $www;
	}
}
EOF
}
nginx_conf nginx "$p_nginx" "" "$s_nginx"
nginx_conf nginx-ofc "$p_ofc" "open_file_cache max=10000 inactive=60s; open_file_cache_valid 60s;"

cat >"$BENCH_TMP/edged.toml" <<EOF
[server]
http = ["127.0.0.1:$p_edged"]
https = ["127.0.0.1:$s_edged"]
admin = ""
max_connections = 0
max_connections_per_ip = 0
[tls]
storage = "$BENCH_TMP/edged-tls"
[[site]]
hosts = ["localhost", "127.0.0.1"]
tls = { cert = "$BENCH_TMP/cert.pem", key = "$BENCH_TMP/key.pem" }
redirect_http = false
  [[site.route]]
  path = "/static/"
  static = "$www/static"
EOF

cat >"$BENCH_TMP/caddy/Caddyfile" <<EOF
{
	admin off
	auto_https off
	storage file_system $BENCH_TMP/caddy/data
}
http://127.0.0.1:$p_caddy {
	root * $www
	file_server
}
https://localhost:$s_caddy, https://127.0.0.1:$s_caddy {
	tls $BENCH_TMP/cert.pem $BENCH_TMP/key.pem {
		protocols tls1.3
	}
	root * $www
	file_server
}
EOF

cat >"$BENCH_TMP/haproxy.cfg" <<EOF
global
	nbthread 2
	maxconn $haproxy_max
	log stderr format raw local0 err
defaults
	mode http
	timeout client 75s
	timeout http-keep-alive 75s
	timeout http-request 10s
frontend static
	bind 127.0.0.1:$p_haproxy
	bind 127.0.0.1:$s_haproxy ssl crt $BENCH_TMP/both.pem ssl-min-ver TLSv1.3
	http-request return status 200 content-type application/octet-stream file $www/static/1k.bin if { path /static/1k.bin }
	http-request return status 404
EOF

start() { # LABEL PORT CMD...: setsid, tracked, waited for
	local label=$1 port=$2
	shift 2
	setsid "$@" >"$BENCH_TMP/$label.log" 2>&1 &
	local pid=$!
	bench_track "$pid"
	BENCH_PGID[$label]=$pid
	bench_wait_http "http://127.0.0.1:$port/static/1k.bin" ||
		bench_die "$label did not start: $(tail -n 20 "$BENCH_TMP/$label.log")"
}

nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
haproxy_bin=$(command -v haproxy || echo /usr/sbin/haproxy)
"$edged_bin" -t -config "$BENCH_TMP/edged.toml" >/dev/null || bench_die "edged rejects $BENCH_TMP/edged.toml"
start edged "$p_edged" env GOMAXPROCS=2 "$edged_bin" -config "$BENCH_TMP/edged.toml"
base_target=() base_idle=
if [ -n "${EDGED_BASE:-}" ]; then
	sed -e "s/127.0.0.1:$p_edged\"/127.0.0.1:$p_base\"/" -e '/^https = /d' -e "s#edged-tls#edged-base-tls#" \
		"$BENCH_TMP/edged.toml" >"$BENCH_TMP/edged-base.toml"
	start edged-base "$p_base" env GOMAXPROCS=2 "$EDGED_BASE" -config "$BENCH_TMP/edged-base.toml"
	base_target=("edged-base=http://127.0.0.1:$p_base/static/1k.bin")
	base_idle="edged-base $p_base"
fi
for n in nginx nginx-ofc; do
	port=$p_nginx
	[ $n = nginx-ofc ] && port=$p_ofc
	"$nginx_bin" -t -q -e "$BENCH_TMP/$n/error.log" -p "$BENCH_TMP/$n" -c "$BENCH_TMP/$n/nginx.conf" ||
		bench_die "$n rejects its configuration: $(cat "$BENCH_TMP/$n/error.log")"
	start $n "$port" "$nginx_bin" -e "$BENCH_TMP/$n/error.log" -p "$BENCH_TMP/$n" -c "$BENCH_TMP/$n/nginx.conf" -g 'daemon off;'
done
start caddy "$p_caddy" env GOMAXPROCS=2 HOME="$BENCH_TMP/caddy" XDG_DATA_HOME="$BENCH_TMP/caddy" XDG_CONFIG_HOME="$BENCH_TMP/caddy" caddy run --config "$BENCH_TMP/caddy/Caddyfile" --adapter caddyfile
start haproxy "$p_haproxy" "$haproxy_bin" -db -f "$BENCH_TMP/haproxy.cfg"

# A wrong answer is not a performance result: say so before measuring it.
check() { # LABEL URL WANT_BYTES
	local got
	got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' --max-time 5 "$2" || echo "000 0")
	[ "$got" = "200 $3" ] || bench_log "WARNING: $1 answered $2 with '$got', want '200 $3'; its numbers count non-2xx"
}
url() { echo "http://127.0.0.1:$1/static/$2"; }
surl() { echo "https://127.0.0.1:$1/static/$2"; }
for s in "edged $p_edged" "nginx $p_nginx" "nginx-ofc $p_ofc" "caddy $p_caddy" "haproxy $p_haproxy"; do
	set -- $s
	check "$1" "$(url "$2" 1k.bin)" 1024
	[ "$1" = haproxy ] || check "$1" "$(url "$2" 1m.bin)" $((1 << 20))
done
for s in "edged $s_edged" "nginx $s_nginx" "caddy $s_caddy" "haproxy $s_haproxy"; do
	set -- $s
	got=$(curl -sk --tlsv1.3 -o /dev/null -w '%{http_code} %{size_download}' --max-time 5 "$(surl "$2" 1k.bin)" || echo "000 0")
	[ "$got" = "200 1024" ] || bench_log "WARNING: $1 over TLS answered '$got', want '200 1024'"
done

machine=$(bench_machine)
load0=$(bench_load)
conns=$BENCH_CONNS threads=$BENCH_THREADS dur=$BENCH_DURATION rounds=$BENCH_ROUNDS
bench_log "machine: $machine; load average $load0"

case " $scenarios " in *" static-1KiB "*)
	bench_interleave static-1KiB "$rounds" "$dur" "$conns" "$threads" \
		"edged=$(url $p_edged 1k.bin)" "nginx=$(url $p_nginx 1k.bin)" "nginx-ofc=$(url $p_ofc 1k.bin)" \
		"caddy=$(url $p_caddy 1k.bin)" "haproxy=$(url $p_haproxy 1k.bin)" ${base_target[@]+"${base_target[@]}"}
	;;
esac
case " $scenarios " in *" static-1MiB "*)
	bench_interleave static-1MiB "$rounds" "$dur" "$conns" "$threads" \
		"edged=$(url $p_edged 1m.bin)" "nginx=$(url $p_nginx 1m.bin)" "nginx-ofc=$(url $p_ofc 1m.bin)" \
		"caddy=$(url $p_caddy 1m.bin)"
	;;
esac

case " $scenarios " in *" tls-keepalive "*)
	bench_interleave tls-keepalive "$rounds" "$dur" "$conns" "$threads" \
		"edged=$(surl $s_edged 1k.bin)" "nginx=$(surl $s_nginx 1k.bin)" \
		"caddy=$(surl $s_caddy 1k.bin)" "haproxy=$(surl $s_haproxy 1k.bin)"
	;;
esac
case " $scenarios " in *" tls-new-conn "*)
	BENCH_WRK_HEADER="Connection: close" bench_interleave tls-new-conn "$rounds" "$dur" "$conns" "$threads" \
		"edged=$(surl $s_edged 1k.bin)" "nginx=$(surl $s_nginx 1k.bin)" \
		"caddy=$(surl $s_caddy 1k.bin)" "haproxy=$(surl $s_haproxy 1k.bin)"
	;;
esac

# Memory of a process group: RSS and PSS summed over its processes (kB).
mem_kb() { # PGID
	local pid rss=0 pss=0 r p
	for pid in $(pgrep -g "$1"); do
		r=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
		p=$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)
		rss=$((rss + ${r:-0})) pss=$((pss + ${p:-0}))
	done
	echo "$rss $pss"
}

idle_rows=()
case " $scenarios " in *" idle "*)
	for s in "edged $p_edged" ${base_idle:+"$base_idle"} "nginx $p_nginx" "nginx-ofc $p_ofc" "caddy $p_caddy" "haproxy $p_haproxy"; do
		set -- $s
		case " ${IDLE_SERVERS:-$1} " in *" $1 "*) ;; *) continue ;; esac
		label=$1 port=$2 pg=${BENCH_PGID[$1]} n=$idle_n
		[ "$label" = haproxy ] && n=$((idle_n < haproxy_max - 10 ? idle_n : haproxy_max - 10))
		curl -s -o /dev/null "$(url "$port" 1k.bin)"
		sleep 1
		read -r rss0 pss0 < <(mem_kb "$pg")
		c0=$(bench_cpu_us "$pg")
		fifo=$BENCH_TMP/hold-$label
		mkfifo "$fifo"
		"$BENCH_TMP/idleconns" -addr "127.0.0.1:$port" -path /static/1k.bin -n "$n" <"$fifo" >"$BENCH_TMP/idle-$label.out" 2>&1 &
		ipid=$!
		bench_track "$ipid"
		exec 7>"$fifo"
		for _ in $(seq 600); do
			grep -q '^ready' "$BENCH_TMP/idle-$label.out" 2>/dev/null && break
			kill -0 "$ipid" 2>/dev/null || break
			sleep 0.1
		done
		if ! grep -q '^ready' "$BENCH_TMP/idle-$label.out"; then
			bench_log "WARNING: $label: the idle connections did not all open: $(cat "$BENCH_TMP/idle-$label.out")"
			exec 7>&-
			wait "$ipid" || true
			continue
		fi
		# Let the connections settle (a server may park or trim them).
		sleep "${IDLE_SETTLE:-15}"
		read -r rss1 pss1 < <(mem_kb "$pg")
		c1=$(bench_cpu_us "$pg")
		exec 7>&-
		wait "$ipid" || true
		row=$(awk -v l="$label" -v n="$n" -v r0="$rss0" -v r1="$rss1" -v p0="$pss0" -v p1="$pss1" -v c="$((c1 - c0))" \
			'BEGIN { printf "| idle-%d | %s | %.1f MiB | %.1f MiB | %.2f KiB | %.2f KiB | %.1f µs |", n, l, r0 / 1024, r1 / 1024, (r1 - r0) / n, (p1 - p0) / n, c / n }')
		bench_log "idle: $row"
		idle_rows+=("$row")
		sleep 2 # the server closes its side
	done
	;;
esac

echo
echo "edged's engine and static files on loopback: $machine"
echo "load average before: $load0, after: $(bench_load) (anything above ~0.1 before means other work shared the cores)"
echo "wrk -t$threads -c$conns -d$dur, median of $rounds interleaved runs; edged and caddy GOMAXPROCS=2, nginx worker_processes 2, haproxy nbthread 2."
echo "CPU/req = the server's user+sys CPU over the run / requests. nginx-ofc = nginx with open_file_cache; haproxy answers from a copy of the file loaded at start."
echo
[ -s "$BENCH_RESULTS" ] && bench_table nginx
if [ ${#idle_rows[@]} -gt 0 ]; then
	echo
	echo "$idle_n idle kept-alive connections, each after one request for the 1 KiB file; memory of the server's processes before and $((${IDLE_SETTLE:-15}))s after they are all open:"
	echo
	echo "| scenario | server | RSS before | RSS with the connections | RSS per connection | PSS per connection | CPU per connection (open + request) |"
	echo "|---|---|---:|---:|---:|---:|---:|"
	printf '%s\n' "${idle_rows[@]}"
fi
if grep -qiE 'panic|fatal' "$BENCH_TMP/edged.log"; then
	echo
	echo "edged logged a panic or fatal error during the run:"
	grep -iE -m 5 'panic|fatal' "$BENCH_TMP/edged.log"
fi
