#!/bin/sh
# build.sh deb|rpm [...] — build the edged and appd packages into dist/ (or
# $DIST) with
# nfpm (a go.mod tool: `go tool nfpm`). Called by `make deb` / `make rpm`,
# which build bin/edged and bin/appd first and set VERSION (from git
# describe). Stages gzipped man pages and a changelog in dist/.stage.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
[ $# -gt 0 ] || { echo "usage: packaging/build.sh deb|rpm..." >&2; exit 2; }

# Debian and rpm both forbid '-' inside an upstream version (it separates
# the release): git describe's "1.2-3-gabc" and "-dirty" become "+".
VERSION=$(printf '%s' "${VERSION:-0.0.0}" | sed 's/^v//; s/-/+/g')
# A bare commit hash (no tag yet) may start with a digit but has no dot.
case $VERSION in [0-9]*.*) ;; *) VERSION="0.0.0~git$VERSION" ;; esac
export VERSION
BIN="$top/bin" STAGE="$top/dist/.stage"
export ARCH="${ARCH:-$(go env GOARCH)}"

for b in edged appd; do
	[ -x "$BIN/$b" ] || { echo "build.sh: $BIN/$b missing: run make build" >&2; exit 1; }
done

# The packages declare no C library dependency: the binaries must not need
# one (the Makefile builds them with CGO_ENABLED=0).
if objdump -p "$BIN/edged" "$BIN/appd" 2>/dev/null | grep -q 'NEEDED'; then
	echo "build.sh: $BIN/edged or $BIN/appd links a shared library (built with cgo?): build them with make deb / make rpm" >&2
	exit 1
fi

DIST=${DIST:-$top/dist}
rm -rf "$STAGE"
mkdir -p "$STAGE" "$DIST"
for m in man/*.[58]; do
	[ -f "$m" ] || continue
	gzip -9n <"$m" >"$STAGE/$(basename "$m").gz"
done
for m in edged.8 edged.toml.5 appd.8 appd.toml.5; do
	[ -f "$STAGE/$m.gz" ] || { echo "build.sh: man/$m missing" >&2; exit 1; }
done

# One changelog entry per build (VERSION-RELEASE, RELEASE being 1 in the
# nfpm files), from the last commit (nfpm writes it as
# changelog.Debian.gz and as the rpm %changelog).
date=$(git log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
cat >"$STAGE/changelog.yml" <<YML
- semver: "$VERSION-1"
  date: $date
  packager: edgeapp developers <edgeapp@example.org>
  deb:
    urgency: medium
    distributions:
      - unstable
  changes:
    - note: "Build of $VERSION from commit $commit."
YML

for fmt in "$@"; do
	case $fmt in deb | rpm) ;; *) echo "build.sh: unknown format $fmt (deb or rpm)" >&2; exit 2 ;; esac
	for pkg in edged appd; do
		rm -f "$DIST"/${pkg}_*."$fmt" "$DIST"/${pkg}-[0-9]*."$fmt"
		go tool nfpm package --config "packaging/$pkg.yaml" --packager "$fmt" --target "$DIST/" >/dev/null
	done
done
ls -1 "$DIST"/*.deb "$DIST"/*.rpm 2>/dev/null || true
