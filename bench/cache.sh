#!/usr/bin/env bash
# bench/cache.sh: edged's HTTP cache against Debian's nginx (proxy_cache) and
# varnish, configured alike, on loopback; then the memory tier's hit ratio
# against LRU under a Zipf load with a one-off scan.
#
# Scenarios: cache hits for a 1 KiB and a 64 KiB object, and for a 1 KiB
# text object asked with Accept-Encoding: gzip, which each edge compresses
# (edged and varnish store the gzip variant; nginx's gzip filter compresses
# every hit, as nginx has no way to store it). All three caches sit in
# front of the same upstream (a separate nginx, 1 worker, serving the
# objects uncompressed with Cache-Control: public, max-age=86400); after one
# warming request every measured request is a hit. Runs interleave (edged, nginx,
# varnish, edged, ...) after a warm-up; the table shows medians and ratios
# against nginx. It never fails because a number is low, only when a
# server cannot start.
#
# Environment: EDGED (binary; default: built from the tree), BENCH_ROUNDS,
# BENCH_DURATION, BENCH_WARMUP, BENCH_CONNS, BENCH_THREADS (bench/lib.sh),
# BENCH_PORT_BASE (default 18380: +0 edged, +1 upstream, +10 nginx,
# +20 varnish), BENCH_KEEP=1 keeps the temp dir, BENCH_VERBOSE=1 shows wrk.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

bench_init cache
bench_need curl
bench_need wrk
bench_need nginx
bench_need varnishd varnish

base=${BENCH_PORT_BASE:-18380}
edged_port=$base
upstream_port=$((base + 1))
nginx_port=$((base + 10))
varnish_port=$((base + 20))
for p in "$edged_port" "$upstream_port" "$nginx_port" "$varnish_port"; do
	if ss -Htln "sport = :$p" 2>/dev/null | grep -q .; then
		bench_die "port 127.0.0.1:$p is taken; set BENCH_PORT_BASE to a free range"
	fi
done

nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
varnish_bin=$(command -v varnishd || echo /usr/sbin/varnishd)
if [ -n "${EDGED:-}" ]; then
	edged_bin=$EDGED
else
	edged_bin=$BENCH_TMP/edged
	bench_log "building edged from $root"
	if ! (cd "$root" && go build -trimpath -o "$edged_bin" ./edged); then
		[ -x "$root/bin/edged" ] || bench_die "building edged failed and there is no bin/edged"
		bench_log "WARNING: building edged failed; measuring $root/bin/edged instead"
		edged_bin=$root/bin/edged
	fi
fi

chmod 755 "$BENCH_TMP"
mkdir -p "$BENCH_TMP/objects" "$BENCH_TMP/nginx/cache" "$BENCH_TMP/upstream" "$BENCH_TMP/varnish" "$BENCH_TMP/edged-cache"
head -c 1024 /dev/urandom >"$BENCH_TMP/objects/1k.bin"
head -c 65536 /dev/urandom >"$BENCH_TMP/objects/64k.bin"
# A 1 KiB stylesheet-like text: compressible, like most text a site serves.
for i in $(seq 1 40); do printf '.c%02d { margin: 0 %dpx; color: #%06x; }\n' "$i" "$i" "$((i * 40503))"; done >"$BENCH_TMP/css"
head -c 1024 "$BENCH_TMP/css" >"$BENCH_TMP/objects/1k.txt"
[ "$(wc -c <"$BENCH_TMP/objects/1k.txt")" = 1024 ] || bench_die "the 1 KiB text object is not 1024 bytes"
chmod 644 "$BENCH_TMP"/objects/*

# The upstream: the objects, marked cacheable for a day.
cat >"$BENCH_TMP/upstream/nginx.conf" <<EOF
worker_processes 1;
${nginx_common//PREFIX/$BENCH_TMP/upstream}
http {
${nginx_http_common//PREFIX/$BENCH_TMP/upstream}
	types { application/octet-stream bin; text/plain txt; }
	server {
		listen 127.0.0.1:$upstream_port default_server reuseport backlog=4096;
		root $BENCH_TMP/objects;
		add_header Cache-Control "public, max-age=86400";
	}
}
EOF

# nginx with proxy_cache: 2 workers (edged runs GOMAXPROCS=2), the origin's
# Cache-Control decides freshness (nginx's default), coalescing on
# (proxy_cache_lock, like edged), a disk cache (served from the page cache)
# with its keys in shared memory. tcp_nopush is off: with Debian's "on", a
# 64 KiB hit on loopback stalls 40 ms on a delayed ACK (measured: 180 req/s
# against 14000 with it off), which would measure a misconfiguration.
cat >"$BENCH_TMP/nginx/nginx.conf" <<EOF
worker_processes 2;
${nginx_common//PREFIX/$BENCH_TMP/nginx}
http {
${nginx_http_common//PREFIX/$BENCH_TMP/nginx}
	sendfile on;
	tcp_nopush off;
	gzip on;
	gzip_types text/plain;
	gzip_comp_level 5;
	proxy_cache_path $BENCH_TMP/nginx/cache levels=1:2 keys_zone=bench:16m max_size=1g inactive=1d use_temp_path=off;
	upstream app {
		server 127.0.0.1:$upstream_port;
		keepalive 64;
	}
	server {
		listen 127.0.0.1:$nginx_port default_server backlog=4096;
		location / {
			proxy_pass http://app;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_cache bench;
			proxy_cache_lock on;
			add_header Cache-Status "nginx; \$upstream_cache_status";
		}
	}
}
EOF

# edged: the same route with a cache of 256 MiB memory and a disk tier.
cat >"$BENCH_TMP/edged.toml" <<EOF
[server]
http = ["127.0.0.1:$edged_port"]
admin = ""

[[site]]
  [[site.route]]
  path = "/"
  upstream = "app"
  cache = "bench"

[upstream.app]
servers = ["127.0.0.1:$upstream_port"]

[cache.bench]
memory = "256MiB"
disk = "$BENCH_TMP/edged-cache"
disk_max = "1GiB"
EOF

start_nginx() { # NAME; sets started_pid
	local dir=$BENCH_TMP/$1
	"$nginx_bin" -t -q -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" ||
		bench_die "nginx ($1) rejects its configuration: $(cat "$dir/error.log" 2>/dev/null)"
	setsid "$nginx_bin" -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' \
		>"$dir/stdout.log" 2>&1 &
	started_pid=$!
	bench_track "$started_pid"
}

start_nginx upstream
bench_wait_http "http://127.0.0.1:$upstream_port/1k.bin" ||
	bench_die "the upstream nginx did not start: $(cat "$BENCH_TMP/upstream/error.log" 2>/dev/null)"
start_nginx nginx
nginx_pid=$started_pid
bench_wait_http "http://127.0.0.1:$nginx_port/1k.bin" ||
	bench_die "nginx did not start: $(cat "$BENCH_TMP/nginx/error.log" 2>/dev/null)"

# varnish: malloc storage of the same size, 2 thread pools (one per core),
# the built-in VCL (which honours the origin's Cache-Control) plus gzip of
# text on fetch, so it stores the gzip variant as edged does.
cat >"$BENCH_TMP/varnish.vcl" <<EOF
vcl 4.1;
backend default { .host = "127.0.0.1"; .port = "$upstream_port"; }
sub vcl_backend_response {
	if (beresp.http.Content-Type ~ "^text/") { set beresp.do_gzip = true; }
}
EOF
setsid "$varnish_bin" -F -n "$BENCH_TMP/varnish" -a "127.0.0.1:$varnish_port" -f "$BENCH_TMP/varnish.vcl" \
	-s malloc,256m -p thread_pools=2 >"$BENCH_TMP/varnish.log" 2>&1 &
varnish_pid=$!
bench_track "$varnish_pid"
bench_wait_http "http://127.0.0.1:$varnish_port/1k.bin" 30 ||
	bench_die "varnish did not start: $(tail -n 20 "$BENCH_TMP/varnish.log")"

"$edged_bin" -t -config "$BENCH_TMP/edged.toml" >/dev/null ||
	bench_die "edged rejects the benchmark configuration ($BENCH_TMP/edged.toml)"
env GOMAXPROCS=2 setsid "$edged_bin" -config "$BENCH_TMP/edged.toml" >"$BENCH_TMP/edged.log" 2>&1 &
edged_pid=$!
bench_track "$edged_pid"
bench_wait_http "http://127.0.0.1:$edged_port/1k.bin" ||
	bench_die "edged did not start: $(tail -n 20 "$BENCH_TMP/edged.log")"

BENCH_PGID[edged]=$edged_pid
BENCH_PGID[nginx]=$nginx_pid
BENCH_PGID[varnish]=$varnish_pid

# Warm each cache, then check that the next answer is a hit and whole.
check() { # LABEL URL BYTES HIT_PATTERN HEADER
	local out code size hdr
	curl -s -o /dev/null --max-time 5 "$2" || true
	out=$(curl -s -D - -o /dev/null -w 'XX %{http_code} %{size_download}' --max-time 5 "$2" || echo "XX 000 0")
	code=$(echo "$out" | awk '/^XX/ { print $2 }')
	size=$(echo "$out" | awk '/^XX/ { print $3 }')
	hdr=$(echo "$out" | grep -i "^$5:" | tr -d '\r' || true)
	if [ "$code $size" != "200 $3" ]; then
		bench_log "WARNING: $1 answered $2 with '$code $size', want '200 $3'"
	elif ! echo "$hdr" | grep -qiE "$4"; then
		bench_log "WARNING: $1 did not answer $2 from its cache ($5: ${hdr:-none}); its numbers are not hits"
	fi
}
for obj in 1k.bin:1024 64k.bin:65536; do
	path=${obj%%:*} size=${obj#*:}
	check edged "http://127.0.0.1:$edged_port/$path" "$size" "edged; hit" Cache-Status
	check nginx "http://127.0.0.1:$nginx_port/$path" "$size" "HIT" Cache-Status
	check varnish "http://127.0.0.1:$varnish_port/$path" "$size" "^age: [0-9]*[1-9]|x-varnish: [0-9]+ [0-9]+" "X-Varnish"
done
# The text object, compressed: each answers with gzip (after warming).
for t in edged:$edged_port nginx:$nginx_port varnish:$varnish_port; do
	url="http://127.0.0.1:${t#*:}/1k.txt"
	curl -s -o /dev/null -H 'Accept-Encoding: gzip' --max-time 5 "$url" || true
	ce=$(curl -s -D - -o /dev/null -H 'Accept-Encoding: gzip' --max-time 5 "$url" | tr -d '\r' | grep -i '^content-encoding:' || true)
	echo "$ce" | grep -qi gzip || bench_log "WARNING: ${t%%:*} did not answer /1k.txt with gzip (${ce:-no Content-Encoding}); the gzip row compares unlike responses"
done
hit=$(curl -s -D - -o /dev/null -H 'Accept-Encoding: gzip' --max-time 5 "http://127.0.0.1:$edged_port/1k.txt" | tr -d '\r' | grep -i '^cache-status:' || true)
echo "$hit" | grep -q "edged; hit" || bench_log "WARNING: edged did not answer the gzip request from its cache (${hit:-no Cache-Status})"

machine=$(bench_machine)
load0=$(bench_load)
conns=$BENCH_CONNS threads=$BENCH_THREADS dur=$BENCH_DURATION rounds=$BENCH_ROUNDS
bench_log "machine: $machine"
bench_log "wrk -t$threads -c$conns -d$dur --latency, $rounds interleaved rounds after a $BENCH_WARMUP warm-up"

for obj in 1KiB=1k.bin 64KiB=64k.bin; do
	bench_interleave "hit-${obj%%=*}" "$rounds" "$dur" "$conns" "$threads" \
		"edged=http://127.0.0.1:$edged_port/${obj#*=}" \
		"nginx=http://127.0.0.1:$nginx_port/${obj#*=}" \
		"varnish=http://127.0.0.1:$varnish_port/${obj#*=}"
done
BENCH_WRK_HEADER="Accept-Encoding: gzip" bench_interleave "hit-1KiB-text-gzip" "$rounds" "$dur" "$conns" "$threads" \
	"edged=http://127.0.0.1:$edged_port/1k.txt" \
	"nginx=http://127.0.0.1:$nginx_port/1k.txt" \
	"varnish=http://127.0.0.1:$varnish_port/1k.txt"

echo
echo "HTTP cache hits on loopback: $machine"
echo "load average before: $load0, after: $(bench_load) (anything above ~0.1 before means other work shared the cores)"
echo "wrk -t$threads -c$conns -d$dur, median of $rounds interleaved runs each; edged GOMAXPROCS=2 (memory 256MiB + disk tier),"
echo "nginx worker_processes 2 (proxy_cache on disk, proxy_cache_lock on, sendfile on, tcp_nopush off, gzip on level 5 for text), varnish -s malloc,256m thread_pools=2 (built-in VCL, do_gzip for text)."
echo "hit-1KiB-text-gzip: a 1 KiB text object asked with Accept-Encoding: gzip; edged and varnish store the gzip variant, nginx compresses each hit."
echo "Every measured request is a cache hit of a fresh object. CPU/req = the server's user+sys CPU / requests."
echo
bench_table nginx

if grep -qiE 'panic|fatal' "$BENCH_TMP/edged.log"; then
	echo
	echo "edged logged a panic or fatal error during the run:"
	grep -iE -m 5 'panic|fatal' "$BENCH_TMP/edged.log"
fi

# The memory tier's policy against plain LRU, same byte budget (1000 objects
# of 1 KiB), 300k requests over 100k keys, Zipf s=1.05, with and without a
# scan of 50k never-repeated keys mixed into the middle third.
echo
echo "Memory tier hit ratio (S3-FIFO) against LRU, Zipf s=1.05 over 100k keys, cache = 1% of keys:"
echo
ratio_out=$(cd "$root" && go test -run '^$' -bench '^BenchmarkHitRatio$' -benchtime=1x ./edged/cache/ 2>&1 || true)
if ! echo "$ratio_out" | grep -q '^BenchmarkHitRatio/'; then
	echo "(the hit-ratio benchmark did not run:)"
	echo "$ratio_out" | tail -n 10
	exit 0
fi
echo "| load | LRU hit % | S3-FIFO hit % | S3-FIFO / LRU |"
echo "|---|---:|---:|---:|"
echo "$ratio_out" |
	awk '/^BenchmarkHitRatio\// {
		split($1, p, "/"); scan = p[2]; pol = p[3]; sub(/-[0-9]+$/, "", pol)
		for (i = 1; i <= NF; i++) if ($(i + 1) == "hit%") v[scan, pol] = $i
		if (!(scan in seen)) { seen[scan] = 1; order[++n] = scan }
	}
	END {
		for (i = 1; i <= n; i++) {
			s = order[i]; l = v[s, "lru"]; f = v[s, "s3fifo"]
			printf "| %s | %.2f | %.2f | %.3fx |\n", (s == "scan=0" ? "Zipf only" : "Zipf + one-off scan of 50k keys"), l, f, (l > 0 ? f / l : 0)
		}
	}'
