#!/usr/bin/env bash
# The local demo behind `make run`: one Envoy running envoy/envoy.yaml (the
# filter on :10000, admin on 127.0.0.1:9901) with envoy/backends.yaml merged in
# (the v1/v2 upstreams on 127.0.0.1:10001/10002). Prints curl lines to paste,
# then stays in the foreground: Ctrl-C stops Envoy.
#
# usage: envoy/run-demo.sh ENVOY_BIN
set -euo pipefail

envoy_bin=${1:?usage: envoy/run-demo.sh ENVOY_BIN}
cd "$(dirname "$0")/.."

wasm=target/canary-router.wasm
[ -f "$wasm" ] || { echo "no $wasm: run 'make wasm' first" >&2; exit 1; }

for port in 9901 10000 10001 10002; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is already in use (another 'make run'?); stop that first" >&2
    exit 1
  fi
done

log=$(mktemp -t canary-router-envoy.XXXXXX.log)
"$envoy_bin" -c envoy/envoy.yaml --config-yaml "$(cat envoy/backends.yaml)" \
  --concurrency 2 --disable-hot-restart >"$log" 2>&1 &
envoy_pid=$!
trap 'kill "$envoy_pid" 2>/dev/null; wait "$envoy_pid" 2>/dev/null; exit 0' INT TERM
trap 'kill "$envoy_pid" 2>/dev/null || true' EXIT

# GET /ready on the admin interface, with bash's /dev/tcp only.
admin_ready() {
  local reply
  exec 3<>/dev/tcp/127.0.0.1/9901 || return 1
  printf 'GET /ready HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n' >&3
  reply=$(timeout 2 cat <&3)
  exec 3<&-
  [[ $reply == "HTTP/1.1 200"* ]]
}

ready=
for _ in $(seq 1 300); do
  kill -0 "$envoy_pid" 2>/dev/null || break
  if admin_ready 2>/dev/null; then ready=1; break; fi
  sleep 0.2
done
if [ -z "$ready" ]; then
  echo "Envoy did not become ready; its log ($log):" >&2
  tail -n 30 "$log" >&2
  exit 1
fi

# Demo tokens signed with the test-only key of envoy/jwks.json (HS256), with
# the claims the demo rules look at: sub (sticky key), groups (rule "staff");
# the second one is signed with another key (a bad signature).
tokens=$(python3 - <<'PY'
import base64, hashlib, hmac, json, time
def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
key = json.load(open("envoy/jwks.json"))["keys"][0]["k"]
key = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))
header = {"alg": "HS256", "typ": "JWT", "kid": "demo"}
claims = {"iss": "canary-router-demo", "sub": "alice", "groups": ["staff", "dev"],
          "tenant": "initech", "exp": int(time.time()) + 24 * 3600}
signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
for k in (key, b"not-the-demo-key"):
    sig = hmac.new(k, signing_input.encode(), hashlib.sha256).digest()
    print(signing_input + "." + b64(sig))
PY
)
token=$(sed -n 1p <<<"$tokens")
bad_token=$(sed -n 2p <<<"$tokens")

cat <<EOF
canary-router demo is up (Envoy pid $envoy_pid, log: $log)
  listener http://127.0.0.1:10000  ->  v1 (127.0.0.1:10001) / v2 (127.0.0.1:10002)
  plugin configuration: envoy/canary.json (v1 90 %, v2 10 %)
Each response says who served it (x-served-by), what the upstream received
(x-seen-subset) and why the filter decided so (x-canary-decision):

# sticky weights: the same user always lands on the same subset (about 1 in 10 on v2)
for u in alice bob carol dave erin frank grace heidi ivan judy; do curl -s -o /dev/null -w "\$u -> %header{x-served-by}\n" -H "x-user-id: \$u" localhost:10000/; done

# header rule "qa": x-canary: always -> v2
curl -si -H 'x-canary: always' localhost:10000/

# cookie rule "beta", among other cookies -> v2
curl -si -H 'cookie: theme=dark; beta=true; session_id=s-123' localhost:10000/

# JWT rule "staff": a token signed with envoy/jwks.json's test key, verified by jwt_authn -> v2
curl -si -H 'authorization: Bearer $token' localhost:10000/

# the same token with a broken signature: jwt_authn answers 401
curl -si -H 'authorization: Bearer $bad_token' localhost:10000/

# a client trying to force the canary: bob is on v1, and the filter overwrites
# x-canary-subset (x-seen-subset shows what the upstream got)
curl -si -H 'x-canary-subset: v2' -H 'x-user-id: bob' localhost:10000/

# an anonymous visitor gets a pin cookie (reason random, pin=new); replaying it keeps the subset (reason pin)
curl -s -c /tmp/canary-pin.txt -o /dev/null -w '%header{x-canary-decision}\n' localhost:10000/
for i in 1 2 3; do curl -s -b /tmp/canary-pin.txt -o /dev/null -w '%header{x-canary-decision}\n' localhost:10000/; done

# the same decisions offline, from the same code
cargo run -q --bin canary-router -- explain --config envoy/canary.json -H 'x-user-id: bob'

# counters, and the same with labels
curl -s 'localhost:9901/stats?filter=wasmcustom'
curl -s localhost:9901/stats/prometheus | grep '^canary_'

Ctrl-C stops Envoy.
EOF

wait "$envoy_pid"
