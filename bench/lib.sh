# shellcheck shell=bash
# bench/lib.sh: helpers shared by the bench/*.sh scripts. Source it:
#
#	. "$(dirname "$0")/lib.sh"
#
# What it gives:
#   bench_init NAME           temp dir in $BENCH_TMP, results file $BENCH_RESULTS,
#                             an EXIT/INT/TERM trap that kills what bench_track saw
#   bench_need CMD [PKG]      make sure CMD exists, apt-get installing PKG if not
#   bench_track PID           kill PID (and its process group if it leads one) at exit
#   bench_wait_http URL [S]   poll until URL answers (any status), at most S seconds
#   bench_wrk URL D C T       one wrk run; prints "RPS P50_US P99_US NON2XX ERRS REQUESTS"
#   bench_interleave SCEN ROUNDS DUR CONNS THREADS LABEL=URL ...
#                             warm every target, then ROUNDS rounds that each run
#                             every target once in turn (a, b, a, b, ...); one
#                             line per run appended to $BENCH_RESULTS
#   bench_cpu_us PGID [user|sys]  CPU µs used so far by process group PGID
#   BENCH_PGID[LABEL]=PGID    makes bench_interleave report CPU µs per request
#   BENCH_UPSTREAM_PGID[SCEN]=PGID  and the upstream's CPU µs per request in
#                             that scenario (a column of its own in the table)
#   bench_table BASELINE      medians per scenario and target, with ratios to
#                             the BASELINE target, as a Markdown table
#   bench_machine             one line describing this machine
#   bench_load                load averages (other work on the machine skews numbers)
#
# Nothing here ever fails because a number is low: only a missing tool or a
# server that does not come up is an error, and that is for the caller.
#
# Tunables (environment): BENCH_ROUNDS (3), BENCH_DURATION (10s),
# BENCH_WARMUP (3s), BENCH_CONNS (64), BENCH_THREADS (2).

BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_DURATION=${BENCH_DURATION:-10s}
BENCH_WARMUP=${BENCH_WARMUP:-3s}
BENCH_CONNS=${BENCH_CONNS:-64}
BENCH_THREADS=${BENCH_THREADS:-2}

_bench_pids=()
_bench_apt_updated=

bench_log() { printf '%s: %s\n' "${BENCH_NAME:-bench}" "$*" >&2; }
bench_die() {
	bench_log "$*"
	exit 1
}

bench_init() {
	BENCH_NAME=$1
	BENCH_TMP=$(mktemp -d "/tmp/bench-$1.XXXXXX")
	BENCH_RESULTS=$BENCH_TMP/results
	: >"$BENCH_RESULTS"
	trap _bench_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

_bench_cleanup() {
	# Runs from the EXIT trap, where errexit still applies: every command
	# here must succeed, or the temp dir and the servers would be left over.
	set +e
	local pid
	for pid in "${_bench_pids[@]}"; do
		# A process started with setsid leads its own group: end the group,
		# so that a server's workers go with it.
		kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
	done
	for pid in "${_bench_pids[@]}"; do
		# Up to 5s to drain; a zombie (our unreaped child) counts as gone.
		for _ in $(seq 50); do
			_bench_gone "$pid" && break
			sleep 0.1
		done
		kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	if [ -n "${BENCH_TMP:-}" ] && [ -z "${BENCH_KEEP:-}" ]; then
		rm -rf "$BENCH_TMP"
	fi
	return 0
}

_bench_gone() {
	local st
	st=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null)
	[ -z "$st" ] || [ "$st" = Z ]
}

bench_track() { _bench_pids+=("$1"); }

# bench_need CMD [PKG]: install the Debian package PKG (default CMD) when CMD
# is missing. Needs root, as the Makefile's deps target does.
bench_need() {
	local cmd=$1 pkg=${2:-$1}
	command -v "$cmd" >/dev/null 2>&1 && return 0
	[ -x "/usr/sbin/$cmd" ] && return 0
	command -v apt-get >/dev/null 2>&1 || bench_die "$cmd is missing and there is no apt-get to install $pkg"
	[ "$(id -u)" = 0 ] || bench_die "$cmd is missing; install $pkg (apt-get install $pkg) or run as root"
	bench_log "installing $pkg with apt-get (needed for $cmd)"
	if [ -z "$_bench_apt_updated" ]; then
		apt-get update -q >/dev/null || bench_die "apt-get update failed"
		_bench_apt_updated=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$pkg" >/dev/null ||
		bench_die "apt-get install $pkg failed"
}

# bench_wait_http URL [SECONDS]: true once URL answers with any HTTP status.
bench_wait_http() {
	local url=$1 secs=${2:-15} i
	for ((i = 0; i < secs * 10; i++)); do
		if curl -s -o /dev/null --max-time 1 "$url" 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# _bench_us VALUE: a wrk latency ("812.00us", "1.23ms", "2.00s") in microseconds.
_bench_us() {
	awk -v v="$1" 'BEGIN {
		n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
		if (u == "ms") n *= 1000; else if (u == "s") n *= 1000000; else if (u == "m") n *= 60000000
		printf "%.0f", n }'
}

# bench_parse_wrk FILE: "RPS P50_US P99_US NON2XX ERRORS REQUESTS" from wrk
# --latency output.
bench_parse_wrk() {
	local f=$1 rps p50 p99 non2xx errs reqs
	rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$f")
	reqs=$(awk '/ requests in / { print $1 }' "$f")
	p50=$(awk '$1 == "50%" { print $2 }' "$f")
	p99=$(awk '$1 == "99%" { print $2 }' "$f")
	non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$f")
	errs=$(awk '/Socket errors:/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$f")
	printf '%s %s %s %s %s %s\n' "${rps:-0}" "$(_bench_us "${p50:-0}")" "$(_bench_us "${p99:-0}")" \
		"${non2xx:-0}" "${errs:-0}" "${reqs:-0}"
}

# bench_wrk URL DURATION CONNS THREADS: one bounded wrk run, parsed.
bench_wrk() {
	local url=$1 dur=$2 conns=$3 threads=$4 out
	out=$(mktemp "${BENCH_TMP:-/tmp}/wrk.XXXXXX")
	# --timeout bounds a stuck request; timeout(1) bounds wrk itself.
	# BENCH_WRK_HEADER, when set, is one request header line (e.g.
	# "Accept-Encoding: gzip") sent with every request.
	timeout 120 wrk -t"$threads" -c"$conns" -d"$dur" --timeout 5s --latency ${BENCH_WRK_HEADER:+-H "$BENCH_WRK_HEADER"} "$url" >"$out" 2>&1 || true
	if [ -n "${BENCH_VERBOSE:-}" ]; then cat "$out" >&2; fi
	bench_parse_wrk "$out"
	rm -f "$out"
}

# bench_cpu_us PGID [user|sys]: CPU time (µs; user+system unless one is
# named) used so far by the processes of process group PGID (a server
# started with setsid: nginx's master and workers, or edged alone). Exited
# processes are not counted, so measure servers whose processes live
# through the run.
bench_cpu_us() {
	local hz
	hz=$(getconf CLK_TCK)
	# /proc/PID/stat: field 2 (comm) may hold spaces, so cut at the last ")".
	{ cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v g="$1" -v hz="$hz" -v which="${2:-all}" '{
		sub(/^.*\) /, "")
		if ($3 == g) t += (which == "sys" ? 0 : $12) + (which == "user" ? 0 : $13) }
		END { printf "%.0f", t * 1000000 / hz }'
}

# BENCH_PGID[LABEL]=PGID makes bench_interleave report the CPU each request
# cost that target's processes (µs/request); unset, the column is 0.
# BENCH_UPSTREAM_PGID[SCENARIO]=PGID does the same for the upstream behind
# every target of a scenario: a proxy that churns upstream connections makes
# its upstream work harder.
declare -gA BENCH_PGID=()
declare -gA BENCH_UPSTREAM_PGID=()

# bench_interleave SCENARIO ROUNDS DURATION CONNS THREADS LABEL=URL...
# Warms each target for $BENCH_WARMUP, then runs the targets in turn, ROUNDS
# times, so that drift on the machine (thermal, noisy neighbours) falls on
# every target alike. Appends one line per run to $BENCH_RESULTS:
# "SCENARIO LABEL ROUND RPS P50_US P99_US NON2XX ERRS REQUESTS CPU_US_PER_REQ UP_CPU_US_PER_REQ".
bench_interleave() {
	local scen=$1 rounds=$2 dur=$3 conns=$4 threads=$5 t label url r res c0 c1 pg cpu u0 u1 upg upcpu
	shift 5
	upg=${BENCH_UPSTREAM_PGID[$scen]:-}
	for t in "$@"; do
		label=${t%%=*} url=${t#*=}
		bench_log "$scen: warming $label ($BENCH_WARMUP)"
		bench_wrk "$url" "$BENCH_WARMUP" "$conns" "$threads" >/dev/null
	done
	for ((r = 1; r <= rounds; r++)); do
		for t in "$@"; do
			label=${t%%=*} url=${t#*=} pg=${BENCH_PGID[$label]:-}
			c0=0 c1=0 u0=0 u1=0
			[ -n "$pg" ] && c0=$(bench_cpu_us "$pg")
			[ -n "$upg" ] && u0=$(bench_cpu_us "$upg")
			res=$(bench_wrk "$url" "$dur" "$conns" "$threads")
			[ -n "$pg" ] && c1=$(bench_cpu_us "$pg")
			[ -n "$upg" ] && u1=$(bench_cpu_us "$upg")
			cpu=$(awk -v c="$((c1 - c0))" -v n="${res##* }" 'BEGIN { printf "%.1f", (n > 0 ? c / n : 0) }')
			upcpu=$(awk -v c="$((u1 - u0))" -v n="${res##* }" 'BEGIN { printf "%.1f", (n > 0 ? c / n : 0) }')
			# shellcheck disable=SC2086 # $res is the list of fields
			bench_log "$scen: round $r/$rounds $label: $(_bench_fmt_run $res), $cpu µs CPU/request${upg:+, upstream $upcpu µs}"
			echo "$scen $label $r $res $cpu $upcpu" >>"$BENCH_RESULTS"
		done
	done
}

_bench_fmt_run() { printf '%s req/s, p50 %s µs, p99 %s µs, non-2xx %s, socket errors %s, %s requests' "$@"; }

# bench_table BASELINE: a Markdown table of the medians in $BENCH_RESULTS;
# ratios compare each target with BASELINE in the same scenario (req/s: more
# is better; latency: less is better).
bench_table() {
	awk -v base="$1" '
	function median(key,   n, i, j, t, a) {
		n = split(vals[key], a, " ")
		for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	function us(v) { return v >= 10000 ? sprintf("%.1f ms", v / 1000) : sprintf("%d µs", v) }
	function ratio(a, b) { return b > 0 ? sprintf("%.2fx", a / b) : "n/a" }
	{
		s = $1; l = $2
		if (!(s in seens)) { seens[s] = 1; scen[++ns] = s }
		if (!((s, l) in seenl)) { seenl[s, l] = 1; lab[s, ++nl[s]] = l }
		vals[s, l, "rps"] = vals[s, l, "rps"] " " $4
		vals[s, l, "p50"] = vals[s, l, "p50"] " " $5
		vals[s, l, "p99"] = vals[s, l, "p99"] " " $6
		vals[s, l, "cpu"] = vals[s, l, "cpu"] " " $10
		vals[s, l, "up"] = vals[s, l, "up"] " " ($11 + 0)
		if ($11 + 0 > 0) upcol = 1
		runs[s, l]++; bad[s, l] += $7 + $8
	}
	END {
		printf "| scenario | server | req/s | p50 | p99 | req/s vs %s | p50 vs %s | p99 vs %s | server CPU/req |%s runs | non-2xx+errors |\n", base, base, base, (upcol ? " upstream CPU/req |" : "")
		print "|---|---|---:|---:|---:|---:|---:|---:|---:|" (upcol ? "---:|" : "") "---:|---:|"
		for (i = 1; i <= ns; i++) {
			s = scen[i]
			brps = median(s SUBSEP base SUBSEP "rps"); bp50 = median(s SUBSEP base SUBSEP "p50"); bp99 = median(s SUBSEP base SUBSEP "p99")
			for (j = 1; j <= nl[s]; j++) {
				l = lab[s, j]
				rps = median(s SUBSEP l SUBSEP "rps"); p50 = median(s SUBSEP l SUBSEP "p50"); p99 = median(s SUBSEP l SUBSEP "p99")
				cpu = median(s SUBSEP l SUBSEP "cpu"); up = median(s SUBSEP l SUBSEP "up")
				printf "| %s | %s | %d | %s | %s | %s | %s | %s | %s |%s %d | %d |\n", s, l, rps, us(p50), us(p99),
					ratio(rps, brps), ratio(p50, bp50), ratio(p99, bp99), (cpu > 0 ? sprintf("%.1f µs", cpu) : "n/a"),
					(upcol ? (up > 0 ? sprintf(" %.1f µs |", up) : " n/a |") : ""), runs[s, l], bad[s, l]
			}
		}
	}' "$BENCH_RESULTS"
}

bench_machine() {
	local cpu
	cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null)
	printf '%s CPU(s) (%s), %s MiB RAM, Linux %s, %s\n' "$(nproc)" "${cpu:-unknown CPU}" \
		"$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 }' /proc/meminfo)" "$(uname -r)" \
		"$(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")"
}

# bench_load: the 1/5/15-minute load averages, to show how busy the machine was.
bench_load() { cut -d' ' -f1-3 /proc/loadavg; }

# nginx settings every benchmark shares (none of them under test); PREFIX
# stands for the instance's own directory: ${nginx_common//PREFIX/$dir}.
# shellcheck disable=SC2034 # used by the scripts that source this file
nginx_common="
pid PREFIX/nginx.pid;
error_log PREFIX/error.log warn;
events { worker_connections 4096; }
"
# shellcheck disable=SC2034
nginx_http_common="
	access_log off;
	client_body_temp_path PREFIX/client_body;
	proxy_temp_path PREFIX/proxy;
	fastcgi_temp_path PREFIX/fastcgi;
	uwsgi_temp_path PREFIX/uwsgi;
	scgi_temp_path PREFIX/scgi;
	# edged keeps a client connection for any number of requests; nginx's
	# default (1000) would make wrk reconnect, which edged never asks for.
	keepalive_requests 1000000;
	keepalive_timeout 75s;
"
