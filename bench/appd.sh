#!/bin/bash
# bench/appd.sh — the same WSGI app (appd/supervisor/testdata/wsgiapp.py)
# served by gunicorn alone (-w N, and --preload -w N) and by appd: with its
# Python runner as configured by default (appd-python: a zygote that
# imported Python and gunicorn forks the workers, each imports the app),
# with zygote = false (an interpreter exec'd per worker), with
# preload = true (the zygote imports the app), with N single-worker
# gunicorns (what appd ran before the runner), and with a Go worker
# (appd's own cost).
#
# For each, twice — the tiny app, and the app with a 50 MiB import
# (APP_IMPORT_MB=50: allocated and touched at import) — it measures:
#   - memory of the whole process tree once warm: PSS and RSS summed over
#     /proc/PID/smaps_rollup of the master and every descendant, and the
#     PSS of each part: the master (appd or gunicorn's arbiter), the
#     processes between it and the workers (a zygote, nested masters), the
#     workers;
#   - under a wrk load, RELOADS reloads (SIGHUP): the time from SIGHUP to a
#     fully ready new generation (appd: from its log, every new worker
#     ready and the old ones draining; gunicorn: every worker pid new, which
#     is all gunicorn knows: it does not wait for its workers to boot), and
#     the failed requests (socket errors + non-2xx) during them;
#   - one crashed worker: the time until its replacement serves (appd: from
#     its log; gunicorn: a new pid).
# Prints two tables; never fails on speed.
#
# Loopback only, bounded (each load run lasts at most LOAD_SECS).
# Environment: WORKERS=4 RELOADS=10 LOAD_SECS=20 CONNS=32 BIG_MB=50
# PORT=18401 (one port per configuration from there) ONLY="key ..." (run only
# these configurations: gunicorn gunicorn-preload runner exec preload
# nested go) APPS="tiny big" MEM_ONLY=1 (memory only: no reloads, no crash)
# APPD=path (measure that binary; default: built from the tree as the
# packages build it, without cgo, stripped).
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
WORKERS=${WORKERS:-4}
RELOADS=${RELOADS:-10}
LOAD_SECS=${LOAD_SECS:-20}
CONNS=${CONNS:-32}
BIG_MB=${BIG_MB:-50}
PORT=${PORT:-18401}
ONLY=${ONLY:-gunicorn gunicorn-preload runner exec preload nested go}
MEM_ONLY=${MEM_ONLY:-0}
APPS=${APPS:-tiny big}
app_dir="$root/appd/supervisor/testdata" # wsgiapp.py
runner="$root/appd/python/appd-python"

say() { printf 'bench/appd: %s\n' "$*" >&2; }

need=()
[ -x /usr/bin/gunicorn ] || need+=(gunicorn)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
	say "installing ${need[*]}"
	if ! { apt-get update -qq && apt-get install -y -qq "${need[@]}"; } >/dev/null 2>&1; then
		say "cannot install ${need[*]}; skipping"
		exit 0
	fi
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-appd.XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
	wait 2>/dev/null
	if [ "${BENCH_KEEP:-0}" = 1 ]; then say "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# appd as the packages build it (no cgo, stripped: its own memory is part
# of what is measured), else bin/appd.
appd=${APPD:-}
if [ -z "$appd" ]; then
	say "building appd"
	if (cd "$root" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/appd" ./appd); then
		appd=$work/appd
	elif [ -x "$root/bin/appd" ]; then
		appd=$root/bin/appd
	else
		exit 1
	fi
fi
goworker=""
if (cd "$root" && go build -o "$work/goworker" ./appd/internal/testworker); then
	goworker=$work/goworker
fi

now_ms() { date +%s%3N; }

children() { pgrep -P "$1" | sort -n; }

# descendants PID: PID and every process below it.
descendants() {
	ps -e -o pid=,ppid= | awk -v top="$1" '
		{ kids[$2] = kids[$2] " " $1 }
		END { q[1] = top; n = 1; for (i = 1; i <= n; i++) { print q[i]; split(kids[q[i]], k, " "); for (j in k) if (k[j] != "") q[++n] = k[j] } }'
}

# parts_mem PID: "MASTER_PSS MIDDLE_PSS WORKERS_PSS WORKERS" in KiB: PID
# itself, the processes below it that have children (a zygote, nested
# masters), and the others (the workers).
parts_mem() {
	local top=$1 master=0 middle=0 leaves=0 n=0 p v
	for p in $(descendants "$top"); do
		v=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null) || continue
		[ -n "$v" ] || continue
		if [ "$p" = "$top" ]; then
			master=$v
		elif [ -n "$(pgrep -P "$p")" ]; then
			middle=$((middle + v))
		else
			leaves=$((leaves + v))
			n=$((n + 1))
		fi
	done
	echo "$master $middle $leaves $n"
}

# tree_mem PID: "PSS_KiB RSS_KiB PROCESSES" of PID and its descendants.
tree_mem() {
	local pss=0 rss=0 n=0 p v
	for p in $(descendants "$1"); do
		v=$(awk '/^Rss:/ {r = $2} /^Pss:/ {s = $2} END {print s + 0, r + 0}' "/proc/$p/smaps_rollup" 2>/dev/null) || continue
		[ -n "$v" ] || continue
		pss=$((pss + ${v% *}))
		rss=$((rss + ${v#* }))
		n=$((n + 1))
	done
	echo "$pss $rss $n"
}

# wait_until TIMEOUT_S CMD...: poll CMD every 5ms until it succeeds.
wait_until() {
	local end=$(( $(now_ms) + $1 * 1000 )); shift
	until "$@"; do
		[ "$(now_ms)" -gt "$end" ] && return 1
		sleep 0.005
	done
}

wait_http() { wait_until 60 curl -fs -o /dev/null "http://127.0.0.1:$1/"; }

# warm PORT: two seconds of load, so every worker has served.
warm() { wrk -t2 -c"$CONNS" -d2s "http://127.0.0.1:$1/" >/dev/null 2>&1; }

run_wrk() {
	wrk -t2 -c"$CONNS" -d"${LOAD_SECS}s" --latency "http://127.0.0.1:$1/" >"$2" 2>&1 &
	wrk_pid=$!
}

# wrk_summary FILE: "requests failed p99", failed being socket errors
# (connect, read, write, timeout: no answer within wrk's 2 s) plus non-2xx;
# what they were goes to FILE.why.
wrk_summary() {
	local f=$1 reqs errs non2xx p99
	reqs=$(awk '/requests in/ {print $1}' "$f")
	errs=$(awk '/Socket errors/ {gsub(",",""); print $4+$6+$8+$10}' "$f")
	non2xx=$(awk '/Non-2xx/ {print $NF}' "$f")
	p99=$(awk '$1=="99%" {print $2}' "$f")
	{ grep -h 'Socket errors' "$f"; grep -h 'Non-2xx' "$f"; } >"$f.why" 2>/dev/null
	echo "${reqs:-0} $(( ${errs:-0} + ${non2xx:-0} )) ${p99:-?}"
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print "?"; else print a[int((NR+1)/2)]}'; }

declare -A R
port=$PORT

# ---------------------------------------------------------------- gunicorn
# bench_gunicorn KEY APP EXTRA-ARGS...
bench_gunicorn() {
	local key=$1 app=$2; shift 2
	local dir=$work/$key-$app mb=0
	mkdir -p "$dir"
	[ "$app" = big ] && mb=$BIG_MB
	port=$((port + 1))
	say "$key ($app app) on :$port"
	(cd "$app_dir" && APP_IMPORT_MB=$mb exec /usr/bin/gunicorn -w "$WORKERS" "$@" --bind "127.0.0.1:$port" \
		--graceful-timeout 30 --log-level warning wsgiapp:app) >"$dir/log" 2>&1 &
	local gmaster=$!
	pids+=("$gmaster")
	wait_http "$port" || { say "gunicorn did not start"; cat "$dir/log" >&2; return 1; }
	wait_until 60 bash -c "[ \$(pgrep -P $gmaster | wc -l) -eq $WORKERS ]"
	warm "$port"
	R[$key.$app.mem]=$(tree_mem "$gmaster")
	R[$key.$app.parts]=$(parts_mem "$gmaster")
	if [ "$MEM_ONLY" = 1 ]; then
		kill -TERM "$gmaster"
		wait "$gmaster" 2>/dev/null
		return 0
	fi

	local old
	all_new() {
		local p n=0
		for p in $(children "$gmaster"); do
			grep -qx "$p" <<<"$old" && return 1
			n=$((n + 1))
		done
		[ "$n" -eq "$WORKERS" ]
	}
	run_wrk "$port" "$dir/wrk.txt"
	sleep 1
	local i t0 times=()
	for i in $(seq "$RELOADS"); do
		old=$(children "$gmaster")
		t0=$(now_ms)
		kill -HUP "$gmaster"
		if wait_until 60 all_new; then times+=($(( $(now_ms) - t0 ))); else times+=(timeout); fi
		sleep 0.5
	done
	wait "$wrk_pid"
	R[$key.$app.wrk]=$(wrk_summary "$dir/wrk.txt")
	R[$key.$app.why]=$(cat "$dir/wrk.txt.why")
	R[$key.$app.reload]=$(printf '%s\n' "${times[@]}" | median)

	local victim
	victim=$(children "$gmaster" | head -n1)
	t0=$(now_ms)
	kill -KILL "$victim"
	one_new() { [ "$(children "$gmaster" | wc -l)" -eq "$WORKERS" ] && ! children "$gmaster" | grep -qx "$victim"; }
	if wait_until 30 one_new; then R[$key.$app.crash]=$(($(now_ms) - t0)); else R[$key.$app.crash]=timeout; fi
	kill -TERM "$gmaster"
	wait "$gmaster" 2>/dev/null
}

# -------------------------------------------------------------------- appd
log_ms() { # the millisecond timestamp of a log line, since midnight
	awk '{split(substr($1, 12, 12), t, ":"); print int((t[1] * 3600 + t[2] * 60 + t[3]) * 1000)}'
}
# bench_appd KEY APP COMMAND-TOML [EXTRA-APP-TOML]
bench_appd() {
	local key=$1 app=$2 command=$3 extra=${4:-} dir=$work/$1-$2 mb=0
	mkdir -p "$dir"
	[ "$app" = big ] && mb=$BIG_MB
	port=$((port + 1))
	say "appd: $key ($app app) on :$port"
	{
		echo "[app]"
		[ "$(id -u)" != 0 ] || echo 'user = "root"' # as gunicorn runs here
		echo "command = $command"
		echo "listen = [\"127.0.0.1:$port\"]"
		echo "directory = \"$app_dir\""
		echo "control = \"$dir/appd.ctl\""
		echo "environment = { APP_IMPORT_MB = \"$mb\" }"
		printf '%b' "$extra"
		echo "[workers]"
		echo "count = $WORKERS"
		echo "graceful_timeout = \"30s\""
	} >"$dir/appd.toml"
	"$appd" -t -config "$dir/appd.toml" >/dev/null || exit 1
	"$appd" -config "$dir/appd.toml" -name bench >"$dir/appd.log" 2>&1 &
	local apid=$! log=$dir/appd.log
	pids+=("$apid")
	wait_until 120 grep -q "all workers ready" "$log" || { say "appd did not start"; cat "$log" >&2; return 1; }
	wait_http "$port"
	warm "$port"
	R[$key.$app.mem]=$(tree_mem "$apid")
	R[$key.$app.parts]=$(parts_mem "$apid")
	R[$key.$app.own]=$(awk '/^Pss:/ {print $2}' "/proc/$apid/smaps_rollup")
	if [ "$MEM_ONLY" = 1 ]; then
		kill -TERM "$apid"
		wait "$apid"
		R[$key.$app.exit]=$?
		return 0
	fi

	run_wrk "$port" "$dir/wrk.txt"
	sleep 1
	local gen=1 i times=() start_ms done_ms
	for i in $(seq "$RELOADS"); do
		gen=$((gen + 1))
		kill -HUP "$apid"
		if wait_until 120 grep -q "reload done: new generation serving gen=$gen " "$log"; then
			start_ms=$(grep "reloading: starting a new generation beside the old gen=$gen " "$log" | log_ms)
			done_ms=$(grep "reload done: new generation serving gen=$gen " "$log" | log_ms)
			times+=($((done_ms - start_ms)))
		else
			times+=(timeout)
		fi
		sleep 0.5
	done
	wait "$wrk_pid"
	R[$key.$app.wrk]=$(wrk_summary "$dir/wrk.txt")
	R[$key.$app.why]=$(cat "$dir/wrk.txt.why")
	R[$key.$app.reload]=$(printf '%s\n' "${times[@]}" | median)

	# A crashed worker: the process that serves (for nested gunicorns, the
	# Python worker under the slot's gunicorn master, which replaces it).
	local victim n t0
	if [ "$key" = nested ]; then
		victim=$(descendants "$apid" | tail -n1)
		t0=$(now_ms)
		kill -KILL "$victim"
		gone() { ! kill -0 "$victim" 2>/dev/null && [ "$(descendants "$apid" | wc -l)" -ge $((2 * WORKERS + 1)) ]; }
		if wait_until 30 gone; then R[$key.$app.crash]=$(($(now_ms) - t0)); else R[$key.$app.crash]=timeout; fi
	else
		victim=$(grep -o 'worker ready worker=w0 pid=[0-9]*' "$log" | tail -n1 | sed 's/.*pid=//')
		n=$(grep -c "worker ready" "$log")
		kill -KILL "$victim"
		if wait_until 30 bash -c "[ \$(grep -c 'worker ready' '$log') -gt $n ]"; then
			start_ms=$(grep "worker exited unexpectedly.* pid=$victim " "$log" | log_ms)
			done_ms=$(grep "worker ready" "$log" | tail -n1 | log_ms)
			R[$key.$app.crash]=$((done_ms - start_ms))
		else
			R[$key.$app.crash]=timeout
		fi
	fi
	R[$key.$app.appd]=$(($(awk '/VmRSS/ {print $2}' "/proc/$apid/status") / 1024))
	kill -TERM "$apid"
	wait "$apid"
	R[$key.$app.exit]=$?
}

has() { [[ " $ONLY " == *" $1 "* ]]; }
for app in $APPS; do
	has gunicorn && bench_gunicorn gunicorn "$app"
	has gunicorn-preload && bench_gunicorn gunicorn-preload "$app" --preload
	has runner && bench_appd runner "$app" "[\"$runner\", \"wsgiapp:app\"]"
	has exec && bench_appd exec "$app" "[\"$runner\", \"wsgiapp:app\"]" 'zygote = false\n'
	has preload && bench_appd preload "$app" "[\"$runner\", \"wsgiapp:app\"]" 'preload = true\n'
	has nested && [ "$app" = tiny ] &&
		bench_appd nested "$app" '["/usr/bin/gunicorn", "-w", "1", "--graceful-timeout", "30", "--log-level", "warning", "wsgiapp:app"]'
	has go && [ "$app" = tiny ] && [ -n "$goworker" ] && bench_appd go "$app" "[\"$goworker\"]"
done

# ------------------------------------------------------------------ tables
mib() { [ -n "${1:-}" ] && awk -v k="$1" 'BEGIN {printf "%.0f", k / 1024}' || echo "-"; }
names=(gunicorn gunicorn-preload runner exec preload nested go)
declare -A label=(
	[gunicorn]="gunicorn -w $WORKERS"
	[gunicorn-preload]="gunicorn --preload -w $WORKERS"
	[runner]="appd + appd-python (zygote)"
	[exec]="appd + appd-python, zygote = false"
	[preload]="appd + appd-python, preload = true"
	[nested]="appd + ${WORKERS}x gunicorn -w 1 (before)"
	[go]="appd + Go worker"
)
printf '\nMemory of the whole process tree once warm (smaps_rollup), %d workers, %d CPUs, load %s\n' \
	"$WORKERS" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-38s %10s %10s %6s   %10s %10s %6s   %s\n' "" "tiny PSS" "RSS" "procs" "+${BIG_MB}MiB PSS" "RSS" "procs" "appd's own PSS"
for k in "${names[@]}"; do
	has "$k" || continue
	read -r tp tr tn <<<"${R[$k.tiny.mem]:-}"
	read -r bp br bn <<<"${R[$k.big.mem]:-}"
	printf '%-38s %8s MiB %6s MiB %6s   %8s MiB %6s MiB %6s   %s\n' "${label[$k]}" "$(mib "${tp:-}")" "$(mib "${tr:-}")" "${tn:--}" \
		"$(mib "${bp:-}")" "$(mib "${br:-}")" "${bn:--}" "$(mib "${R[$k.tiny.own]:-}")"
done
printf '\nPSS of each part, tiny app: the master, the processes between it and the workers (zygote,\nnested masters), the workers (all, and each on average)\n'
printf '%-38s %10s %10s %10s %10s\n' "" "master" "zygote" "workers" "each"
for k in "${names[@]}"; do
	has "$k" || continue
	read -r pm pz pw pn <<<"${R[$k.tiny.parts]:-}"
	[ -n "${pm:-}" ] || continue
	printf '%-38s %6s MiB %6s MiB %6s MiB %6s MiB\n' "${label[$k]}" "$(mib "$pm")" "$(mib "$pz")" "$(mib "$pw")" \
		"$(awk -v w="$pw" -v n="$pn" 'BEGIN {printf "%.1f", n ? w / n / 1024 : 0}')"
done
[ "$MEM_ONLY" = 1 ] && exit 0
printf '\n%d reloads (SIGHUP) under wrk -c%d for %ss each, loopback\n' "$RELOADS" "$CONNS" "$LOAD_SECS"
printf '%-38s %14s %14s %16s %11s %14s\n' "" "HUP->ready ms" "(+${BIG_MB}MiB)" "failed/requests" "p99" "crash->new ms"
for k in "${names[@]}"; do
	has "$k" || continue
	read -r reqs fail p99 <<<"${R[$k.tiny.wrk]:-- - -}"
	printf '%-38s %14s %14s %16s %11s %14s\n' "${label[$k]}" "${R[$k.tiny.reload]:--}" "${R[$k.big.reload]:--}" \
		"$fail/$reqs" "$p99" "${R[$k.tiny.crash]:--}"
done
for k in "${names[@]}"; do
	[ -n "${R[$k.big.wrk]:-}" ] || continue
	read -r reqs fail p99 <<<"${R[$k.big.wrk]}"
	printf '%-38s %s/%s failed during the +%dMiB reloads, p99 %s\n' "${label[$k]}" "$fail" "$reqs" "$BIG_MB" "$p99"
done
for k in "${!R[@]}"; do
	[[ $k == *.why ]] && [ -n "${R[$k]}" ] && printf '  %s: %s\n' "$k" "$(echo "${R[$k]}" | tr -s ' \n' ' ')"
done
echo "gunicorn's HUP time is until every worker pid is new (it does not wait for its workers to boot;"
echo "with --preload it does not load new code either). appd's is from its log: every new worker"
echo "ready (READY=1) and the old ones draining. appd's exit status on SIGTERM:"
for k in "${names[@]}"; do
	[ -n "${R[$k.tiny.exit]:-}" ] && printf '  %s: %s (appd RSS %s MiB)\n' "${label[$k]}" "${R[$k.tiny.exit]}" "${R[$k.tiny.appd]}"
done
true
