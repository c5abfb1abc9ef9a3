#!/bin/bash
# bench/appd.sh — the same tiny WSGI app served by gunicorn alone (-w N,
# reloaded with SIGHUP) and by appd running N single-worker gunicorns
# (reloaded with SIGHUP: a new generation beside the old). Under a wrk load
# it measures failed requests and p99 latency during 10 reloads, the time
# from SIGHUP to a fully new generation, the time to replace a crashed
# worker, and appd's own memory. Prints a table; never fails on speed.
#
# Loopback only, bounded (each load run lasts at most LOAD_SECS).
# Environment: WORKERS=4 RELOADS=10 LOAD_SECS=30 CONNS=32 PORT_G=18401 PORT_A=18402 PORT_GO=18403
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
WORKERS=${WORKERS:-4}
RELOADS=${RELOADS:-10}
LOAD_SECS=${LOAD_SECS:-30}
CONNS=${CONNS:-32}
PORT_G=${PORT_G:-18401}
PORT_A=${PORT_A:-18402}
PORT_GO=${PORT_GO:-18403}
app_dir="$root/appd/supervisor/testdata" # wsgiapp.py

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
	rm -rf "$work"
}
trap cleanup EXIT

appd=$root/bin/appd
if [ ! -x "$appd" ]; then
	say "building appd"
	(cd "$root" && go build -o "$work/appd" ./appd) || exit 1
	appd=$work/appd
fi

now_ms() { date +%s%3N; }

# children PID: the child pids of PID, sorted.
children() { pgrep -P "$1" | sort -n; }

# grandchildren PID: the grandchild pids of PID, sorted (one ps call, so
# polling it costs what polling children costs).
grandchildren() {
	ps -e -o pid=,ppid= | awk -v top="$1" '{pp[$1] = $2} END {for (p in pp) if (pp[pp[p]] == top) print p}' | sort -n
}

# wait_until TIMEOUT_S CMD...: poll CMD every 5ms until it succeeds.
wait_until() {
	local end=$(( $(now_ms) + $1 * 1000 )); shift
	until "$@"; do
		[ "$(now_ms)" -gt "$end" ] && return 1
		sleep 0.005
	done
}

# wait_http PORT: until the app answers.
wait_http() { wait_until 30 curl -fs -o /dev/null "http://127.0.0.1:$1/"; }

# run_wrk PORT OUT: wrk in the background for LOAD_SECS.
run_wrk() {
	wrk -t2 -c"$CONNS" -d"${LOAD_SECS}s" --latency "http://127.0.0.1:$1/" >"$2" 2>&1 &
	wrk_pid=$!
}

# wrk_summary FILE: "requests failed p99"
wrk_summary() {
	local f=$1 reqs errs non2xx p99
	reqs=$(awk '/requests in/ {print $1}' "$f")
	errs=$(awk '/Socket errors/ {gsub(",",""); print $4+$6+$8+$10}' "$f")
	non2xx=$(awk '/Non-2xx/ {print $NF}' "$f")
	p99=$(awk '$1=="99%" {print $2}' "$f")
	echo "${reqs:-0} $(( ${errs:-0} + ${non2xx:-0} )) ${p99:-?}"
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print "?"; else print a[int((NR+1)/2)]}'; }

# ---------------------------------------------------------------- gunicorn
say "gunicorn -w $WORKERS alone on :$PORT_G"
(cd "$app_dir" && exec /usr/bin/gunicorn -w "$WORKERS" --bind "127.0.0.1:$PORT_G" --graceful-timeout 30 --log-level warning wsgiapp:app) >"$work/gunicorn.log" 2>&1 &
gmaster=$!
pids+=("$gmaster")
wait_http "$PORT_G" || { say "gunicorn did not start"; cat "$work/gunicorn.log" >&2; exit 1; }
wait_until 30 bash -c "[ \$(pgrep -P $gmaster | wc -l) -eq $WORKERS ]"

# A fully new generation: WORKERS children, none of them from before.
g_all_new() {
	local cur n=0
	cur=$(children "$gmaster")
	for p in $cur; do
		grep -qx "$p" <<<"$old" && return 1
		n=$((n + 1))
	done
	[ "$n" -eq "$WORKERS" ]
}
run_wrk "$PORT_G" "$work/wrk-g.txt"
sleep 1
g_reload=()
for i in $(seq "$RELOADS"); do
	old=$(children "$gmaster")
	t0=$(now_ms)
	kill -HUP "$gmaster"
	if wait_until 30 g_all_new; then g_reload+=($(( $(now_ms) - t0 ))); else g_reload+=(timeout); fi
	sleep 0.5
done
wait "$wrk_pid"
read -r g_reqs g_fail g_p99 < <(wrk_summary "$work/wrk-g.txt")

# A crashed worker: kill -9 one, time until a new one is there.
g_crash=()
for i in 1 2 3; do
	victim=$(children "$gmaster" | head -n1)
	old=$(children "$gmaster")
	t0=$(now_ms)
	kill -KILL "$victim"
	g_one_new() { [ "$(children "$gmaster" | wc -l)" -eq "$WORKERS" ] && ! children "$gmaster" | grep -qx "$victim"; }
	if wait_until 30 g_one_new; then g_crash+=($(( $(now_ms) - t0 ))); else g_crash+=(timeout); fi
	sleep 0.5
done
kill -TERM "$gmaster"; wait "$gmaster" 2>/dev/null

# -------------------------------------------------------------------- appd
# bench_appd KEY PORT COMMAND-TOML: appd with WORKERS workers of COMMAND;
# results in R[KEY.*]. Reload and restart times come from appd's own log
# (grep is cheap to poll; appd stamps each event to the millisecond).
declare -A R
log_ms() { # the millisecond timestamp of a log line, since midnight
	awk '{split(substr($1, 12, 12), t, ":"); print int((t[1] * 3600 + t[2] * 60 + t[3]) * 1000)}'
}
bench_appd() {
	local key=$1 port=$2 command=$3 dir=$work/$1
	mkdir -p "$dir"
	say "appd with $WORKERS x $key on :$port"
	{
		echo "[app]"
		[ "$(id -u)" != 0 ] || echo 'user = "root"' # as gunicorn runs here
		echo "command = $command"
		echo "listen = [\"127.0.0.1:$port\"]"
		echo "directory = \"$app_dir\""
		echo "control = \"$dir/appd.ctl\""
		echo "[workers]"
		echo "count = $WORKERS"
		echo "graceful_timeout = \"30s\""
	} >"$dir/appd.toml"
	"$appd" -t -config "$dir/appd.toml" >/dev/null || exit 1
	"$appd" -config "$dir/appd.toml" -name bench >"$dir/appd.log" 2>&1 &
	local apid=$! log=$dir/appd.log
	pids+=("$apid")
	wait_until 60 grep -q "all workers ready" "$log" || { say "appd did not start"; cat "$log" >&2; exit 1; }
	wait_http "$port"
	sleep 1

	run_wrk "$port" "$dir/wrk.txt"
	sleep 1
	local gen=1 i t0 ready=() gone=() start_ms done_ms last_ms
	for i in $(seq "$RELOADS"); do
		gen=$((gen + 1))
		kill -HUP "$apid"
		if wait_until 60 grep -q "reload done: new generation serving gen=$gen " "$log" &&
			wait_until 60 bash -c "[ \$(grep -c 'worker exited .* gen=$((gen - 1)) ' '$log') -ge $WORKERS ]"; then
			start_ms=$(grep "reloading: starting a new generation beside the old gen=$gen " "$log" | log_ms)
			done_ms=$(grep "reload done: new generation serving gen=$gen " "$log" | log_ms)
			last_ms=$(grep "worker exited .* gen=$((gen - 1)) " "$log" | log_ms | sort -n | tail -n1)
			ready+=($((done_ms - start_ms)))
			gone+=($((last_ms - start_ms)))
		else
			ready+=(timeout)
			gone+=(timeout)
		fi
		sleep 0.5
	done
	wait "$wrk_pid"
	read -r "R[$key.reqs]" "R[$key.fail]" "R[$key.p99]" < <(wrk_summary "$dir/wrk.txt")
	R[$key.ready]=$(printf '%s\n' "${ready[@]}" | median)
	R[$key.gone]=$(printf '%s\n' "${gone[@]}" | median)

	# A crashed worker process that serves: for gunicorn, the Python worker
	# (the slot's gunicorn master replaces it, as gunicorn alone does); for
	# a Go worker, the slot's process itself (appd replaces it).
	local crash=() slot=() victim n
	for i in 1 2 3; do
		if [ "$key" = gunicorn ]; then
			victim=$(grandchildren "$apid" | head -n1)
			t0=$(now_ms)
			kill -KILL "$victim"
			one_new() { [ "$(grandchildren "$apid" | wc -l)" -eq "$WORKERS" ] && ! grandchildren "$apid" | grep -qx "$victim"; }
			if wait_until 30 one_new; then crash+=($(($(now_ms) - t0))); else crash+=(timeout); fi
			sleep 0.5
		fi
	done
	# A crashed slot: its main process killed. appd replaces a worker that
	# had served at once the first time and counts it ready at READY=1.
	for i in 1 2 3; do
		victim=$(children "$apid" | head -n1)
		n=$(grep -c "worker ready" "$log")
		kill -KILL "$victim"
		if wait_until 30 bash -c "[ \$(grep -c 'worker ready' '$log') -gt $n ]"; then
			start_ms=$(grep "worker exited unexpectedly.* pid=$victim " "$log" | log_ms)
			done_ms=$(grep "worker ready" "$log" | tail -n1 | log_ms)
			slot+=($((done_ms - start_ms)))
		else
			slot+=(timeout)
		fi
		sleep 11 # past the 10s after which a failure is a first failure again
	done
	[ "$key" = gunicorn ] || crash=("${slot[@]}")
	R[$key.crash]=$(printf '%s\n' "${crash[@]}" | median)
	R[$key.slot]=$(echo "${slot[*]}" | tr ' ' ,)
	R[$key.rss]=$(($(awk '/VmRSS/ {print $2}' "/proc/$apid/status") / 1024))
	R[$key.hwm]=$(($(awk '/VmHWM/ {print $2}' "/proc/$apid/status") / 1024))
	kill -TERM "$apid"
	wait "$apid"
	R[$key.exit]=$?
}

bench_appd gunicorn "$PORT_A" '["/usr/bin/gunicorn", "-w", "1", "--graceful-timeout", "30", "--log-level", "warning", "wsgiapp:app"]'
if (cd "$root" && go build -o "$work/goworker" ./appd/internal/testworker); then
	bench_appd go "$PORT_GO" "[\"$work/goworker\"]"
fi

# ------------------------------------------------------------------- table
row() { printf '%-42s %20s %24s %20s\n' "$@"; }
printf '\nappd vs gunicorn: %d workers, %d reloads under wrk -c%d for %ss, loopback, %d CPUs\n' \
	"$WORKERS" "$RELOADS" "$CONNS" "$LOAD_SECS" "$(nproc)"
row "" "gunicorn -w $WORKERS (HUP)" "appd: ${WORKERS}x gunicorn -w 1" "appd: ${WORKERS}x Go worker"
row "requests during the reloads" "$g_reqs" "${R[gunicorn.reqs]}" "${R[go.reqs]:-}"
row "failed requests (socket errors + non-2xx)" "$g_fail" "${R[gunicorn.fail]}" "${R[go.fail]:-}"
row "p99 latency during the reloads" "$g_p99" "${R[gunicorn.p99]}" "${R[go.p99]:-}"
row "SIGHUP -> new generation ready, median ms" "$(printf '%s\n' "${g_reload[@]}" | median)" "${R[gunicorn.ready]}" "${R[go.ready]:-}"
row "SIGHUP -> old generation gone, median ms" "$(printf '%s\n' "${g_reload[@]}" | median)" "${R[gunicorn.gone]}" "${R[go.gone]:-}"
row "crashed serving process replaced, median ms" "$(printf '%s\n' "${g_crash[@]}" | median)" "${R[gunicorn.crash]}" "${R[go.crash]:-}"
row "crashed appd slot (main process) ready, ms" "-" "${R[gunicorn.slot]}" "${R[go.slot]:-}"
row "appd RSS at the end / peak, MiB" "-" "${R[gunicorn.rss]} / ${R[gunicorn.hwm]}" "${R[go.rss]:-} / ${R[go.hwm]:-}"
row "appd exit status on SIGTERM" "-" "${R[gunicorn.exit]}" "${R[go.exit]:-}"
echo "gunicorn's HUP forks new workers from its master and stops the old ones at once, ready or"
echo "not (its times: all $WORKERS worker pids new). appd starts a fresh process per slot (new code,"
echo "new interpreter) and drains an old one only once its slot's new one sent READY=1 (gunicorn"
echo "sends it from its master, before its worker has booted); appd's times are from its own log."
echo "The Go worker column is appd's own cost with a program that starts in milliseconds."
