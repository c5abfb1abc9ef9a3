#!/bin/bash
# bench/appd.sh — the same tiny WSGI app served by gunicorn alone (-w N,
# reloaded with SIGHUP) and by appd running N single-worker gunicorns
# (reloaded with SIGHUP: a new generation beside the old). Under a wrk load
# it measures failed requests and p99 latency during 10 reloads, the time
# from SIGHUP to a fully new generation, the time to replace a crashed
# worker, and appd's own memory. Prints a table; never fails on speed.
#
# Loopback only, bounded (each load run lasts at most LOAD_SECS).
# Environment: WORKERS=4 RELOADS=10 LOAD_SECS=30 CONNS=32 PORT_G=18401 PORT_A=18402
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
WORKERS=${WORKERS:-4}
RELOADS=${RELOADS:-10}
LOAD_SECS=${LOAD_SECS:-30}
CONNS=${CONNS:-32}
PORT_G=${PORT_G:-18401}
PORT_A=${PORT_A:-18402}
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
say "appd with $WORKERS x gunicorn -w 1 on :$PORT_A"
cat >"$work/appd.toml" <<EOF
[app]
command = ["/usr/bin/gunicorn", "-w", "1", "--graceful-timeout", "30", "--log-level", "warning", "wsgiapp:app"]
listen = ["127.0.0.1:$PORT_A"]
directory = "$app_dir"
control = "$work/appd.ctl"
[workers]
count = $WORKERS
graceful_timeout = "30s"
EOF
"$appd" -t -config "$work/appd.toml" >/dev/null || exit 1
"$appd" -config "$work/appd.toml" -name bench >"$work/appd.log" 2>&1 &
apid=$!
pids+=("$apid")

astatus() { "$appd" status -json -socket "$work/appd.ctl" 2>/dev/null || echo '{}'; }
# a_gen_serving GEN: generation GEN serving in every slot, nothing else left.
a_gen_serving() {
	astatus | python3 -c '
import json, sys
st = json.load(sys.stdin)
gen, n = int(sys.argv[1]), int(sys.argv[2])
ok = st.get("serving_generation") == gen and st["ready"] == n and len(st["slots"]) == n and all(
    w["generation"] == gen and w["state"] == "ready" for w in st["slots"])
sys.exit(0 if ok else 1)' "$1" "$WORKERS"
}
# a_gen_ready GEN: every slot has a ready worker of generation GEN.
a_gen_ready() {
	astatus | python3 -c '
import json, sys
st = json.load(sys.stdin)
gen, n = int(sys.argv[1]), int(sys.argv[2])
slots = {w["slot"] for w in st.get("slots", []) if w["generation"] == gen and w["state"] == "ready"}
sys.exit(0 if len(slots) == n else 1)' "$1" "$WORKERS"
}
wait_until 60 a_gen_serving 1 || { say "appd did not start"; cat "$work/appd.log" >&2; exit 1; }
wait_http "$PORT_A"
# Every slot's gunicorn has its worker.
a_grandchildren() { grandchildren "$apid"; }
wait_until 30 bash -c "[ \$(for m in \$(pgrep -P $apid); do pgrep -P \$m; done | wc -l) -eq $WORKERS ]"

run_wrk "$PORT_A" "$work/wrk-a.txt"
sleep 1
a_reload=()
a_ready=()
gen=1
for i in $(seq "$RELOADS"); do
	gen=$((gen + 1))
	t0=$(now_ms)
	kill -HUP "$apid"
	if wait_until 60 a_gen_ready "$gen"; then a_ready+=($(( $(now_ms) - t0 ))); else a_ready+=(timeout); fi
	if wait_until 60 a_gen_serving "$gen"; then a_reload+=($(( $(now_ms) - t0 ))); else a_reload+=(timeout); fi
	sleep 0.5
done
wait "$wrk_pid"
read -r a_reqs a_fail a_p99 < <(wrk_summary "$work/wrk-a.txt")

# A crashed worker process (the Python worker that serves): the slot's
# gunicorn replaces it, as gunicorn alone does.
a_crash=()
for i in 1 2 3; do
	victim=$(a_grandchildren | head -n1)
	t0=$(now_ms)
	kill -KILL "$victim"
	a_one_new() { [ "$(a_grandchildren | wc -l)" -eq "$WORKERS" ] && ! a_grandchildren | grep -qx "$victim"; }
	if wait_until 30 a_one_new; then a_crash+=($(( $(now_ms) - t0 ))); else a_crash+=(timeout); fi
	sleep 0.5
done
# A crashed slot (its gunicorn master killed): appd restarts the slot
# (restart_delay 100ms +-25% first) and counts it ready at READY=1.
a_slot=()
for i in 1 2 3; do
	victim=$(children "$apid" | head -n1)
	t0=$(now_ms)
	kill -KILL "$victim"
	a_slot_new() {
		astatus | python3 -c '
import json, sys
st = json.load(sys.stdin)
victim, n = int(sys.argv[1]), int(sys.argv[2])
pids = [w["pid"] for w in st["slots"] if w["state"] == "ready"]
sys.exit(0 if st["ready"] == n and victim not in pids else 1)' "$victim" "$WORKERS"
	}
	if wait_until 30 a_slot_new; then a_slot+=($(( $(now_ms) - t0 ))); else a_slot+=(timeout); fi
	sleep 1
done
rss=$(awk '/VmRSS/ {print $2}' "/proc/$apid/status")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$apid/status")
kill -TERM "$apid"
wait "$apid"; a_exit=$?

# ------------------------------------------------------------------- table
printf '\nappd vs gunicorn: %d workers, %d reloads under wrk -c%d for %ss, loopback, %d CPUs\n' \
	"$WORKERS" "$RELOADS" "$CONNS" "$LOAD_SECS" "$(nproc)"
printf '%-44s %22s %26s\n' "" "gunicorn -w $WORKERS (HUP)" "appd + ${WORKERS}x gunicorn -w 1"
printf '%-44s %22s %26s\n' "requests during the reloads" "$g_reqs" "$a_reqs"
printf '%-44s %22s %26s\n' "failed requests (socket errors + non-2xx)" "$g_fail" "$a_fail"
printf '%-44s %22s %26s\n' "p99 latency during the reloads" "$g_p99" "$a_p99"
printf '%-44s %22s %26s\n' "SIGHUP -> new generation serving, median ms" "$(printf '%s\n' "${g_reload[@]}" | median)" "$(printf '%s\n' "${a_ready[@]}" | median)"
printf '%-44s %22s %26s\n' "SIGHUP -> old generation gone, median ms" "$(printf '%s\n' "${g_reload[@]}" | median)" "$(printf '%s\n' "${a_reload[@]}" | median)"
printf '%-44s %22s %26s\n' "  (all, ms)" "$(echo "${g_reload[*]}" | tr ' ' ,)" "$(echo "${a_reload[*]}" | tr ' ' ,)"
printf '%-44s %22s %26s\n' "crashed worker process replaced, median ms" "$(printf '%s\n' "${g_crash[@]}" | median)" "$(printf '%s\n' "${a_crash[@]}" | median)"
printf '%-44s %22s %26s\n' "crashed appd slot (its master) ready, ms" "-" "$(echo "${a_slot[*]}" | tr ' ' ,)"
printf '%-44s %22s %26s\n' "appd RSS now / peak" "-" "$((rss / 1024)) MiB / $((hwm / 1024)) MiB"
printf '%-44s %22s %26s\n' "appd exit status on SIGTERM" "-" "$a_exit"
echo "gunicorn's HUP forks new workers from its master and stops the old ones at once, ready or not;"
echo "appd starts a fresh gunicorn per slot (new code, new interpreter) and drains an old one only after"
echo "its slot's new one sent READY=1 (gunicorn sends it from its master, before its worker has booted)."
