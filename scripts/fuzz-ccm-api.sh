#!/usr/bin/env bash
# Fuzzes the CCM's REST API from its own OpenAPI document (/api/openapi.json) with
# schemathesis (docs/security.md, "Bad input and fuzzing"): every operation gets generated
# valid and invalid requests, and every answer is checked against the document (status codes,
# content types, schemas) and for server errors; the stateful phase chains operations through
# the links between them. Not part of CI: a run takes minutes. scripts/fuzz-ccm-api.toml says
# where a 400 for a body the document calls valid is right (a name that must exist, ...).
#
# A controller (`iotctl start`) runs on loopback on free ports with a SQLite database in a
# temporary directory, with authentication on and one admin whose HTTP Basic credentials
# schemathesis sends (so it also checks that requests without them, or with wrong ones, are
# refused), and is stopped at the end, also on Ctrl-C. The two
# Server-Sent Events endpoints (/api/devices/events and /api/projects/{id}/monitor/{nid})
# stream until the client leaves, so they are left out of the run.
#
# Generated strings are ASCII (--generation-codec ascii): schemathesis reads `\p{L}` in the
# document's name pattern as Latin letters only, so a name in another script would be taken for
# an invalid one that the CCM wrongly accepts. Names in other scripts are covered by the unit
# tests of `validate_name` (ccm/src/model.rs).
#
# Exits non-zero when schemathesis reports a failure or an error, or when the controller's log
# holds a panic.
#
# Needs: python3 with venv (apt python3-venv), curl, a Rust toolchain unless IOTCTL exists.
#
# Settings (environment):
#   EXAMPLES=100                 test cases per operation and phase (schemathesis --max-examples)
#   PHASES=examples,coverage,fuzzing,stateful
#   SEED=                        a number to replay a run (schemathesis --seed)
#   IOTCTL=target/debug/iotctl   (built with `cargo build -p iotctl` if missing)
#   VENV=target/fuzz-ccm-api/venv  schemathesis is installed there when missing
#   SCHEMATHESIS="schemathesis==4.32.5"  what pip installs (a path to a wheel works too)
#   KEEP=1                       keep the temporary directory (config, log, reports)
# Extra arguments are passed to `schemathesis run` (e.g. --include-path-regex '^/api/models').
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

EXAMPLES=${EXAMPLES:-100}
PHASES=${PHASES:-examples,coverage,fuzzing,stateful}
SEED=${SEED:-}
IOTCTL=$(realpath -m "${IOTCTL:-target/debug/iotctl}")
VENV=$(realpath -m "${VENV:-target/fuzz-ccm-api/venv}")
SCHEMATHESIS=${SCHEMATHESIS:-schemathesis==4.32.5}

if [[ ! -x $IOTCTL ]]; then
    echo "building iotctl (cargo build -p iotctl)"
    cargo build -p iotctl
fi
if [[ ! -x $VENV/bin/schemathesis ]]; then
    echo "installing $SCHEMATHESIS into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "$SCHEMATHESIS"
fi

TMP=$(mktemp -d -t fuzz-ccm-api.XXXXXX)
PID=
cleanup() {
    if [[ -n $PID ]] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PID" 2>/dev/null || true
    fi
    if [[ ${KEEP:-} == 1 ]]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat >"$TMP/config.toml" <<EOF
[paths]
data_dir = "$TMP"
[database]
url = "sqlite://$TMP/iotctl.db"
[broker]
listen = "127.0.0.1:0"
ws_listen = "127.0.0.1:0"
[csm]
listen = "127.0.0.1:0"
[ccm]
listen = "127.0.0.1:0"
[auth]
enabled = true
EOF
ADMIN=fuzz-admin
PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
printf '%s' "$PASSWORD" | "$IOTCTL" -c "$TMP/config.toml" user add "$ADMIN" --role admin \
    --password-stdin >/dev/null 2>>"$TMP/iotctl.log"

RUST_LOG=${RUST_LOG:-info,rmqtt=warn,rmqtt_net=warn,ntex=warn} \
    "$IOTCTL" -c "$TMP/config.toml" start >"$TMP/stdout" 2>"$TMP/iotctl.log" &
PID=$!
CCM=
for _ in $(seq 600); do
    CCM=$(sed -n 's/^iotctl ready:.* ccm=\([^ ]*\).*/\1/p' "$TMP/stdout")
    [[ -n $CCM ]] && break
    kill -0 "$PID" 2>/dev/null || { cat "$TMP/iotctl.log" >&2; echo "iotctl did not start" >&2; exit 1; }
    sleep 0.1
done
[[ -n $CCM ]] || { echo "iotctl did not get ready in 60 s" >&2; exit 1; }
echo "controller: pid $PID, CCM at $CCM, log $TMP/iotctl.log"

# Something for the operations on the things inside a project to find (ids start at 1, which
# generated ids often are): a feature per direction, a model, a function, and project 1 with
# device object 1 and network application 1 joining both features (links 1 and 2).
api() {
    curl -sS --fail-with-body -u "$ADMIN:$PASSWORD" -H 'content-type: application/json' \
        -X "$1" "$CCM$2" -d "$3" >/dev/null
}
api PUT /api/features/Temp-I '{"direction":"input","params":[{"type":"float","min":-40,"max":80}]}'
api PUT /api/features/Show-O '{"direction":"output","params":[{"type":"float"}]}'
api PUT /api/models/Sensor '{"features":["Temp-I","Show-O"]}'
api POST /api/functions/square '{"code":"fn run(x) { x * x }"}'
api POST /api/projects '{"name":"seed"}'
api POST /api/projects/1/objects '{"model":"Sensor"}'
api POST /api/projects/1/netapps \
    '{"name":"n","links":[{"object":1,"feature":"Temp-I"},{"object":1,"feature":"Show-O"}]}'
api PATCH /api/projects/1/netapps/1 '{"join":{"name":"square","version":1}}'

args=(--config-file "$ROOT/scripts/fuzz-ccm-api.toml" run "$CCM/api/openapi.json"
    --checks all
    --auth "$ADMIN:$PASSWORD"
    --phases "$PHASES"
    --max-examples "$EXAMPLES"
    --exclude-path-regex '^/api/(devices/events|projects/\{id\}/monitor/\{nid\})$'
    --generation-codec ascii
    --generation-database none
    --request-timeout 10
    --report junit --report-dir "$TMP/report")
[[ -n $SEED ]] && args+=(--seed "$SEED")
status=0
# From the temporary directory: nothing schemathesis writes lands in the work tree.
(cd "$TMP" && "$VENV/bin/schemathesis" "${args[@]}" "$@") || status=$?

if grep -q "panicked" "$TMP/iotctl.log"; then
    echo "the controller panicked:" >&2
    grep -A5 "panicked" "$TMP/iotctl.log" >&2
    status=1
fi
if ! kill -0 "$PID" 2>/dev/null; then
    echo "the controller is gone" >&2
    status=1
fi
exit "$status"
