#!/bin/bash
# vm-test.sh — run appd's cgroup tests (`make vm-test`) where real cgroup v2
# controllers exist: in the Debian 12 VM of packaging/e2e/vm.sh, each test
# binary under `systemd-run --wait --pipe -p Delegate=yes` (a delegated
# unit, as appd@.service is) with APPD_CGROUP_TESTS=1, which makes the
# tests that need memory/cpu/pids fail instead of skip when those are absent.
#
# Each binary runs as root, and again inside the sandbox of the shipped
# units/appd@.service (its capability bounding set, seccomp filter and
# Protect*= settings), so a unit change that breaks appd's cgroup handling
# fails here; the cgroup tests also run as an unprivileged service user
# (DynamicUser=yes: systemd chowns the tree to it instead).
#
# Usage: packaging/e2e/vm-test.sh [go test flags for the binaries, e.g. -test.run OOM]
# Environment: VM_TEST_TIMEOUT=15m (go test -timeout inside the VM),
# VM_SUPERVISOR_RUN="Cgroup|Journal" (which supervisor tests run in the VM), and
# everything vm.sh reads (VM_TIMEOUT, VM_MEM, VM_CPUS, VM_CONSOLE=1 ...).
# Exit code: that of the tests (0 = all passed); vm.sh's 124/125 for a VM
# that timed out or never booted.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
GO=${GO:-go}
t0=$SECONDS
say() { printf 'vm-test: %s\n' "$*" >&2; }

share=$(mktemp -d "${TMPDIR:-/tmp}/appd-vm-test.XXXXXX")
trap 'rm -rf "$share"' EXIT

# Static test binaries: they run in the guest with nothing but the kernel.
tests=()
build() { # build PKG NAME
	say "building $1"
	CGO_ENABLED=0 "$GO" test -c -o "$share/$2.test" "$1"
	tests+=("$2")
}
build ./appd/cgroup cgroup
# The supervisor's cgroup tests, once they exist (they look at
# APPD_CGROUP_TESTS). The guest has no Go toolchain, so the test worker is
# built here and named by APPD_TESTWORKER. Only tests matching
# VM_SUPERVISOR_RUN run in the VM (the rest run on the host).
sup_run=${VM_SUPERVISOR_RUN:-Cgroup|Journal}
if grep -qs APPD_CGROUP_TESTS appd/supervisor/*_test.go; then
	build ./appd/supervisor supervisor
	say "building ./appd/internal/testworker"
	CGO_ENABLED=0 "$GO" build -o "$share/testworker" ./appd/internal/testworker
	# The Python runner's tests (zygote forks in their leaves, OOM in one
	# fork) need it, its test application and Debian's gunicorn.
	cp appd/python/appd-python "$share/appd-python"
	mkdir -p "$share/testdata" && cp appd/supervisor/testdata/*.py "$share/testdata/"
	export VM_EXTRA_PACKAGES="${VM_EXTRA_PACKAGES:-} python3-gunicorn"
fi
say "built ${tests[*]} in $((SECONDS - t0)) s"

# The sandbox of the shipped appd@.service (its [Service] settings but the
# ones about starting and stopping): the cgroup code must work inside it.
if [ -f units/appd@.service ]; then
	awk '/^\[Service\]/{s=1;next} /^\[/{s=0} s && /^[A-Z][A-Za-z]*=/' units/appd@.service |
		grep -Ev '^(Type|Exec[A-Za-z]*|Restart[A-Za-z]*|Timeout[A-Za-z]*|KillMode|RuntimeDirectory[A-Za-z]*|Environment[A-Za-z]*)=' \
		>"$share/unit.props" || true
fi

# The script the VM runs as root, from the 9p share (its cwd).
{
	echo '#!/bin/bash'
	echo 'set -u'
	if [ $# -gt 0 ]; then printf 'args=(%s)\n' "$(printf '%q ' "$@")"; else echo 'args=()'; fi
	printf 'timeout=%q\n' "${VM_TEST_TIMEOUT:-15m}"
	printf 'tests=(%s)\n' "${tests[*]}"
	printf 'sup_run=%q\n' "$sup_run"
	cat <<'EOF'
echo "guest: $(uname -r), $(systemctl --version | head -n1), cgroup controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
rc=0
bin=/usr/local/libexec/appd-vm-test
mkdir -p "$bin"
[ -f testworker ] && install -m755 testworker "$bin/testworker"
[ -f appd-python ] && install -m755 appd-python "$bin/appd-python"
[ -d testdata ] && mkdir -p "$bin/testdata" && install -m644 testdata/*.py "$bin/testdata/"
# run NAME LABEL [systemd-run properties...]: one test binary in a delegated unit.
run() {
	local t=$1 label=$2; shift 2
	local extra=()
	[ "$t" = supervisor ] && extra=(-test.run "$sup_run")
	echo "=== $t.test ($label) under systemd-run -p Delegate=yes $*"
	local start; start=$(date +%s)
	systemd-run --quiet --wait --pipe --collect -p Delegate=yes "$@" \
		-p WorkingDirectory=/tmp -E APPD_CGROUP_TESTS=1 -E APPD_TESTWORKER="$bin/testworker" \
		-E APPD_RUNNER="$bin/appd-python" -E APPD_TESTDATA="$bin/testdata" \
		"$bin/$t.test" -test.v -test.count=1 -test.timeout="$timeout" "${extra[@]}" "${args[@]}"
	local st=$?
	echo "=== $t.test ($label): exit $st after $(( $(date +%s) - start )) s"
	[ "$st" = 0 ] || rc=$st
}
for t in "${tests[@]}"; do
	# A copy on the guest's own disk: exec from 9p works but is slow to page in.
	install -m755 "$t.test" "$bin/$t.test"
	run "$t" root
done
# appd as an unprivileged service user: systemd chowns the delegated
# cgroup to it instead of relying on root.
run cgroup "unprivileged" -p DynamicUser=yes
# Inside appd@.service's own sandbox (seccomp, capabilities, Protect*=).
if [ -s unit.props ]; then
	props=()
	while IFS= read -r p; do props+=(-p "$p"); done <unit.props
	for t in "${tests[@]}"; do
		run "$t" "appd@.service sandbox" "${props[@]}"
	done
fi
# Nothing the tests made may be left under the units' cgroups.
left=$(find /sys/fs/cgroup -type d -name 'appd-cgtest-*' 2>/dev/null)
if [ -n "$left" ]; then echo "left behind: $left"; rc=1; fi
exit $rc
EOF
} >"$share/run.sh"

say "booting the VM"
rc=0
"$root/packaging/e2e/vm.sh" run "$share" run.sh || rc=$?
say "exit $rc after $((SECONDS - t0)) s in all"
exit "$rc"
