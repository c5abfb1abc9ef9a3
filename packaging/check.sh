#!/bin/bash
# check.sh — every packaging check that runs on this machine (no VM):
#   - go test ./man ./units (which make test runs too): the shipped configs
#     pass `edged -t` / `appd -t`; the man pages name every flag of
#     `edged -h`/`appd -h` and every key of the config schemas and render
#     without warnings (mandoc -Tlint); the app sockets admit root and the
#     group appd-socket only; edged.service's exposure is below 2.0;
#   - man --warnings; systemd-analyze security --offline scores of the units;
#   - lintian on the .debs: no errors;
#   - rpmlint on the .rpms: no errors (run with a cpio that keeps the
#     payload's absolute paths inside rpmlint's scratch directory, never /);
#   - rpm -qpl / -qp --scripts, and installs into scratch roots:
#     `rpm --root` and `dpkg --root` (maintainer scripts run chrootless, as
#     deb-systemd-helper honours DPKG_ROOT), then purge: nothing may be left.
# Builds bin/ and the packages first when dist/ has none. Exits 1 if any
# check failed, after running them all. Needs root for the scratch installs.
# Installs lintian, rpmlint, rpm and mandoc with apt-get when missing.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
failed=()
section() { printf '\n=== %s\n' "$*"; }
bad() {
	printf '!!! %s\n' "$*"
	failed+=("$*")
}

need=()
for t in lintian:lintian rpmlint:rpmlint rpm:rpm mandoc:mandoc rpm2cpio:rpm2cpio cpio:cpio; do
	command -v "${t%%:*}" >/dev/null 2>&1 || need+=("${t#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
	echo "check.sh: installing ${need[*]}" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null ||
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; } ||
		{ echo "check.sh: cannot install ${need[*]}" >&2; exit 1; }
fi

if ! ls dist/edged_*.deb dist/appd_*.deb dist/edged-*.rpm dist/appd-*.rpm >/dev/null 2>&1; then
	make deb rpm || exit 1
fi
newest() { ls -t $1 2>/dev/null | head -n1; }
debs=("$(newest 'dist/edged_*.deb')" "$(newest 'dist/appd_*.deb')")
rpms=("$(newest 'dist/edged-*.rpm')" "$(newest 'dist/appd-*.rpm')")
[ -x bin/edged ] && [ -x bin/appd ] || make build || exit 1
scratch=$(mktemp -d /tmp/edgeapp-check.XXXXXX)
trap 'rm -rf "$scratch"' EXIT

section "shipped configuration, man pages and units agree with the code (go test ./man ./units, also part of make test)"
# edged -t / appd -t on etc/ and demo/, every flag of -h in PROG(8), every
# key of the config schemas in PROG.toml(5), mandoc -Tlint without a
# warning, the app sockets' access and edged.service's exposure below 2.0:
# man/man_test.go and units/units_test.go, so that drift fails make test
# (CI's first step) too, not only this late check.
go test -count=1 ./man ./units || bad "go test ./man ./units: the shipped configuration, man pages or units disagree with the code"

section "man pages: man --warnings (groff)"
if command -v man >/dev/null && command -v groff >/dev/null; then
	for m in man/*.[58]; do
		out=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$m" 2>&1 >/dev/null)
		[ -z "$out" ] || bad "man --warnings $m: $out"
	done
fi

section "systemd units: systemd-analyze security --offline"
for u in units/*.service; do
	line=$(systemd-analyze security --offline=true --no-pager "$u" 2>&1 | tail -n1)
	echo "$(basename "$u"): ${line#*: }"
done
# (edged.service below 2.0 is checked by go test ./units above.)

section "lintian (errors fail the check; every override carries a reason)"
lintian --fail-on error --info "${debs[@]}" 2>&1 | grep -v '^running with root privileges' | grep -v '^N: *$'
[ "${PIPESTATUS[0]}" = 0 ] || bad "lintian reports errors"

section "rpmlint (with a cpio that cannot write outside its directory)"
mkdir -p "$scratch/bin" "$scratch/rpmlint"
real_cpio=$(command -v cpio)
cat >"$scratch/bin/cpio" <<EOF
#!/bin/sh
# rpmlint runs 'rpm2cpio PKG | cpio -id' and the payload's paths are
# absolute: keep them inside the current (scratch) directory.
echo used >>"$scratch/cpio-used"
exec $real_cpio --no-absolute-filenames "\$@"
EOF
chmod 755 "$scratch/bin/cpio"
before=$(ls -ld --time-style=full-iso /usr/bin/edged /usr/bin/appd /etc/edged 2>&1)
out=$(cd "$scratch/rpmlint" && PATH="$scratch/bin:$PATH" TMPDIR="$scratch/rpmlint" rpmlint -c "$top/packaging/rpmlint.toml" "${rpms[@]/#/$top/}" 2>&1)
rc=$?
echo "$out"
[ -s "$scratch/cpio-used" ] || bad "rpmlint did not use the safe cpio wrapper"
after=$(ls -ld --time-style=full-iso /usr/bin/edged /usr/bin/appd /etc/edged 2>&1)
[ "$before" = "$after" ] || bad "rpmlint changed files in / (before: $before; after: $after)"
echo "$out" | grep -qE '^[^ ]+: E: ' && bad "rpmlint reports errors"
echo "$out" | grep -qE '[1-9][0-9]* errors' && bad "rpmlint counts errors"
[ $rc -le 64 ] || bad "rpmlint failed to run (exit $rc)"

section "rpm -qpl, rpm -qp --scripts, rpm -qpR"
for r in "${rpms[@]}"; do
	echo "--- $r"
	rpm -qp --qf '%{NAME} %{VERSION}-%{RELEASE} %{ARCH}\n' "$r" || bad "rpm cannot read $r"
	rpm -qpl "$r"
	rpm -qp --scripts "$r" | grep -E 'scriptlet|systemd-update-helper|preset' | sed 's/^/  /'
	rpm -qpR "$r" | sed 's/^/  requires: /'
	rpm -qp --configfiles "$r" | sed 's/^/  config: /'
	for s in postinstall preuninstall postuninstall; do
		rpm -qp --scripts "$r" | grep -q "^$s scriptlet" || bad "$r has no $s scriptlet"
	done
done

section "rpm --root scratch install (no scripts, no dependencies)"
rroot="$scratch/rpmroot"
mkdir -p "$rroot"
rpm --root "$rroot" --initdb && rpm --root "$rroot" -ivh --nodeps --noscripts "${rpms[@]}" || bad "rpm scratch install failed"
for f in usr/bin/edged usr/bin/appd usr/lib/systemd/system/edged.service usr/lib/systemd/system/appd@.service \
	etc/edged/edged.toml etc/edged/sites.d etc/appd/example.toml usr/share/man/man5/edged.toml.5.gz usr/lib/sysusers.d/edged.conf usr/lib/sysusers.d/appd.conf; do
	[ -e "$rroot/$f" ] || bad "rpm scratch install lacks /$f"
done
rpm --root "$rroot" -qa | sed 's/^/  installed: /'
rpm --root "$rroot" -e --nodeps --noscripts edged appd || bad "rpm scratch erase failed"
# Parents such as /usr/bin belong to the distribution's filesystem package;
# what the packages own must be gone, files and directories alike.
left=$(cd "$rroot" && find . -mindepth 1 \( -path ./root -o -path ./var/lib/rpm -o -path ./usr/lib/sysimage \) -prune -o \
	\( -not -type d -o -name edged -o -name appd \) -print)
[ -z "$left" ] || bad "rpm erase left: $left"

section "dpkg --root scratch install and purge (maintainer scripts run with DPKG_ROOT)"
droot="$scratch/dpkgroot"
mkdir -p "$droot/var/lib/dpkg/info" "$droot/var/lib/dpkg/updates" "$droot/etc/systemd/system"
touch "$droot/var/lib/dpkg/status" "$droot/var/lib/dpkg/available"
dp() { dpkg --root="$droot" --force-script-chrootless --force-depends --log=/dev/null "$@"; }
dp -i "${debs[@]}" || bad "dpkg scratch install failed"
grep '^appd-socket:' "$droot/etc/group" | sed 's/^/  group: /'
grep -q '^appd-socket:' "$droot/etc/group" || bad "postinst did not create the group appd-socket (sysusers.d)"
ls "$droot/etc/systemd/system"/*.wants 2>/dev/null | sed 's/^/  /'
for l in sockets.target.wants/edged.socket sockets.target.wants/edged-https.socket sockets.target.wants/edged-quic.socket multi-user.target.wants/edged.service; do
	[ -L "$droot/etc/systemd/system/$l" ] || bad "postinst did not enable $l"
done
dpkg --root="$droot" -L edged appd | grep -E '^/(usr/bin|etc|usr/lib/systemd)/' | sed 's/^/  /'
dp --purge edged appd || bad "dpkg scratch purge failed"
# The group appd-socket stays, as Debian keeps system groups on purge.
left=$(cd "$droot" && find . -mindepth 1 -not -path './var/lib/dpkg*' -not -path './var' -not -path './var/lib' \
	-not -path './etc' -not -path './etc/systemd' -not -path './etc/systemd/system' -not -path './var/lib/systemd' \
	-not -path './etc/group' -not -path './etc/gshadow' -not -path './etc/.pwd.lock' \
	-not -path './var/lib/systemd/deb-systemd-helper-enabled' -not -path './var/lib/systemd/deb-systemd-helper-masked')
[ -z "$left" ] || bad "dpkg purge left: $left"

section "result"
if [ ${#failed[@]} -gt 0 ]; then
	printf 'FAILED (%d):\n' ${#failed[@]}
	printf '  %s\n' "${failed[@]}"
	exit 1
fi
echo "all packaging checks passed"
