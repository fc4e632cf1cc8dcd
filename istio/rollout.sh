#!/usr/bin/env bash
# Progressive rollout of the canary subset by patching the canary-router WasmPlugin.
#
# For each step the canary weight is set in spec.pluginConfig.subsets (a JSON merge
# patch of that one field: Istio pushes the new config to the proxies, no restart),
# then, before the next step, the script waits --pause and asks Prometheus, from the
# filter's own series (the same in Istio and in plain Envoy, src/metrics.rs; prefix
# canary_, or --metrics-prefix for another instance):
#   success rate  sum(rate(canary_responses{subset="C",class!~"5xx|grpc_error"}[W]))
#                   / sum(rate(canary_responses{subset="C"}[W]))
#   p99 (ms)      histogram_quantile(0.99, sum by (le)
#                   (rate(canary_response_duration_ms_bucket{subset="C"}[W])))
#   share         sum(rate(canary_requests{subset="C"}[W])) / sum(rate(canary_requests[W]))
# (C the canary subset, W --window; --selector adds matchers to every selector).
# A success rate under --min-success or a p99 over --max-p99-ms rolls back (canary
# weight 0, its share going to the stable subset); the share is reported only. So
# does missing data once the retries are spent (fail safe); the log then names the
# metric and why it is missing: "no series" (Prometheus has no such series for the
# subset at all: the proxies' stats config or the scrape) or "no traffic" (the
# series exist, no responses in the window). After the last step the canary keeps
# that weight. Each check prints one line to stderr, e.g.
#   rollout: step 2/3 v2=50%: share 49.6%, success 1.0000, p99 0.9 ms: ok
#
#   istio/rollout.sh --steps 10,50,100 --pause 300s --min-success 0.99 --max-p99-ms 500
#   istio/rollout.sh --selector 'app="istio-ingressgateway"'   # the gateway's series only
#   istio/rollout.sh --dry-run          # print the patches and the queries, touch nothing
#   istio/rollout.sh --rollback         # canary weight 0 now
#
# Plain Envoy (no cluster): --kubectl envoy/kubectl-ecds.py patches the ECDS file
# Envoy watches instead (make demo-rollout).
#
# Exit codes: 0 promoted, 3 rolled back (bad metric or no data), 2 usage error,
# 1 anything else (kubectl or the plugin config failed; a rollback is attempted
# when a step's patch fails).
#
# Needs kubectl and python3 (standard library only: JSON and the Prometheus API).
set -euo pipefail

STEPS="10,50,100"
PAUSE="300s"
MIN_SUCCESS="0.99"
MAX_P99_MS="500"
NAMESPACE="istio-system"
PLUGIN="canary-router"
METRICS_PREFIX="canary"
PROMETHEUS="http://prometheus:9090"
WINDOW="1m"
STABLE="v1"
CANARY="v2"
DRY_RUN=0
ROLLBACK_ONLY=0
KUBECTL="kubectl"
RETRIES=5
RETRY_DELAY="60s"
SELECTOR=""

usage() {
  cat <<'EOF'
usage: istio/rollout.sh [options]
  --steps LIST        canary weights in percent, increasing, last one is the promotion (10,50,100)
  --pause DURATION    wait after each step before checking the metrics (300s; s, m, h or plain seconds)
  --min-success R     roll back when the canary success rate (share of responses neither 5xx
                      nor a failing gRPC status) is below R (0.99)
  --max-p99-ms MS     roll back when the canary p99 latency is above MS milliseconds (500)
  --window W          PromQL rate window (1m)
  --selector M        extra label matchers added to every query, comma-separated,
                      e.g. 'app="istio-ingressgateway",namespace="istio-system"'
                      (=, !=, =~, !~; double-quoted values; not subset, which
                      --canary sets); none by default: every proxy's series
  --retries N         queries without data are retried N times, then the canary is rolled back (5)
  --retry-delay D     wait between those retries (60s)
  --namespace NS      namespace of the WasmPlugin (istio-system)
  --plugin NAME       name of the WasmPlugin (canary-router)
  --metrics-prefix P  the plugin's metrics_prefix: the series read are P_requests,
                      P_responses, P_response_duration_ms_bucket (canary); a second
                      service's instance on the same gateway has its own
  --prometheus URL    Prometheus base URL (http://prometheus:9090)
  --stable NAME       stable subset, takes the canary's share back (v1)
  --canary NAME       canary subset (v2)
  --kubectl PATH      kubectl binary (kubectl)
  --rollback          only set the canary weight to 0 now, exit 0 (for a hook or by hand)
  --dry-run           print the patches and the queries only: no patch, no query, no pause
  -h, --help          this text
exit codes: 0 promoted, 3 rolled back, 2 usage error, 1 other failure
EOF
}

die_usage() { echo "rollout: $*" >&2; echo "try: istio/rollout.sh --help" >&2; exit 2; }
log() { echo "rollout: $*" >&2; }

while [[ $# -gt 0 ]]; do
  opt="$1"
  case "$opt" in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1; shift; continue ;;
    --rollback) ROLLBACK_ONLY=1; shift; continue ;;
    --*=*) set -- "${opt%%=*}" "${opt#*=}" "${@:2}"; continue ;;
  esac
  [[ $# -ge 2 ]] || die_usage "$opt needs a value"
  val="$2"
  case "$opt" in
    --steps) STEPS="$val" ;;
    --pause) PAUSE="$val" ;;
    --min-success) MIN_SUCCESS="$val" ;;
    --max-p99-ms) MAX_P99_MS="$val" ;;
    --window) WINDOW="$val" ;;
    --selector) SELECTOR="$val" ;;
    --retries) RETRIES="$val" ;;
    --retry-delay) RETRY_DELAY="$val" ;;
    --namespace) NAMESPACE="$val" ;;
    --plugin) PLUGIN="$val" ;;
    --metrics-prefix) METRICS_PREFIX="$val" ;;
    --prometheus) PROMETHEUS="${val%/}" ;;
    --stable) STABLE="$val" ;;
    --canary) CANARY="$val" ;;
    --kubectl) KUBECTL="$val" ;;
    *) die_usage "unknown option $opt" ;;
  esac
  shift 2
done

# Durations: 300s, 5m, 1h, 0, 1.5s -> seconds for sleep.
to_seconds() {
  local d="$1"
  [[ "$d" =~ ^([0-9]+(\.[0-9]+)?)(s|m|h)?$ ]] || return 1
  local n="${BASH_REMATCH[1]}" unit="${BASH_REMATCH[3]:-s}"
  case "$unit" in
    s) echo "$n" ;;
    m) python3 -c "import sys; print(float(sys.argv[1]) * 60)" "$n" ;;
    h) python3 -c "import sys; print(float(sys.argv[1]) * 3600)" "$n" ;;
  esac
}

PAUSE_S="$(to_seconds "$PAUSE")" || die_usage "--pause: bad duration '$PAUSE' (want e.g. 300s, 5m, 0)"
RETRY_DELAY_S="$(to_seconds "$RETRY_DELAY")" || die_usage "--retry-delay: bad duration '$RETRY_DELAY'"
[[ "$RETRIES" =~ ^[0-9]+$ ]] || die_usage "--retries: want a whole number, got '$RETRIES'"
[[ "$WINDOW" =~ ^[0-9]+(ms|s|m|h|d)$ ]] || die_usage "--window: want a PromQL duration like 1m, got '$WINDOW'"
[[ "$STABLE" != "$CANARY" ]] || die_usage "--stable and --canary are the same subset '$STABLE'"
for s in "$STABLE" "$CANARY"; do
  [[ "$s" =~ ^[a-z0-9][a-z0-9_-]{0,62}$ ]] || die_usage "bad subset name '$s'"
done
# The interpreter itself, resolved once (a version manager's shim costs ~0.1 s a call).
command -v python3 >/dev/null || { echo "rollout: needs python3" >&2; exit 1; }
PYTHON="$(python3 -c 'import sys; print(sys.executable or "python3")')"
python3() { "$PYTHON" "$@"; }
# Steps and thresholds: numbers; steps increasing, in (0, 100], at most two decimals.
python3 - "$STEPS" "$MIN_SUCCESS" "$MAX_P99_MS" "$SELECTOR" <<'PY' || exit 2
import re, sys
from decimal import Decimal, InvalidOperation
steps, min_success, max_p99, selector = sys.argv[1:5]
def fail(msg):
    print("rollout: " + msg, file=sys.stderr)
    sys.exit(2)
try:
    vals = [Decimal(s) for s in steps.split(",")]
except InvalidOperation:
    fail("--steps: want comma-separated percentages, got '%s'" % steps)
for v in vals:
    if not v.is_finite() or v <= 0 or v > 100 or v != v.quantize(Decimal("0.01")):
        fail("--steps: %s is not a percentage in (0, 100] with at most two decimals" % v)
if any(b <= a for a, b in zip(vals, vals[1:])):
    fail("--steps: want increasing weights, got '%s'" % steps)
for name, s in (("--min-success", min_success), ("--max-p99-ms", max_p99)):
    try:
        d = Decimal(s)
    except InvalidOperation:
        fail("%s: want a number, got '%s'" % (name, s))
    if not d.is_finite() or d < 0:
        fail("%s: want a non-negative number, got '%s'" % (name, s))
if Decimal(min_success) > 1:
    fail("--min-success: a ratio between 0 and 1, got '%s'" % min_success)
# --selector: label matchers as PromQL writes them inside braces, loosely checked
# (names, operators, quoting) so that a typo fails here, not as "no series" later.
matcher = r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*'
if selector:
    if not re.fullmatch(r"%s(,%s)*,?" % (matcher, matcher), selector):
        fail("--selector: want label matchers like 'app=\"istio-ingressgateway\",namespace=\"istio-system\"', got '%s'" % selector)
    for m in re.finditer(matcher, selector):
        if m.group(1) in ("subset", "__name__"):
            fail("--selector: '%s' is set by the script (--canary), not by a selector" % m.group(1))
PY
IFS=',' read -r -a STEP_LIST <<<"$STEPS"

[[ "$METRICS_PREFIX" =~ ^[A-Za-z0-9_]{1,64}$ ]] \
  || die_usage "--metrics-prefix: want 1-64 of [A-Za-z0-9_] (the plugin's metrics_prefix), got '$METRICS_PREFIX'"

# The queries, from the filter's series only. SEL: the --selector matchers, added
# inside every selector's braces.
SEL="${SELECTOR%,}"
SEL_TAIL="${SEL:+,$SEL}"
P="$METRICS_PREFIX"
ALL_REQUESTS="${P}_requests"
[[ -z "$SEL" ]] || ALL_REQUESTS="${P}_requests{$SEL}"
SUCCESS_QUERY="sum(rate(${P}_responses{subset=\"$CANARY\",class!~\"5xx|grpc_error\"$SEL_TAIL}[$WINDOW])) / sum(rate(${P}_responses{subset=\"$CANARY\"$SEL_TAIL}[$WINDOW]))"
LATENCY_QUERY="histogram_quantile(0.99, sum by (le) (rate(${P}_response_duration_ms_bucket{subset=\"$CANARY\"$SEL_TAIL}[$WINDOW])))"
SHARE_QUERY="sum(rate(${P}_requests{subset=\"$CANARY\"$SEL_TAIL}[$WINDOW])) / sum(rate($ALL_REQUESTS[$WINDOW]))"
# Asked only when a metric has no value: does the series exist at all?
SUCCESS_SERIES="${P}_responses{subset=\"$CANARY\"$SEL_TAIL}"
LATENCY_SERIES="${P}_response_duration_ms_bucket{subset=\"$CANARY\"$SEL_TAIL}"

# The current WasmPlugin, read once: patches rewrite only the subsets' weights.
PLUGIN_JSON=""
if ! PLUGIN_JSON="$("$KUBECTL" get wasmplugin "$PLUGIN" -n "$NAMESPACE" -o json)"; then
  if [[ $DRY_RUN -eq 1 ]]; then
    log "dry run: cannot read wasmplugin $NAMESPACE/$PLUGIN; assuming subsets $STABLE and $CANARY only"
    PLUGIN_JSON="{\"spec\":{\"pluginConfig\":{\"subsets\":[{\"name\":\"$STABLE\",\"weight\":100},{\"name\":\"$CANARY\",\"weight\":0}]}}}"
  else
    log "cannot read wasmplugin $NAMESPACE/$PLUGIN"
    exit 1
  fi
fi

# The merge patch giving the canary WEIGHT percent; the stable subset gets what the
# others leave, so the weights still sum to 100. Every other field of each subset,
# the subsets' order and the rest of pluginConfig are kept.
PATCH_PY="$(cat <<'PY'
import json, sys
from decimal import Decimal
weight, stable, canary = Decimal(sys.argv[1]), sys.argv[2], sys.argv[3]
def fail(msg):
    print("rollout: " + msg, file=sys.stderr)
    sys.exit(1)
try:
    doc = json.load(sys.stdin, parse_float=Decimal)
except ValueError as e:
    fail("kubectl output is not JSON: %s" % e)
cfg = (doc.get("spec") or {}).get("pluginConfig")
if not isinstance(cfg, dict) or not isinstance(cfg.get("subsets"), list):
    fail("the WasmPlugin has no spec.pluginConfig.subsets list (is its config in pluginConfig?)")
subsets = cfg["subsets"]
names = [s.get("name") if isinstance(s, dict) else None for s in subsets]
for n in (stable, canary):
    if names.count(n) != 1:
        fail("subset '%s' appears %d times in pluginConfig.subsets %s" % (n, names.count(n), names))
others = sum((Decimal(str(s.get("weight", 0))) for s in subsets if s["name"] not in (stable, canary)), Decimal(0))
rest = Decimal(100) - others - weight
if rest < 0:
    fail("canary weight %s does not fit: the other subsets hold %s" % (weight, others))
def num(d):
    d = Decimal(d)
    return int(d) if d == d.to_integral_value() else float(d)
out = []
for s in subsets:
    s = dict(s)
    if s["name"] == canary:
        s["weight"] = num(weight)
    elif s["name"] == stable:
        s["weight"] = num(rest)
    else:
        s["weight"] = num(s.get("weight", 0))
    out.append(s)
print(json.dumps({"spec": {"pluginConfig": {"subsets": out}}}, separators=(",", ":")))
PY
)"
patch_for() { python3 -c "$PATCH_PY" "$1" "$STABLE" "$CANARY" <<<"$PLUGIN_JSON"; }

current_weight() {
  python3 -c '
import json, sys
cfg = (json.load(sys.stdin).get("spec") or {}).get("pluginConfig") or {}
for s in cfg.get("subsets") or []:
    if isinstance(s, dict) and s.get("name") == sys.argv[1]:
        print(s.get("weight", 0)); break
else:
    print("?")
' "$CANARY" <<<"$PLUGIN_JSON" 2>/dev/null || echo "?"
}

apply_weight() {
  local w="$1" patch
  patch="$(patch_for "$w")" || return 1
  if [[ $DRY_RUN -eq 1 ]]; then
    if [[ "$patch" == *"'"* ]]; then patch="$(printf '%q' "$patch")"; else patch="'$patch'"; fi
    echo "$KUBECTL patch wasmplugin $PLUGIN -n $NAMESPACE --type merge -p $patch"
    return 0
  fi
  log "canary $CANARY -> $w%: $patch"
  "$KUBECTL" patch wasmplugin "$PLUGIN" -n "$NAMESPACE" --type merge -p "$patch" >&2
}

rollback() {
  log "ROLLBACK: $1"
  if ! apply_weight 0; then
    log "ROLLBACK PATCH FAILED: set $CANARY's weight to 0 in wasmplugin $NAMESPACE/$PLUGIN by hand"
    exit 1
  fi
  log "rolled back: $CANARY at 0%, $STABLE takes its share (rules that force $CANARY still apply)"
  exit 3
}

# One check: the three queries (and, for a metric without a value, whether its
# series exist), then one tab-separated line:
#   ok|bad|nodata <TAB> share ..., success ..., p99 ... <TAB> why (bad, nodata)
# Prometheus unreachable or answering an error counts as no data.
CHECK_PY="$(cat <<'PY'
import json, math, sys, urllib.parse, urllib.request
(prom, window, min_s, max_l, success_q, latency_q, share_q,
 success_series, latency_series) = sys.argv[1:10]

def query(q):
    """(value, None) for one finite sample; (None, why) otherwise."""
    url = prom + "/api/v1/query?" + urllib.parse.urlencode({"query": q})
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            doc = json.load(r)
    except Exception as e:  # unreachable, HTTP error, not JSON
        return None, "query failed (%s: %s)" % (prom, e)
    try:
        if doc.get("status") != "success":
            return None, "query failed (%s)" % doc.get("error", doc.get("status"))
        res = doc["data"]["result"]
        if doc["data"].get("resultType") == "scalar":
            res = [{"value": res}]
        vals = [float(r["value"][1]) for r in res]
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        return None, "query failed (unexpected answer: %s)" % e
    if not vals:
        return None, "empty result"
    if len(vals) > 1:
        return None, "%d series where one was expected" % len(vals)
    if not math.isfinite(vals[0]):
        return None, "%s" % vals[0]
    return vals[0], None

def why_missing(series, why):
    if why.startswith("query failed"):
        return "%s: %s" % (series, why)
    n, count_why = query("count(%s)" % series)
    if n is None and count_why.startswith("query failed"):
        return "%s: %s" % (series, count_why)
    if not n:
        return ("%s: no series (none in Prometheus for this subset: check the proxies' "
                "stats config, stats_tags / extraStatTags and metrics_prefix, and the scrape)"
                % series)
    return "%s: no traffic (%d series, no responses in the last %s)" % (series, n, window)

s, s_why = query(success_q)
l, l_why = query(latency_q)
share, _ = query(share_q)
summary = "share %s, success %s, p99 %s" % (
    "n/a" if share is None else "%.1f%%" % (100 * share),
    "n/a" if s is None else "%.4f" % s,
    "n/a" if l is None else "%.1f ms" % l,
)
missing = []
if s is None:
    missing.append("success rate: " + why_missing(success_series, s_why))
if l is None:
    missing.append("p99: " + why_missing(latency_series, l_why))
if missing:
    print("nodata\t%s\t%s" % (summary, "; ".join(missing)))
    sys.exit(0)
bad = []
if s < float(min_s):
    bad.append("success rate %.4f < %s" % (s, min_s))
if l > float(max_l):
    bad.append("p99 %.1f ms > %s ms" % (l, max_l))
print("%s\t%s\t%s" % ("bad" if bad else "ok", summary, "; ".join(bad)))
PY
)"

# Returns when the canary is healthy; rolls back (and exits) otherwise, including
# when there is still no data after the retries. $1: the weight, $2: "step i/n".
check_metrics() {
  local attempt=0 verdict kind summary why
  while :; do
    verdict="$(python3 -c "$CHECK_PY" "$PROMETHEUS" "$WINDOW" "$MIN_SUCCESS" "$MAX_P99_MS" \
      "$SUCCESS_QUERY" "$LATENCY_QUERY" "$SHARE_QUERY" "$SUCCESS_SERIES" "$LATENCY_SERIES")" \
      || verdict=$'nodata\tshare n/a, success n/a, p99 n/a\tthe check itself failed'
    IFS=$'\t' read -r kind summary why <<<"$verdict"
    case "$kind" in
      ok)
        log "$2 $CANARY=$1%: $summary: ok"
        return 0 ;;
      bad)
        log "$2 $CANARY=$1%: $summary: bad ($why)"
        rollback "$CANARY at $1%: $why" ;;
    esac
    if [[ $attempt -ge $RETRIES ]]; then
      log "$2 $CANARY=$1%: $summary: no data ($why)"
      rollback "no data for $CANARY after $((RETRIES + 1)) tries ($why); failing safe"
    fi
    attempt=$((attempt + 1))
    log "$2 $CANARY=$1%: $summary: no data ($why); retry $attempt/$RETRIES in $RETRY_DELAY"
    sleep "$RETRY_DELAY_S"
  done
}

if [[ $ROLLBACK_ONLY -eq 1 ]]; then
  apply_weight 0 || { log "rollback patch failed"; exit 1; }
  log "rolled back on request: $CANARY at 0%"
  exit 0
fi
log "wasmplugin $NAMESPACE/$PLUGIN: $CANARY now at $(current_weight)%, steps ${STEPS//,/ -> }, pause $PAUSE"
last=$((${#STEP_LIST[@]} - 1))
for i in "${!STEP_LIST[@]}"; do
  w="${STEP_LIST[$i]}"
  if ! apply_weight "$w"; then
    log "patch for $CANARY at $w% failed"
    apply_weight 0 || log "ROLLBACK PATCH FAILED too: check wasmplugin $NAMESPACE/$PLUGIN by hand"
    exit 1
  fi
  [[ $i -eq $last ]] && break
  if [[ $DRY_RUN -eq 1 ]]; then
    echo "# pause $PAUSE, then query $PROMETHEUS/api/v1/query (roll back below $MIN_SUCCESS or above $MAX_P99_MS ms):"
    echo "#   success rate: $SUCCESS_QUERY"
    echo "#   p99 (ms):     $LATENCY_QUERY"
    echo "#   share (shown): $SHARE_QUERY"
    echo "#   a metric without a value: count($SUCCESS_SERIES) or count($LATENCY_SERIES) tells no series from no traffic"
    continue
  fi
  log "pausing $PAUSE"
  sleep "$PAUSE_S"
  check_metrics "$w" "step $((i + 1))/${#STEP_LIST[@]}"
done
if [[ $DRY_RUN -eq 1 ]]; then
  echo "# rollback (on a bad metric, or no data after $RETRIES retries $RETRY_DELAY apart), exit 3:"
  apply_weight 0
  exit 0
fi
log "promoted: $CANARY at ${STEP_LIST[$last]}%"
