#!/bin/sh
# Runs the demo appliance from a checkout: the demo app's workers under
# appd, edged in front of them, all on loopback. Ctrl-C stops both.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
run="$top/.run"
bin="$top/bin"
mkdir -p "$run"
go build -o "$bin/demoapp" "$top/demo/app"
# The demo's workers run as whoever runs the demo; appd run as root wants
# that said explicitly (user = "root").
user=
[ "$(id -u)" != 0 ] || user='user = "root"'
for f in appd.toml edged.toml; do
	sed -e "s|@RUN@|$run|g" -e "s|@BIN@|$bin|g" -e "s|@DEMO@|$top/demo|g" -e "s|^@USER@\$|$user|" "$top/demo/$f" >"$run/$f"
done
"$bin/edged" -t -config "$run/edged.toml"
"$bin/appd" -t -config "$run/appd.toml"

"$bin/appd" -config "$run/appd.toml" &
appd_pid=$!
trap 'kill -TERM $appd_pid 2>/dev/null; wait $appd_pid 2>/dev/null' EXIT INT TERM
i=0
until [ -S "$run/demo.sock" ]; do
	i=$((i + 1))
	[ $i -le 100 ] || { echo "appd did not create $run/demo.sock" >&2; exit 1; }
	sleep 0.1
done
cat <<MSG

  edgeapp demo
    http://127.0.0.1:8080/          static page (edged)
    http://127.0.0.1:8080/app/      demo app (appd workers behind edged)
    https://localhost:8443/         the same over HTTPS (internal CA: $run/edged-state)
    http://127.0.0.1:8080/_status/  edged's live status page
    $bin/appd status -socket $run/demo.ctl
    $bin/edged status -config $run/edged.toml
  Ctrl-C stops both.

MSG
"$bin/edged" -config "$run/edged.toml"
