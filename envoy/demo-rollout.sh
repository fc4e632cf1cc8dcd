#!/usr/bin/env bash
# The rollout loop on one machine, in about two minutes (`make demo-rollout`):
#   - Envoy running envoy/envoy.yaml with the filter delivered by ECDS from a
#     watched file (as Istio delivers a WasmPlugin), starting at v2 0 %, and the
#     two upstreams of envoy/backends.yaml (v2 answering 503 to 20 % of requests
#     with FAIL=1: Envoy's fault filter on the v2 listener);
#   - a real Prometheus scraping Envoy every second;
#   - bounded load (python3, loopback only: 100 requests/s, distinct users, at
#     most 150 s), printing every 10 s which upstream answered;
#   - istio/rollout.sh with short pauses, patching the ECDS file through
#     envoy/kubectl-ecds.py (a kubectl stand-in): one line per checked step, then
#     promoted (exit 0) or rolled back (exit 3).
# Everything it starts is stopped on exit and on Ctrl-C. Free loopback ports are
# picked at start; files go to a temporary directory, removed at the end.
#
# usage: envoy/demo-rollout.sh ENVOY_BIN [FAIL]     (FAIL=1: v2 fails 20 %)
set -euo pipefail

envoy_bin=${1:?usage: envoy/demo-rollout.sh ENVOY_BIN [FAIL]}
fail=${2:-0}
cd "$(dirname "$0")/.."
root=$PWD

wasm=target/canary-router.wasm
[ -f "$wasm" ] || { echo "no $wasm: run 'make wasm' first" >&2; exit 1; }
command -v prometheus >/dev/null || { echo "no prometheus on PATH: run 'make prometheus'" >&2; exit 1; }
PYTHON="$(python3 -c 'import sys; print(sys.executable)')"

work=$(mktemp -d -t canary-demo-rollout.XXXXXX)
pids=()
cleanup() {
  local pid
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do
    # Each child leads its own process group (setsid): stop the whole group.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo; echo "demo-rollout: interrupted, stopping everything" >&2; exit 130' INT TERM

# Four free loopback ports for Envoy (admin, listener, v1, v2) and one for Prometheus.
read -r admin_port listener_port v1_port v2_port prom_port < <("$PYTHON" - <<'PY'
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)

# Envoy's two configuration files and the first ECDS resource (v2 at 0 %).
ecds="$work/ecds/canary-router.json"
mkdir -p "$work/ecds"
export CANARY_ECDS_FILE="$ecds"
"$PYTHON" - "$work" "$ecds" "$fail" "$admin_port" "$listener_port" "$v1_port" "$v2_port" <<'PY'
import json, sys
work, ecds, fail, admin, listener, v1, v2 = sys.argv[1:8]

def once(text, old, new, name):
    assert text.count(old) == 1, "%s: want `%s` exactly once" % (name, old)
    return text.replace(old, new)

y = open("envoy/envoy.yaml").read()
for old, new in (("9901", admin), ("10000", listener), ("10001", v1), ("10002", v2)):
    y = once(y, "port_value: %s }" % old, "port_value: %s }" % new, "envoy/envoy.yaml")
y = once(y, "address: 0.0.0.0,", "address: 127.0.0.1,", "envoy/envoy.yaml")
# The inline Wasm filter (from its entry to the router's) -> the same filter by
# ECDS from the watched file, as Istio delivers it.
start = y.index("- name: envoy.filters.http.wasm")
start = y.rindex("\n", 0, start) + 1
end = y.index("- name: envoy.filters.http.router")
end = y.rindex("\n", 0, end) + 1
indent = y[start:y.index("-", start)]
entry = {
    "name": "canary-router",
    "config_discovery": {
        "config_source": {
            "path_config_source": {"path": ecds, "watched_directory": {"path": work + "/ecds"}},
            "resource_api_version": "V3",
        },
        "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"],
    },
}
y = y[:start] + indent + "- " + json.dumps(entry) + "\n" + y[end:]
open(work + "/envoy.yaml", "w").write(y)

b = open("envoy/backends.yaml").read()
b = once(b, "port_value: 10001 }", "port_value: %s }" % v1, "envoy/backends.yaml")
b = once(b, "port_value: 10002 }", "port_value: %s }" % v2, "envoy/backends.yaml")
if fail == "1":
    # v2 answers 503 to 20 % of requests (Envoy's fault filter); those replies
    # still say x-served-by: v2.
    at = b.index("- name: backend_v2")
    head, tail = b[:at], b[at:]
    tail = once(tail, "stat_prefix: backend_v2\n",
                "stat_prefix: backend_v2\n          local_reply_config: { mappers: [ { filter: "
                "{ response_flag_filter: { flags: [FI] } }, headers_to_add: [ { header: "
                "{ key: x-served-by, value: v2 } } ] } ] }\n", "backends_v2")
    tail = once(tail, "http_filters:\n",
                "http_filters:\n"
                "          - name: envoy.filters.http.fault\n"
                "            typed_config:\n"
                "              \"@type\": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault\n"
                "              abort: { http_status: 503, percentage: { numerator: 20, denominator: HUNDRED } }\n",
                "backends_v2")
    b = head + tail
open(work + "/backends.yaml", "w").write(b)

cfg = json.load(open("envoy/canary.json"))
for s in cfg["subsets"]:
    s["weight"] = 100 if s["name"] == cfg.get("default_subset", "v1") else 0
open(work + "/plugin-config.json", "w").write(json.dumps(cfg, indent=2))
PY
"$PYTHON" envoy/kubectl-ecds.py init "$root/$wasm" "$work/plugin-config.json"

http_ok() { # URL -> status 200?
  "$PYTHON" -c 'import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
except Exception:
    sys.exit(1)' "$1"
}
wait_ready() { # NAME PID URL LOG
  for _ in $(seq 1 300); do
    kill -0 "$2" 2>/dev/null || { echo "$1 exited; its log ($4):" >&2; tail -n 30 "$4" >&2; exit 1; }
    http_ok "$3" && return 0
    sleep 0.2
  done
  echo "$1 not ready in 60 s; its log ($4):" >&2; tail -n 30 "$4" >&2; exit 1
}

setsid "$envoy_bin" -c "$work/envoy.yaml" --config-yaml "$(cat "$work/backends.yaml")" \
  --concurrency 2 --disable-hot-restart --service-node demo-rollout --service-cluster demo-rollout \
  >"$work/envoy.log" 2>&1 &
pids+=($!)
wait_ready Envoy "$!" "http://127.0.0.1:$admin_port/ready" "$work/envoy.log"

cat >"$work/prometheus.yml" <<EOF
global: { scrape_interval: 1s, evaluation_interval: 1s }
scrape_configs:
- job_name: envoy
  metrics_path: /stats/prometheus
  static_configs: [ { targets: ['127.0.0.1:$admin_port'] } ]
EOF
setsid prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prometheus" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
pids+=($!)
wait_ready Prometheus "$!" "http://127.0.0.1:$prom_port/-/ready" "$work/prometheus.log"

cat <<EOF
demo-rollout: Envoy on 127.0.0.1:$listener_port (admin :$admin_port) -> v1 :$v1_port / v2 :$v2_port$([ "$fail" = 1 ] && echo " (v2 fails 20 % with 503)")
demo-rollout: Prometheus on http://127.0.0.1:$prom_port (1 s scrape), the filter by ECDS from $ecds
demo-rollout: load: 100 requests/s from distinct users (x-user-id), at most 150 s
EOF

# Bounded load: 100 requests/s from 8 threads, distinct users, keep-alive, at
# most 150 s and 15,000 requests; every 10 s one line: who answered.
setsid "$PYTHON" - "$listener_port" <<'PY' &
import http.client, sys, threading, time
port, rate, limit_s, limit_n = int(sys.argv[1]), 100.0, 150, 15000
lock, counts, nxt = threading.Lock(), {}, [0]
t0 = time.monotonic()
def worker():
    conn = None
    while True:
        with lock:
            i = nxt[0]; nxt[0] += 1
        if i >= limit_n:
            return
        due = t0 + i / rate
        if due > time.monotonic():
            time.sleep(due - time.monotonic())
        if time.monotonic() - t0 > limit_s:
            return
        try:
            conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/", headers={"x-user-id": "user-%d" % i})
            r = conn.getresponse(); r.read()
            key = (r.getheader("x-served-by") or "?", r.status)
        except Exception:
            conn, key = None, ("error", 0)
        with lock:
            counts[key] = counts.get(key, 0) + 1
threads = [threading.Thread(target=worker, daemon=True) for _ in range(8)]
for t in threads:
    t.start()
while any(t.is_alive() for t in threads):
    time.sleep(10)
    with lock:
        snapshot = dict(counts); counts.clear()
    n = sum(snapshot.values())
    if n:
        v2 = sum(v for (who, _), v in snapshot.items() if who == "v2")
        bad = sum(v for (_, st), v in snapshot.items() if st >= 500 or st == 0)
        print("load: last 10 s: %d requests, %.1f %% answered by v2, %d errors (5xx or none)"
              % (n, 100.0 * v2 / n, bad), flush=True)
PY
pids+=($!)
sleep 4 # the first scrapes with traffic on v1

echo "demo-rollout: istio/rollout.sh --steps 10,50,100 --pause 25s --window 20s --kubectl envoy/kubectl-ecds.py"
set +e
setsid bash istio/rollout.sh --kubectl envoy/kubectl-ecds.py --prometheus "http://127.0.0.1:$prom_port" \
  --steps 10,50,100 --pause 25s --window 20s --retries 3 --retry-delay 5s \
  --min-success 0.99 --max-p99-ms 200 &
rollout_pid=$!
pids+=("$rollout_pid")
wait "$rollout_pid"
code=$?
set -e
echo "demo-rollout: istio/rollout.sh exited $code ($([ $code = 0 ] && echo promoted || { [ $code = 3 ] && echo rolled back || echo failed; }))"
echo "demo-rollout: 12 s more of load, to see where traffic goes now"
sleep 12
echo "demo-rollout: the filter's series now (curl -s 127.0.0.1:$admin_port/stats/prometheus | grep '^canary_'):"
"$PYTHON" -c 'import sys, urllib.request
for line in urllib.request.urlopen(sys.argv[1], timeout=5).read().decode().splitlines():
    if line.startswith(("canary_requests{", "canary_responses{", "canary_weight_bp{")) and not line.endswith(" 0"):
        print("  " + line)' "http://127.0.0.1:$admin_port/stats/prometheus"
want=0
[ "$fail" = 1 ] && want=3
if [ "$code" = "$want" ]; then
  echo "demo-rollout: done ($([ "$fail" = 1 ] && echo "v2 failing: rolled back as expected" || echo "v2 healthy: promoted as expected"))"
  exit 0
fi
echo "demo-rollout: unexpected: istio/rollout.sh exited $code, expected $want" >&2
exit 1
