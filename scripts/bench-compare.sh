#!/usr/bin/env bash
# Compares, in one run on this machine and with one client (`iotctl bench`), the controller
# against the alternatives users would pick instead:
#
#   mosquitto      plain pub -> sub on a private Mosquitto (apt package `mosquitto`)
#   node-red       Node-RED 4.1.8 (npm): mqtt in -> function (passes msg) -> mqtt out, on that Mosquitto
#   embedded       plain pub -> sub on the controller's embedded broker
#   route none     IDF -> graph without a join function -> ODF, through the controller
#   route rhai     IDF -> Rhai join -> ODF
#   route python   IDF -> Python join -> ODF
#
# Everything runs on loopback on free ports, in a temporary directory: a second Mosquitto
# instance with its own config (the system one, if any, is left alone), Node-RED installed
# under target/bench-compare/ (never committed), and `iotctl start` with a temporary config.
# Each bench runs for DURATION seconds at every rate in RATES (0 = as fast as possible), then
# a table with ratios is printed and the JSON of every run is kept in target/bench-compare/.
# Then `iotctl bench connect -n CONNECT_N` measures registration (0 skips it). Everything
# started here is stopped at the end, also on Ctrl-C.
#
# Needs: mosquitto (apt), node >= 18 and npm (apt/nodesource), python3 (apt), a Rust toolchain.
#
# Settings (environment):
#   DURATION=10      seconds measured per bench (after WARMUP seconds of warm-up)
#   WARMUP=2
#   RATES="0 10000"  msgs/s per pass; 0 = max. The first pass gives throughput, a fixed rate latency.
#   PAYLOAD=64       payload bytes
#   CONNECT_N=10000  DAs for `bench connect` (0 = skip)
#   PEERS="mosquitto node-red embedded route-none route-rhai route-python"
#   IOTCTL=target/release/iotctl   (built with `cargo build --release -p iotctl` if missing)
#   WAIT_QUIET=120   before each run, wait up to this many seconds for other processes to go
#                    below 25% of one core (0 = do not wait); what others used during each
#                    run is in the table either way
#   KEEP=1           keep the temporary directory (configs, logs) afterwards
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
RATES=${RATES:-"0 10000"}
PAYLOAD=${PAYLOAD:-64}
CONNECT_N=${CONNECT_N:-10000}
PEERS=${PEERS:-"mosquitto node-red embedded route-none route-rhai route-python"}
IOTCTL=${IOTCTL:-$ROOT/target/release/iotctl}
NODE_RED_VERSION=4.1.8
NODE_RED_DIR=$ROOT/target/bench-compare/node-red
STAMP=$(date +%Y%m%d-%H%M%S)
RESULTS=$ROOT/target/bench-compare/results-$STAMP

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'bench-compare: %s\n' "$*" >&2; exit 1; }

# ---- what we start, and stopping it ----------------------------------------------------
# Servers run in sessions of their own (setsid), so Ctrl-C reaches only this script and the
# bench in the foreground: the bench cleans up against a live controller and exits with 130,
# then this script stops the servers.
TMP=$(mktemp -d "${TMPDIR:-/tmp}/bench-compare.XXXXXX")
PIDS=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "${KEEP:-0}" = 1 ] || [ "$rc" != 0 ]; then
    log "logs and configs kept in $TMP"
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() { # port, what, pid
  for _ in $(seq 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "$3" 2>/dev/null || die "$2 exited; see its log in $TMP"
    sleep 0.1
  done
  die "$2 did not listen on 127.0.0.1:$1 within 30 s; see its log in $TMP"
}

has_peer() { [[ " $PEERS " == *" $1 "* ]]; }

# CPU used by the whole machine over one second, in % of one core (our servers are idle
# between runs, so this is what other processes use).
machine_busy() {
  python3 - <<'EOF'
import os, time
def read():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7], sum(v)
b1, t1 = read(); time.sleep(1); b2, t2 = read()
print(int((b2 - b1) * 100 * os.cpu_count() / max(t2 - t1, 1)))
EOF
}

wait_quiet() {
  local limit=${WAIT_QUIET:-120} waited=0 busy
  [ "$limit" = 0 ] && return 0
  while :; do
    busy=$(machine_busy)
    [ "$busy" -le 25 ] && return 0
    if [ "$waited" -ge "$limit" ]; then
      log "  other processes still use ${busy}% of a core; measuring anyway"
      return 0
    fi
    [ "$waited" = 0 ] && log "  waiting for other processes to quiet down (${busy}% of a core busy)"
    sleep 4
    waited=$((waited + 5))
  done
}

# ---- prerequisites -----------------------------------------------------------------------
command -v python3 >/dev/null || die "python3 is needed (apt-get install python3)"
# 10,000 DAs need 10,000 sockets in the controller and in the bench.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge $((CONNECT_N + 1000)) ] \
  || log "warning: ulimit -n is $(ulimit -n); bench connect -n $CONNECT_N may run out of file descriptors"
if [ ! -x "$IOTCTL" ]; then
  log "building iotctl (cargo build --release -p iotctl)"
  cargo build --release -p iotctl
  IOTCTL=$ROOT/target/release/iotctl
fi
mkdir -p "$RESULTS"

# ---- a private Mosquitto -------------------------------------------------------------------
MOSQ_PID=""
if has_peer mosquitto || has_peer node-red; then
  command -v mosquitto >/dev/null || die "mosquitto is needed: apt-get install mosquitto"
  MOSQ_PORT=$(free_port)
  cat >"$TMP/mosquitto.conf" <<EOF
# A second, private instance for the benchmark (the system one is not touched).
listener $MOSQ_PORT 127.0.0.1
allow_anonymous true
persistence false
log_dest stderr
log_type error
log_type warning
EOF
  setsid mosquitto -c "$TMP/mosquitto.conf" 2>"$TMP/mosquitto.log" &
  MOSQ_PID=$!
  PIDS+=("$MOSQ_PID")
  wait_port "$MOSQ_PORT" mosquitto "$MOSQ_PID"
  log "mosquitto $(mosquitto -h 2>/dev/null | head -1 | awk '{print $3}') on 127.0.0.1:$MOSQ_PORT (pid $MOSQ_PID)"
fi

# ---- Node-RED: mqtt in -> function -> mqtt out on that Mosquitto ----------------------------
NR_PID=""
if has_peer node-red; then
  command -v node >/dev/null || die "node >= 18 is needed for Node-RED $NODE_RED_VERSION"
  node -e 'process.exit(+process.versions.node.split(".")[0] >= 18 ? 0 : 1)' \
    || die "Node-RED $NODE_RED_VERSION needs node >= 18, this is $(node --version)"
  NR_JS=$NODE_RED_DIR/node_modules/node-red/red.js
  if [ "$(node -p "require('$NODE_RED_DIR/node_modules/node-red/package.json').version" 2>/dev/null)" != "$NODE_RED_VERSION" ]; then
    log "installing node-red@$NODE_RED_VERSION into $NODE_RED_DIR (npm)"
    mkdir -p "$NODE_RED_DIR"
    (cd "$NODE_RED_DIR" && npm install --no-audit --no-fund --loglevel=error "node-red@$NODE_RED_VERSION" >&2)
  fi
  NR_PORT=$(free_port)
  mkdir -p "$TMP/node-red"
  cat >"$TMP/node-red/settings.js" <<EOF
module.exports = {
  uiHost: "127.0.0.1",
  uiPort: $NR_PORT,
  flowFile: "flows.json",
  credentialSecret: false,
  logging: { console: { level: "warn", metrics: false, audit: false } },
  editorTheme: { tours: false },
};
EOF
  # The flow: what a Node-RED user builds for "forward device data through a function".
  cat >"$TMP/node-red/flows.json" <<EOF
[
  {"id": "bench-tab", "type": "tab", "label": "bench"},
  {"id": "bench-broker", "type": "mqtt-broker", "name": "mosquitto", "broker": "127.0.0.1",
   "port": "$MOSQ_PORT", "clientid": "", "autoConnect": true, "usetls": false,
   "protocolVersion": "4", "keepalive": "60", "cleansession": true},
  {"id": "bench-in", "type": "mqtt in", "z": "bench-tab", "name": "in", "topic": "bench/in",
   "qos": "0", "datatype": "buffer", "broker": "bench-broker", "nl": false, "rap": false,
   "rh": 0, "inputs": 0, "wires": [["bench-fn"]]},
  {"id": "bench-fn", "type": "function", "z": "bench-tab", "name": "pass through",
   "func": "return msg;", "outputs": 1, "wires": [["bench-out"]]},
  {"id": "bench-out", "type": "mqtt out", "z": "bench-tab", "name": "out", "topic": "bench/out",
   "qos": "0", "retain": "false", "broker": "bench-broker", "wires": []}
]
EOF
  setsid node "$NR_JS" --userDir "$TMP/node-red" --settings "$TMP/node-red/settings.js" >"$TMP/node-red.log" 2>&1 &
  NR_PID=$!
  PIDS+=("$NR_PID")
  wait_port "$NR_PORT" node-red "$NR_PID"
  log "node-red $NODE_RED_VERSION on 127.0.0.1:$NR_PORT (pid $NR_PID), flow bench/in -> function -> bench/out"
fi

# ---- the controller ------------------------------------------------------------------------
IOT_PID=""
if has_peer embedded || has_peer route-none || has_peer route-rhai || has_peer route-python || [ "$CONNECT_N" != 0 ]; then
  mkdir -p "$TMP/iotctl"
  CONFIG=$TMP/iotctl/iotctl.toml
  cat >"$CONFIG" <<EOF
[paths]
data_dir = "$TMP/iotctl"
[broker]
listen = "127.0.0.1:0"
ws_listen = ""
[csm]
listen = "127.0.0.1:0"
[database]
url = "sqlite://$TMP/iotctl/iotctl.db"
[log]
level = "warn"
EOF
  setsid "$IOTCTL" -c "$CONFIG" start >"$TMP/iotctl.out" 2>"$TMP/iotctl.log" &
  IOT_PID=$!
  PIDS+=("$IOT_PID")
  for _ in $(seq 300); do
    grep -q '^iotctl ready:' "$TMP/iotctl.out" 2>/dev/null && break
    kill -0 "$IOT_PID" 2>/dev/null || die "iotctl start exited; see $TMP/iotctl.log"
    sleep 0.1
  done
  grep -q '^iotctl ready:' "$TMP/iotctl.out" || die "iotctl did not start within 30 s"
  IOT_MQTT=$(sed -n 's/^iotctl ready:.* mqtt=\([^ ]*\).*/\1/p' "$TMP/iotctl.out")
  log "$(head -1 "$TMP/iotctl.out") ($("$IOTCTL" --version))"
fi

# ---- the runs ------------------------------------------------------------------------------
bench() { # name rate args...
  local name=$1 rate=$2
  shift 2
  local out="$RESULTS/$name-rate$rate.json"
  wait_quiet
  log "$name, rate $([ "$rate" = 0 ] && echo max || echo "$rate msgs/s"), ${DURATION} s"
  local rc=0
  "$IOTCTL" "$@" --rate "$rate" --duration "$DURATION" --warmup "$WARMUP" \
    --payload-bytes "$PAYLOAD" --json >"$out" 2>"$RESULTS/$name-rate$rate.err" || rc=$?
  [ "$rc" = 130 ] && exit 130 # Ctrl-C: the bench handled it (bash then carries on by itself)
  if [ "$rc" != 0 ]; then
    log "  failed: $(tail -1 "$RESULTS/$name-rate$rate.err")"
    echo '{"failed": true}' >"$out"
  fi
}

for rate in $RATES; do
  has_peer mosquitto && bench mosquitto "$rate" bench broker --url "mqtt://127.0.0.1:$MOSQ_PORT" --pid "$MOSQ_PID"
  has_peer node-red && bench node-red "$rate" bench broker --url "mqtt://127.0.0.1:$MOSQ_PORT" \
    --pub-topic bench/in --sub-topic bench/out --pid "$NR_PID"
  has_peer embedded && bench embedded "$rate" bench broker --url "mqtt://$IOT_MQTT" --pid "$IOT_PID"
  for join in none rhai python; do
    has_peer "route-$join" && bench "route-$join" "$rate" -c "$CONFIG" bench route --join "$join"
  done
done
if [ "$CONNECT_N" != 0 ]; then
  wait_quiet
  log "bench connect -n $CONNECT_N"
  rc=0
  "$IOTCTL" -c "$CONFIG" bench connect -n "$CONNECT_N" --json >"$RESULTS/connect.json" \
    2>"$RESULTS/connect.err" || rc=$?
  [ "$rc" = 130 ] && exit 130
  if [ "$rc" != 0 ]; then
    log "  failed: $(tail -1 "$RESULTS/connect.err")"
    echo '{"failed": true}' >"$RESULTS/connect.json"
  fi
fi

# ---- the table -----------------------------------------------------------------------------
{
  echo "machine: $(nproc) cores, $(free -h | awk '/^Mem:/ {print $2}') RAM, $(uname -sr); duration ${DURATION} s after ${WARMUP} s warm-up, ${PAYLOAD} B payloads, QoS 0"
  python3 - "$RESULTS" "$RATES" <<'EOF'
import json, os, sys
results, rates = sys.argv[1], sys.argv[2].split()
peers = ["mosquitto", "node-red", "embedded", "route-none", "route-rhai", "route-python"]
label = {"mosquitto": "Mosquitto plain pub->sub", "node-red": "Node-RED in->function->out",
         "embedded": "embedded broker pub->sub", "route-none": "controller route, no join",
         "route-rhai": "controller route, Rhai join", "route-python": "controller route, Python join"}
def load(name):
    try:
        with open(os.path.join(results, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
for rate in rates:
    rows = {p: load(f"{p}-rate{rate}.json") for p in peers}
    rows = {p: r for p, r in rows.items() if r is not None}
    if not rows:
        continue
    print()
    print(f"rate {'max' if rate == '0' else rate + ' msgs/s'}:")
    hdr = (f"  {'':32} {'in/s':>9} {'out/s':>9} {'lost':>8} {'p50 ms':>8} {'p99 ms':>8} {'cpu %':>6} "
           f"{'rss MB':>7} {'bench %':>7} {'other %':>7} {'x node-red':>10} {'x mosquitto':>11}")
    print(hdr)
    base = {p: (rows.get(p) or {}).get("out_msgs_per_s") for p in ("node-red", "mosquitto")}
    for p, r in rows.items():
        if r.get("failed"):
            print(f"  {label[p]:32} failed (see {p}-rate{rate}.err)")
            continue
        ratio = lambda b: f"{r['out_msgs_per_s'] / b:.2f}" if b else "-"
        cpu = r.get("controller_cpu_percent")
        rss = r.get("controller_rss_mb")
        client = r.get("client_cpu_percent")
        machine = r.get("machine_cpu_percent")
        other = None if None in (machine, client) else max(0.0, machine - (cpu or 0.0) - client)
        pct = lambda v: ("%.0f" % v) if v is not None else "n/a"
        print(f"  {label[p]:32} {r['in_msgs_per_s']:>9.0f} {r['out_msgs_per_s']:>9.0f} {r['lost']:>8} "
              f"{r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {pct(cpu):>6} "
              f"{('%.1f' % rss) if rss is not None else 'n/a':>7} {pct(client):>7} {pct(other):>7} "
              f"{ratio(base['node-red']):>10} {ratio(base['mosquitto']):>11}")
c = load("connect.json")
if c and not c.get("failed"):
    print()
    print(f"bench connect -n {c['das']}: {c['registrations_per_s']:.0f} registrations/s, all online after "
          f"{c['online_s']:.2f} s, controller RSS {c['controller_rss_before_mb']:.1f} -> {c['controller_rss_online_mb']:.1f} MB "
          f"(peak {c['controller_rss_peak_mb']:.1f} MB, {c['controller_rss_per_da_kb']:.1f} kB per DA)")
elif c:
    print("\nbench connect failed (see connect.err)")
print()
print("cpu % and rss: of the peer under test (Mosquitto, Node-RED's node process, or iotctl), % of one core;")
print("bench %: the iotctl bench client; other %: everything else on the machine (for Node-RED: its Mosquitto too).")
print("x node-red / x mosquitto: out msgs/s divided by that peer's out msgs/s in the same pass.")
EOF
  echo
  echo "JSON of every run: $RESULTS"
} | tee "$RESULTS/table.txt"
