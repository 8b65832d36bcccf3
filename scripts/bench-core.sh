#!/usr/bin/env bash
# Runs one `iotctl bench` against a fresh controller on the broker core CORE (`native` or
# `rmqtt`), with the default configuration except: every listener on port 0 (MQTT and
# WebSocket on, TLS off as by default), data and SQLite database in a temporary directory,
# log level `warn`. The controller is stopped and its directory removed at the end.
#
#   scripts/bench-core.sh CORE BENCH-ARGS...
#   scripts/bench-core.sh native connect -n 10000
#   scripts/bench-core.sh rmqtt route --join rhai --rate 0 --duration 8 --warmup 2
#
# IOTCTL names the binary (default target/release/iotctl: `cargo build --release -p iotctl`).
set -euo pipefail
core=${1:?usage: $0 native|rmqtt BENCH-ARGS...}
case $core in native | rmqtt) ;; *) echo "$0: CORE is native or rmqtt, not $core" >&2; exit 2 ;; esac
shift
bin=${IOTCTL:-$(dirname "$0")/../target/release/iotctl}
dir=$(mktemp -d)
pid=
cleanup() {
  status=$?
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  # The controller's log is kept when something failed.
  if [ "$status" -ne 0 ] && [ -f "$dir/out.log" ]; then
    echo "--- controller log ($dir/out.log)" >&2
    tail -n 50 "$dir/out.log" >&2 || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
"$bin" genconf "$dir/c.toml" >/dev/null
sed -i \
  -e "s|^data_dir = .*|data_dir = \"$dir\"|" \
  -e "s|^core = .*|core = \"$core\"|" \
  -e 's|^listen = "127.0.0.1:[0-9]*"|listen = "127.0.0.1:0"|' \
  -e 's|^ws_listen = "127.0.0.1:[0-9]*"|ws_listen = "127.0.0.1:0"|' \
  -e "s|^url = \"sqlite://.*\"|url = \"sqlite://$dir/iotctl.db\"|" \
  -e 's|^level = "info"|level = "warn"|' \
  "$dir/c.toml"
"$bin" -c "$dir/c.toml" start >"$dir/out.log" 2>&1 &
pid=$!
for _ in $(seq 1 150); do
  grep -q "iotctl ready" "$dir/out.log" && break
  sleep 0.2
done
grep "iotctl ready" "$dir/out.log" || { cat "$dir/out.log"; exit 1; }
"$bin" -c "$dir/c.toml" bench "$@"
