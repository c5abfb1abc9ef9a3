#!/bin/bash
# run.sh — `make e2e`: install the edged and appd .debs on a booted Debian 12
# (systemd as PID 1, under qemu: packaging/e2e/vm.sh) and walk the user's
# journey in packaging/e2e/journey.sh. Exits with the journey's status: 0
# when every step passed; the failing step prints its unit's journal.
#
# Builds what is missing: the packages (make deb), the demo worker
# (demo/app) and the load generator (packaging/e2e/load), both static.
# The transcript is also written to dist/e2e/transcript.log.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
GO=${GO:-go}

if ! ls dist/edged_*.deb dist/appd_*.deb >/dev/null 2>&1; then
	echo "run.sh: no packages in dist/: running make deb" >&2
	make deb
fi
share=$top/dist/e2e
rm -rf "$share"
mkdir -p "$share"
# The newest package of each name.
for p in edged appd; do
	cp "$(ls -t dist/${p}_*.deb | head -n1)" "$share/"
done
# The same tree as a later version, to test an upgrade in place.
DIST="$share/upgrade" VERSION=99.0.0 packaging/build.sh deb >/dev/null
if [ -d demo/app ]; then
	CGO_ENABLED=0 $GO build -trimpath -o "$share/demoapp" ./demo/app
else
	echo "run.sh: demo/app is missing: cannot run the journey" >&2
	exit 1
fi
CGO_ENABLED=0 $GO build -trimpath -o "$share/load" ./packaging/e2e/load
CGO_ENABLED=0 $GO build -trimpath -o "$share/streamload" ./bench/streamload # HTTP/3 client
cp packaging/e2e/journey.sh "$share/journey.sh"

echo "run.sh: packages $(cd "$share" && echo *.deb); booting the VM" >&2
t0=$SECONDS
set +e
# The journey takes about 20 minutes under emulation on an idle 2-core
# machine (the apt upgrade under load is the longest step); a shared,
# loaded one has needed twice that.
# Dovecot is the journey's IMAP server behind edged-stream@imaps.socket;
# an extra package, so the image of make vm-test stays the same.
VM_EXTRA_PACKAGES="${VM_EXTRA_PACKAGES:-} dovecot-imapd" VM_TIMEOUT=${VM_TIMEOUT:-2700} "$top/packaging/e2e/vm.sh" run "$share" journey.sh 2>&1 | tee "$share/transcript.log"
rc=${PIPESTATUS[0]}
set -e
echo "run.sh: end-to-end journey exit code $rc after $((SECONDS - t0)) s; transcript in dist/e2e/transcript.log" >&2
exit "$rc"
