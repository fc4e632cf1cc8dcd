#!/usr/bin/env python3
"""`make bench`: what canary-router costs inside a real Envoy, side by side with
native routing, a Lua filter and an empty Wasm module.

One measured Envoy (--concurrency 1) serves every listener on loopback; all of
them run the same jwt_authn prefix, so they differ only in how the route is
picked. A SEPARATE upstream Envoy process (direct_response, --concurrency 1)
answers for clusters v1 and v2, so its CPU is not counted. wrk sends the same
request mix to every listener, round-robin, for BENCH_ROUNDS rounds; the
measure is the measured Envoy's own CPU time (utime+stime from /proc/<pid>/stat)
divided by the requests that listener served (http.<prefix>.downstream_rq_total).

The host's CPU speed drifts a lot on small VMs, so each run's value is also
normalized by the upstream Envoy's CPU per request in that same run (it does
the same work for every listener); added CPU and targets use the normalized
values unless BENCH_NORMALIZE=0.

Environment: BENCH_ROUNDS (3), BENCH_SECONDS (5), BENCH_CONNECTIONS (8),
BENCH_WARMUP (2 s per listener), BENCH_NORMALIZE (1), ENVOY_BIN, WASM (the
filter), WASM_OPT_FLAGS.
Exit status: 0 when the benchmark ran (whatever the targets say), 1 when the
harness itself failed (a build, an Envoy that would not start, wrong routing,
failed requests).

Python 3.11 standard library only.
"""

from __future__ import annotations

import base64
import ctypes
import glob
import hashlib
import hmac
import http.client
import json
import os
import platform
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "target" / "bench"
LOGS = OUT / "logs"

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "8"))
WARMUP = float(os.environ.get("BENCH_WARMUP", "2"))
# Latency at a paced load: each wrk connection waits BENCH_PACE_MS before its next
# request, so Envoy is busy part of the time and p99 shows what a request costs,
# not the queue behind a saturated worker. BENCH_PACED_SECONDS=0 skips it.
PACED_SECONDS = float(os.environ.get("BENCH_PACED_SECONDS", "3"))
PACE_MS = int(os.environ.get("BENCH_PACE_MS", "2"))
NORMALIZE = os.environ.get("BENCH_NORMALIZE", "1") != "0"

CLK_TCK = os.sysconf("SC_CLK_TCK")

# examples/wasm_floor.rs, built next to wasm-empty: the least a header-routing
# Wasm filter does (bench-profile's wasm-floor listeners).
FLOOR_WASM = OUT / "wasm-floor.wasm"

# The request mix (the same for every listener; see make_wrk_script()).
USER_IDS = 100_000
TOKENS = 1_000  # distinct signed tokens; TOKENS is a multiple of 100
RULE_EVERY = 100  # i % 100 == 1: x-canary: always, == 2: beta=true cookie, == 3: staff token
LARGE_FILLER_RULES = 197
LARGE_IN_LIST = 50_000
COMPOSED_RULES = 200

ALL_LISTENERS = ["native", "native-hash", "lua", "wasm-empty", "canary-router",
                 "canary-router-large", "canary-router-composed", "canary-router-metadata"]
# BENCH_LISTENERS=native,wasm-empty,canary-router for a quicker comparison while
# tuning (native is always kept: every ratio is relative to it); BENCH_SIDE=0 skips
# the RSS and startup measures.
# native-module: the filter as an Envoy dynamic module (docs/native.md) with the
# typical config, loaded from target/native/. `make bench` builds it first (`make
# native`), and it is measured by default whenever the library is there; run by
# hand without it, the benchmark runs without that listener and its targets.
OPTIONAL_LISTENERS = ["native-module", "canary-router-cohort-edge", "canary-router-cohort-mesh",
                      "canary-router-grpc", "canary-router-skipped", "canary-router-scoped",
                      "native-module-scoped", "canary-router-shared", "native-module-shared",
                      "native-empty", "native-floor", "native-module-no-claims"]
# native-module-no-claims: the module with the typical config's JWT parts taken
# out (sticky on the session cookie, then x-user-id; the header and cookie rules,
# no claim rule): a different decision, measured only to bound what reading
# claims costs; the mix's tokens are verified by jwt_authn all the same. Opt-in.
# native-empty / native-floor: the floor of an Envoy dynamic-module filter
# (examples/native_empty.rs), as wasm-empty and wasm-floor are for Proxy-Wasm:
# every hook returns Continue; or, in addition, the routing header written and
# the route cache cleared. Opt-in; they route nothing to v2.
# canary-router-scoped / native-module-scoped: the typical config with a `scope`
# every request of the mix is in (any host but other.example.com): each request
# is decided as by canary-router / native-module, plus the scope test and the
# mark a scoped instance leaves in the stream's filter state for a later
# instance on the same routing header. Opt-in, for bench-profile.
# canary-router-shared / native-module-shared: that scoped instance, then a second,
# unscoped one on the same routing header: the first decides every request and the
# second finds the header marked and skips it; minus the -scoped listener, what an
# instance pays for a request an earlier one routed. Opt-in, for bench-profile.
# canary-router-skipped: the typical config with a `scope` the mix never matches
# (host other.example.com): every request passes through untouched, counted in
# bench_canary_router_skipped.skipped; what a request outside an instance's scope
# costs it. Opt-in, for bench-profile; its routing check expects 0 % on v2.
# canary-router-grpc: the typical config, every request a gRPC call
# (`content-type: application/grpc`) whose upstream answers with `grpc-status: 0`
# in the response headers (direct_response cannot send trailers): the price of
# telling a gRPC call and reading its status. Opt-in, for bench-profile.
# canary-router-cohort-edge / -mesh: the typical config with a `cohort` block
# (docs/configuration.md, "Cohorts"), at the edge (client cohort members removed,
# the bucket written into baggage) and inside the mesh (the bucket read from
# baggage as the first sticky key, and written on). Opt-in, for
# `PROFILE_LISTENERS=canary-router,canary-router-cohort-edge,canary-router-cohort-mesh
# make bench-profile`, whose requests to them carry a `baggage` header
# (`cohort_baggage`).
NATIVE_MODULE_DIR = ROOT / "target" / "native"
os.environ.setdefault("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", str(NATIVE_MODULE_DIR))
DEFAULT_OPTIONAL = (["native-module"] if (NATIVE_MODULE_DIR / "libcanary_router.so").is_file()
                    else [])
LISTENERS = [n for n in ALL_LISTENERS + OPTIONAL_LISTENERS
             if n in ("native", "wasm-empty") or n in os.environ.get(
                 "BENCH_LISTENERS", ",".join(ALL_LISTENERS + DEFAULT_OPTIONAL)).split(",")]
# BENCH_VARIANTS=a=/tmp/a.wasm,b=/tmp/b.wasm adds listeners `variant-a`, ... that
# run other builds of the filter with the typical config, measured in the same
# Envoy and rounds as the rest: the way to A/B a change to the hot path. Their
# routing is not checked (a variant may stub out a host call to price it). A path
# ending in `.so` is a build of the native module instead (copied next to
# target/native/libcanary_router.so as libcanary_router_variant_<name>.so), so
# that `SIM_LISTENERS=native-module,variant-a make bench-simultaneous` A/Bs a
# native change in µs with both builds loaded at once.
VARIANTS = dict(v.split("=", 1) for v in os.environ.get("BENCH_VARIANTS", "").split(",") if v)
LISTENERS += [f"variant-{name}" for name in VARIANTS]
FULL = [n for n in LISTENERS if n not in OPTIONAL_LISTENERS] == ALL_LISTENERS
NATIVE_MODULE = "native-module" in LISTENERS
SIDE_MEASURES = os.environ.get("BENCH_SIDE", "1") != "0"


class HarnessError(Exception):
    """The benchmark itself could not run (as opposed to a target that failed)."""


def log(msg: str = "") -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------------------
# Processes: every one we start is recorded and ended by its own PID.
# ---------------------------------------------------------------------------

_children: list[subprocess.Popen] = []


def _die_with_parent() -> None:
    # Linux prctl(PR_SET_PDEATHSIG, SIGTERM): the child gets SIGTERM if this
    # script dies without running its cleanup (e.g. SIGKILL).
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass


def spawn(args: list[str], logfile: Path) -> subprocess.Popen:
    out = open(logfile, "wb")
    try:
        proc = subprocess.Popen(
            args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
    finally:
        out.close()
    _children.append(proc)
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if proc in _children:
        _children.remove(proc)


def stop_all() -> None:
    for proc in list(_children):
        try:
            stop(proc)
        except Exception as e:  # keep stopping the others
            print(f"warning: could not stop pid {proc.pid}: {e}", file=sys.stderr)


def _on_sigterm(signum, _frame):
    raise SystemExit(128 + signum)


# ---------------------------------------------------------------------------
# Builds and tools
# ---------------------------------------------------------------------------

def run_cmd(args: list[str]) -> None:
    log("+ " + " ".join(args))
    res = subprocess.run(args, cwd=ROOT)
    if res.returncode != 0:
        raise HarnessError(f"command failed ({res.returncode}): {' '.join(args)}")


def ensure_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk:
        return wrk
    log("wrk is missing: installing it with apt-get")
    res = subprocess.run("apt-get update -qq && apt-get install -y -qq wrk >/dev/null",
                         shell=True, cwd=ROOT)
    wrk = shutil.which("wrk")
    if res.returncode != 0 or not wrk:
        raise HarnessError("could not install wrk (apt-get install wrk)")
    return wrk


def find_envoy() -> Path:
    env = os.environ.get("ENVOY_BIN")
    if env:
        return ROOT / env  # an absolute ENVOY_BIN stays as it is
    on_path = shutil.which("envoy")
    if on_path:
        return Path(on_path)
    found = sorted(glob.glob(str(ROOT / ".venv/lib/python3*/site-packages/envoy/_bin/envoy")))
    if not found:
        raise HarnessError("no Envoy: run `make envoy` (or `make bench`, which does)")
    return Path(found[0])


def build_modules() -> tuple[Path, Path]:
    """The filter (make wasm) and the empty module, shrunk the same way."""
    filter_wasm = Path(os.environ.get("WASM", ROOT / "target" / "canary-router.wasm"))
    if not filter_wasm.is_absolute():
        filter_wasm = ROOT / filter_wasm
    if not os.environ.get("BENCH_SKIP_MAKE_WASM"):
        try:
            run_cmd(["make", "--no-print-directory", "wasm"])
        except HarnessError:
            # A concurrent `make wasm` (another terminal, the tests) can race on
            # the wasm-opt output; one retry settles it.
            time.sleep(2)
            run_cmd(["make", "--no-print-directory", "wasm"])
    if not filter_wasm.is_file():
        raise HarnessError(f"no filter at {filter_wasm}")
    # Every Envoy of this run loads this copy, so a rebuild in another terminal
    # while the benchmark runs cannot mix two builds into one report.
    snapshot = OUT / "canary-router.wasm"
    shutil.copyfile(filter_wasm, snapshot)

    # The same cargo profile as the filter: `wasm` when Cargo.toml has one.
    profile = os.environ.get("BENCH_WASM_PROFILE") or (
        "wasm" if "[profile.wasm]" in (ROOT / "Cargo.toml").read_text() else "release")
    flags = os.environ.get("WASM_OPT_FLAGS", "").split()
    for example, out in [("wasm-empty", OUT / "wasm-empty.wasm"), ("wasm-floor", FLOOR_WASM)]:
        run_cmd(["cargo", "build", "--quiet", "--profile", profile, "--target", "wasm32-wasip1",
                 "--example", example])
        raw = ROOT / "target" / "wasm32-wasip1" / profile / "examples" / (
            example.replace("-", "_") + ".wasm")
        if flags and shutil.which("wasm-opt"):
            run_cmd(["wasm-opt", *flags, str(raw), "-o", str(out)])
        else:
            shutil.copyfile(raw, out)
    if any(n in LISTENERS for n in ("native-empty", "native-floor")):
        run_cmd(["cargo", "build", "--quiet", "--profile", "native", "--example", "native-empty"])
        NATIVE_MODULE_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / "target" / "native" / "examples" / "libnative_empty.so",
                        NATIVE_MODULE_DIR / "libnative_empty.so")
    return snapshot, OUT / "wasm-empty.wasm"


# ---------------------------------------------------------------------------
# The request mix: HS256 tokens signed with the demo key, the wrk script
# ---------------------------------------------------------------------------

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def demo_key() -> bytes:
    jwks = json.loads((ROOT / "envoy" / "jwks.json").read_text())
    k = jwks["keys"][0]["k"]
    return base64.urlsafe_b64decode(k + "=" * (-len(k) % 4))


def sign_hs256(claims: dict, key: bytes) -> str:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "demo"},
                               separators=(",", ":")).encode())
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(sig)}"


def make_tokens() -> list[str]:
    key = demo_key()
    tokens = []
    for t in range(TOKENS):
        groups = ["dev", "staff"] if t % RULE_EVERY == 3 else ["dev"]
        tokens.append(sign_hs256({"iss": "canary-router-demo", "sub": f"sub-{t}",
                                  "groups": groups, "iat": 1767225600,
                                  "exp": 4102444800}, key))
    return tokens


def request_headers(i: int, tokens: list[str]) -> dict[str, str]:
    """Request number i of the mix (the wrk script builds the same ones)."""
    i %= USER_IDS
    cookie = f"theme=dark; lang=en; session_id=s{i}; consent=1"
    headers = {
        "x-user-id": f"user-{i}",
        "x-tenant": f"other-{i}",
        "authorization": "Bearer " + tokens[i % TOKENS],
    }
    if i % RULE_EVERY == 1:
        headers["x-canary"] = "always"
    if i % RULE_EVERY == 2:
        cookie += "; beta=true"
    headers["cookie"] = cookie
    return headers


def cohort_baggage(i: int) -> str:
    """The `baggage` a request to a cohort listener carries: a member of the
    application's, and a bucket as an upstream hop writes it."""
    return f"tenant=acme;p=1,canary-bucket={(i * 7919) % 10000}"


def make_wrk_script(tokens: list[str], path: Path, pace_ms: int | None = None) -> None:
    lua_tokens = ",\n".join(f'  "Bearer {t}"' for t in tokens)
    pacing = ("" if pace_ms is None else
              f"\n-- Paced: each connection waits {pace_ms} ms before its next request.\n"
              f"function delay()\n  return {pace_ms}\nend\n")
    path.write_text(f"""-- Generated by benches/envoy/run.py: the benchmark's request mix.
-- Request i (cycling over {USER_IDS} user ids): x-user-id, x-tenant, a cookie
-- header with four cookies, a bearer token signed with the demo key (one of
-- {TOKENS}). i % 100 == 1 adds x-canary: always, == 2 adds the cookie beta=true,
-- == 3 carries a token whose groups include staff; the rest match no rule.
local tokens = {{
{lua_tokens}
}}
local n = -1

function request()
  n = n + 1
  local i = n % {USER_IDS}
  local cookie = "theme=dark; lang=en; session_id=s" .. i .. "; consent=1"
  local r = i % {RULE_EVERY}
  local h = {{
    ["x-user-id"] = "user-" .. i,
    ["x-tenant"] = "other-" .. i,
    ["authorization"] = tokens[(i % {TOKENS}) + 1],
  }}
  if r == 1 then h["x-canary"] = "always" end
  if r == 2 then cookie = cookie .. "; beta=true" end
  h["cookie"] = cookie
  return wrk.format(nil, nil, h)
end

{pacing}
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,' ..
    '"errors":{{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
""")


# ---------------------------------------------------------------------------
# Envoy configurations
# ---------------------------------------------------------------------------

ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def jwt_authn_filter() -> dict:
    """The prefix every listener shares: envoy/envoy.yaml's jwt_authn."""
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"demo": {
                "issuer": "canary-router-demo",
                "local_jwks": {"filename": str(ROOT / "envoy" / "jwks.json")},
                "payload_in_metadata": "payload",
                "forward_payload_header": "x-jwt-payload",
                "forward": True,
            }},
            "rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
                {"provider_name": "demo"}, {"allow_missing": {}}]}}}],
        },
    }


def header_routes() -> list[dict]:
    """envoy/envoy.yaml's route table: x-canary-subset v1 / v2, else v1."""
    def on(subset):
        return {"match": {"prefix": "/", "headers": [
            {"name": "x-canary-subset", "string_match": {"exact": subset}}]},
            "route": {"cluster": subset}}
    return [on("v1"), on("v2"), {"match": {"prefix": "/"}, "route": {"cluster": "v1"}}]


def weighted(use_hash: bool) -> list[dict]:
    action: dict = {"weighted_clusters": {"clusters": [
        {"name": "v1", "weight": 90}, {"name": "v2", "weight": 10}]}}
    if use_hash:
        action["weighted_clusters"]["use_hash_policy"] = True
        action["hash_policy"] = [{"header": {"header_name": "x-user-id"}}]
    return [{"match": {"prefix": "/"}, "route": action}]


# The Lua listener's decision, the same shape as the typical config: header
# rule, cookie rule, then a sticky hash (32-bit FNV-1a) of x-user-id against
# 90/10 buckets of 10,000; it writes x-canary-subset and clears the route cache.
LUA_CODE = r"""
local bit = bit or require("bit")

local function bucket(key)
  local h = -2128831035 -- 2166136261, the FNV-1a offset basis, as a signed 32-bit value
  for j = 1, #key do
    h = bit.bxor(h, key:byte(j))
    -- h * 16777619 (mod 2^32) = (h << 24) + h * 403, exact in doubles
    h = bit.tobit(bit.lshift(h, 24) + h * 403)
  end
  if h < 0 then h = h + 4294967296 end
  return h % 10000
end

local function cookie_value(header, name)
  for k, v in header:gmatch("%s*([^=;%s]+)=([^;]*)") do
    if k == name then return v end
  end
  return nil
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local subset
  if headers:get("x-canary") == "always" then
    subset = "v2"
  else
    local cookie = headers:get("cookie")
    if cookie ~= nil and cookie_value(cookie, "beta") == "true" then
      subset = "v2"
    else
      local key = headers:get("x-user-id")
      local b
      if key ~= nil and key ~= "" then b = bucket(key) else b = math.random(0, 9999) end
      if b < 9000 then subset = "v1" else subset = "v2" end
    end
  end
  headers:replace("x-canary-subset", subset)
  handle:clearRouteCache()
end
"""


def lua_filter() -> dict:
    return {"name": "envoy.filters.http.lua", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
        "default_source_code": {"inline_string": LUA_CODE}}}


def wasm_filter(vm_id: str, wasm: Path, configuration: str | None) -> dict:
    config: dict = {
        "name": vm_id, "root_id": vm_id,
        "vm_config": {"vm_id": vm_id, "runtime": "envoy.wasm.runtime.v8",
                      "code": {"local": {"filename": str(wasm)}}},
    }
    if configuration is not None:
        config["configuration"] = {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                   "value": configuration}
    return {"name": "envoy.filters.http.wasm", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": config}}


def dynamic_module_filter(configuration: str, module: str = "canary_router") -> dict:
    """The filter as an Envoy dynamic module (make native), or another module of
    NATIVE_MODULE_DIR."""
    if not (NATIVE_MODULE_DIR / f"lib{module}.so").is_file():
        raise HarnessError(f"no {NATIVE_MODULE_DIR}/lib{module}.so: run `make native`")
    return {"name": "envoy.filters.http.dynamic_modules", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
        "dynamic_module_config": {"name": module},
        "filter_name": "canary-router",
        "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                          "value": configuration}}}


TYPICAL_RULES = [
    {"name": "qa", "subset": "v2", "match": {"header": {"name": "x-canary", "exact": "always"}}},
    {"name": "beta", "subset": "v2", "match": {"cookie": {"name": "beta", "exact": "true"}}},
    {"name": "staff", "subset": "v2", "match": {"jwt_claim": {"name": "groups", "contains": "staff"}}},
]


def composed_rules() -> list:
    """200 composed rules that never match the benchmark's requests, placed first,
    in the shapes a VirtualService translation produces: a header or cookie
    ANDed with a path or method (indexed under the header or cookie, which the
    requests do not carry), and ORs of a header and a query parameter (read on
    every request)."""
    rules = []
    for i in range(COMPOSED_RULES):
        if i % 4 in (0, 1):
            match = {"all": [{"header": {"name": f"x-flag-{i}", "exact": "on"}},
                             {"path": {"prefix": f"/svc-{i}/"}}]}
        elif i % 4 == 2:
            match = {"all": [{"cookie": {"name": f"flag{i}", "prefix": "on"}},
                             {"method": {"in": ["POST", "PUT"]}}]}
        else:
            match = {"any": [{"header": {"name": f"x-team-{i}", "exact": "blue"}},
                             {"query": {"name": f"variant{i}", "exact": "b"}}]}
        rules.append({"name": f"composed{i}", "subset": "v2", "match": match})
    return rules


def plugin_config(large: bool, claims: str = "payload_header", composed: bool = False) -> dict:
    rules = list(TYPICAL_RULES)
    if composed:
        rules = composed_rules() + rules
    if large:
        # Rules that never match the benchmark's requests, placed first so that
        # every request walks them all: absent headers and absent cookies, then
        # one `in` rule on a header every request carries (so the set lookup runs).
        filler = []
        for i in range(LARGE_FILLER_RULES):
            if i % 2 == 0:
                filler.append({"name": f"h{i}", "subset": "v2", "match": {
                    "header": {"name": f"x-flag-{i}", "exact": "on"}}})
            else:
                filler.append({"name": f"c{i}", "subset": "v2", "match": {
                    "cookie": {"name": f"flag{i}", "prefix": "on"}}})
        filler.append({"name": "tenants", "subset": "v2", "match": {"header": {
            "name": "x-tenant", "in": [f"tenant-{j}" for j in range(LARGE_IN_LIST)]}}})
        rules = filler + rules
    return {
        "subsets": [{"name": "v1", "weight": 90}, {"name": "v2", "weight": 10}],
        "default_subset": "v1",
        "header": "x-canary-subset",
        "metrics_prefix": "bench_large" if large else "bench_composed" if composed else "bench",
        "sticky": {"keys": [{"jwt_claim": "sub"}, {"cookie": "session_id"},
                            {"header": "x-user-id"}], "seed": "api-2026-11"},
        "jwt": ({"source": "payload_header", "header": "x-jwt-payload"}
                if claims == "payload_header" else {"source": "verified", "metadata_key": "payload"}),
        "rules": rules,
    }


def listener_filters(name: str, filter_wasm: Path, empty_wasm: Path) -> tuple[list, list]:
    """(http filters after jwt_authn, routes) of a listener."""
    if name == "native":
        return [], weighted(False)
    if name == "native-hash":
        return [], weighted(True)
    if name == "lua":
        return [lua_filter()], header_routes()
    if name == "wasm-empty":
        return [wasm_filter("wasm-empty", empty_wasm, None)], header_routes()
    if name in ("wasm-floor", "wasm-floor-counted"):
        return [wasm_filter(name, FLOOR_WASM,
                            "count" if name.endswith("counted") else None)], header_routes()
    if name == "canary-router":
        return [wasm_filter("canary-router", filter_wasm,
                            json.dumps(plugin_config(False)))], header_routes()
    if name == "native-module":
        return [dynamic_module_filter(json.dumps(plugin_config(False)))], header_routes()
    if name.startswith("variant-"):
        build = Path(VARIANTS[name[len("variant-"):]])
        if build.suffix == ".so":
            module = f"canary_router_variant_{name[len('variant-'):]}"
            shutil.copyfile(build, NATIVE_MODULE_DIR / f"lib{module}.so")
            return ([dynamic_module_filter(json.dumps(plugin_config(False)), module)],
                    header_routes())
        return [wasm_filter(name, build, json.dumps(plugin_config(False)))], header_routes()
    if name in ("canary-router-cohort-edge", "canary-router-cohort-mesh"):
        config = plugin_config(False)
        config["metrics_prefix"] = stat_prefix(name)
        mesh = name.endswith("mesh")
        config["cohort"] = {"trust_incoming": mesh}
        if mesh:
            config["sticky"]["keys"].insert(0, {"baggage": "canary-bucket"})
        return [wasm_filter(name, filter_wasm, json.dumps(config))], header_routes()
    if name in ("native-empty", "native-floor"):
        return [dynamic_module_filter(name.split("-")[1], "native_empty")], header_routes()
    if name == "native-module-no-claims":
        config = plugin_config(False)
        config["metrics_prefix"] = stat_prefix(name)
        config["sticky"]["keys"] = [k for k in config["sticky"]["keys"] if "jwt_claim" not in k]
        config["rules"] = [r for r in config["rules"] if "jwt_claim" not in r["match"]]
        return [dynamic_module_filter(json.dumps(config))], header_routes()
    if name in ("canary-router-scoped", "native-module-scoped"):
        config = plugin_config(False)
        config["metrics_prefix"] = stat_prefix(name)
        config["scope"] = {"not": {"host": {"exact": "other.example.com"}}}
        if name.startswith("native-"):
            return [dynamic_module_filter(json.dumps(config))], header_routes()
        return [wasm_filter(name, filter_wasm, json.dumps(config))], header_routes()
    if name in ("canary-router-shared", "native-module-shared"):
        first = plugin_config(False)
        first["metrics_prefix"] = stat_prefix(name)
        first["scope"] = {"not": {"host": {"exact": "other.example.com"}}}
        later = plugin_config(False)
        later["metrics_prefix"] = stat_prefix(name) + "_later"
        if name.startswith("native-"):
            return [dynamic_module_filter(json.dumps(first)),
                    dynamic_module_filter(json.dumps(later))], header_routes()
        return [wasm_filter(name, filter_wasm, json.dumps(first)),
                wasm_filter(name + "-later", filter_wasm, json.dumps(later))], header_routes()
    if name == "canary-router-skipped":
        config = plugin_config(False)
        config["metrics_prefix"] = stat_prefix(name)
        config["scope"] = {"host": {"exact": "other.example.com"}}
        return [wasm_filter(name, filter_wasm, json.dumps(config))], header_routes()
    if name == "canary-router-grpc":
        config = plugin_config(False)
        config["metrics_prefix"] = stat_prefix(name)
        return [wasm_filter(name, filter_wasm, json.dumps(config))], header_routes()
    if name == "canary-router-metadata":
        return [wasm_filter(name, filter_wasm,
                            json.dumps(plugin_config(False, "verified")))], header_routes()
    if name == "canary-router-large":
        return [wasm_filter("canary-router-large", filter_wasm,
                            json.dumps(plugin_config(True), separators=(",", ":")))], header_routes()
    if name == "canary-router-composed":
        return [wasm_filter("canary-router-composed", filter_wasm,
                            json.dumps(plugin_config(False, composed=True),
                                       separators=(",", ":")))], header_routes()
    raise ValueError(name)


def stat_prefix(name: str) -> str:
    return "bench_" + name.replace("-", "_")


def listener(name: str, port: int, filter_wasm: Path, empty_wasm: Path) -> dict:
    filters, routes = listener_filters(name, filter_wasm, empty_wasm)
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": stat_prefix(name),
                "route_config": {"name": name, "virtual_hosts": [
                    {"name": name, "domains": ["*"], "routes": routes}]},
                # As envoy/envoy.yaml: only jwt_authn may write x-jwt-payload, only
                # the filter x-canary-subset.
                "early_header_mutation_extensions": [{
                    "name": "envoy.http.early_header_mutation.header_mutation",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation",
                        "mutations": [{"remove": "x-canary-subset"}, {"remove": "x-jwt-payload"}]}}],
                "http_filters": [jwt_authn_filter(), *filters, ROUTER],
            }}]}],
    }


def cluster(name: str, port: int) -> dict:
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": port}}}}]}]}}


def admin(port: int) -> dict:
    return {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}


def measured_config(names: list[str], ports: dict, up: dict, filter_wasm: Path,
                    empty_wasm: Path) -> dict:
    return {
        "admin": admin(ports["admin"]),
        "static_resources": {
            "listeners": [listener(n, ports[n], filter_wasm, empty_wasm) for n in names],
            "clusters": [cluster("v1", up["v1"]), cluster("v2", up["v2"])],
        },
    }


def upstream_config(ports: dict) -> dict:
    def backend(subset):
        return {
            "name": f"backend_{subset}",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": ports[subset]}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": f"backend_{subset}",
                    "route_config": {"name": subset, "virtual_hosts": [{
                        "name": subset, "domains": ["*"],
                        "response_headers_to_add": [{"header": {"key": "x-served-by", "value": subset}}],
                        "routes": [
                            # gRPC calls (canary-router-grpc) get their status in
                            # the headers, as a trailers-only response carries it.
                            {"match": {"prefix": "/", "headers": [{
                                "name": "content-type",
                                "string_match": {"exact": "application/grpc"}}]},
                             "response_headers_to_add": [
                                 {"header": {"key": "grpc-status", "value": "0"}}],
                             "direct_response": {"status": 200}},
                            {"match": {"prefix": "/"}, "direct_response": {
                                "status": 200, "body": {"inline_string": f"{subset}\n"}}}]}]},
                    "http_filters": [ROUTER],
                }}]}],
        }
    return {"admin": admin(ports["admin"]),
            "static_resources": {"listeners": [backend("v1"), backend("v2")]}}


# ---------------------------------------------------------------------------
# Running Envoy
# ---------------------------------------------------------------------------

_next_base_id = [0]


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Envoy:
    name: str
    proc: subprocess.Popen
    admin_port: int
    ports: dict
    logfile: Path
    startup_s: float = 0.0  # wall time from spawn to /ready
    startup_cpu_s: float = 0.0  # Envoy's own CPU time (all threads) at /ready

    @property
    def pid(self) -> int:
        return self.proc.pid

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=10) as r:
            return r.read().decode()

    def counters(self, suffix: str) -> dict[str, int]:
        out = {}
        for line in self.get(f"/stats?filter={suffix}$").splitlines():
            k, _, v = line.partition(": ")
            if v.strip().isdigit():
                out[k] = int(v)
        return out

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


def start_envoy(label: str, envoy_bin: Path, make_config, port_names: list[str],
                concurrency: int, wrapper: list[str] | None = None,
                ready_timeout: float = 90) -> Envoy:
    """Start an Envoy (retrying on a port clash) and wait for /ready. `wrapper`
    is put in front of the command line (callgrind_profile.py: valgrind), and then the
    process's pid is the wrapper's."""
    for attempt in range(4):
        ports = dict(zip(["admin", *port_names], free_ports(1 + len(port_names))))
        cfg_path = OUT / f"{label}.json"
        cfg_path.write_text(json.dumps(make_config(ports), indent=1))
        logfile = LOGS / f"{label}.log"
        # Every Envoy gets its own base id (shared-memory namespace), derived from
        # our pid so that parallel runs (e.g. the integration tests) never meet.
        _next_base_id[0] += 1
        base_id = (os.getpid() % 100_000) * 100 + _next_base_id[0]
        t0 = time.monotonic()
        proc = spawn([*(wrapper or []), str(envoy_bin), "-c", str(cfg_path),
                      "--concurrency", str(concurrency), "--base-id", str(base_id),
                      "--log-level", "warn"], logfile)
        env = Envoy(label, proc, ports["admin"], ports, logfile)
        deadline = t0 + ready_timeout
        while True:
            if proc.poll() is not None:
                text = logfile.read_text(errors="replace")
                stop(proc)
                if "Address already in use" in text or "address already in use" in text:
                    break  # retry with new ports
                raise HarnessError(f"Envoy '{label}' exited ({proc.returncode}) before /ready; "
                                   f"log {logfile}:\n{env.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ports['admin']}/ready",
                                            timeout=2) as r:
                    if r.status == 200:
                        env.startup_s = time.monotonic() - t0
                        env.startup_cpu_s = proc_cpu_us(proc.pid) / 1e6
                        return env
            except OSError:
                pass
            if time.monotonic() > deadline:
                stop(proc)
                raise HarnessError(f"Envoy '{label}' not ready in {ready_timeout:g} s; log {logfile}:\n"
                                   f"{env.log_tail()}")
            time.sleep(0.01)
    raise HarnessError(f"Envoy '{label}': no free ports after 4 attempts")


def proc_cpu_us(pid: int) -> float:
    """utime + stime of the whole process (all threads), in µs."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime is field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) * 1e6 / CLK_TCK


def proc_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise HarnessError(f"no VmRSS for pid {pid}")


def machine_busy_us() -> float:
    """All CPUs' non-idle time so far, in µs (to see other load on the machine)."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return (sum(vals[:8]) - idle) * 1e6 / CLK_TCK


# ---------------------------------------------------------------------------
# Load
# ---------------------------------------------------------------------------

def run_wrk(wrk: str, script: Path, port: int, seconds: float, connections: int) -> dict:
    args = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
            "--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{port}/"]
    res = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
    line = next((l for l in res.stdout.splitlines() if l.startswith("BENCHJSON ")), None)
    if res.returncode != 0 or line is None:
        raise HarnessError(f"wrk failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    out = json.loads(line[len("BENCHJSON "):])
    errors = sum(out["errors"].values())
    if out["requests"] == 0 or errors > out["requests"] * 0.001:
        raise HarnessError(f"wrk on :{port}: {errors} errors in {out['requests']} requests "
                           f"({out['errors']}); non-2xx means a listener is broken")
    return out


def sanity_check(envoy: Envoy, tokens: list[str]) -> dict[str, dict]:
    """Send the mix (and each rule's trigger) to every listener and check where it
    went, so that the numbers below measure listeners that route as described."""
    report = {}
    for name in LISTENERS:
        if name.startswith("variant-"):
            continue
        conn = http.client.HTTPConnection("127.0.0.1", envoy.ports[name], timeout=10)

        def served_by(headers):
            conn.request("GET", "/", headers=headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise HarnessError(f"{name}: status {resp.status} for {headers}")
            return resp.getheader("x-served-by")

        n = 1000
        v2 = sum(served_by(request_headers(i, tokens)) == "v2" for i in range(n))
        triggers = {"qa": request_headers(1, tokens), "beta": request_headers(2, tokens),
                    "staff": request_headers(3, tokens)}
        hit = {rule: served_by(h) for rule, h in triggers.items()}
        conn.close()
        share = v2 / n
        # Listeners without rules route these like any request: not checked.
        want_rules = {"native": set(), "native-hash": set(), "wasm-empty": set(),
                      "lua": {"qa", "beta"}, "canary-router": {"qa", "beta", "staff"},
                      "native-module": {"qa", "beta", "staff"},
                      "canary-router-large": {"qa", "beta", "staff"},
                      "canary-router-composed": {"qa", "beta", "staff"},
                      "canary-router-metadata": {"qa", "beta", "staff"},
                      "canary-router-grpc": {"qa", "beta", "staff"},
                      "canary-router-skipped": set(),
                      "canary-router-scoped": {"qa", "beta", "staff"},
                      "native-module-scoped": {"qa", "beta", "staff"},
                      "canary-router-shared": {"qa", "beta", "staff"},
                      "native-module-shared": {"qa", "beta", "staff"},
                      "native-module-no-claims": {"qa", "beta"}}.get(name, set())
        for rule in want_rules:
            if hit[rule] != "v2":
                raise HarnessError(f"{name}: the {rule} request went to {hit[rule]}, not v2")
        low, high = ((0.0, 0.0) if name in ("wasm-empty", "canary-router-skipped",
                                            "native-empty", "native-floor")
                     else (0.05, 0.20))
        if not low <= share <= high:
            raise HarnessError(f"{name}: {share:.1%} of the mix went to v2 "
                               f"(expected {low:.0%}..{high:.0%})")
        report[name] = {"v2_share": share, "rules_to_v2": sorted(want_rules)}
    return report


@dataclass
class Run:
    cpu_us_per_req: float
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    upstream_cpu_us_per_req: float
    wrk_cpu_us_per_req: float
    other_load_cores: float


def measure(envoy: Envoy, upstream: Envoy, wrk: str, script: Path, name: str,
            seconds: float) -> Run:
    key = f"http.{stat_prefix(name)}.downstream_rq_total"
    rq0 = envoy.counters("downstream_rq_total")[key]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0, up0, busy0, t0 = (proc_cpu_us(envoy.pid), proc_cpu_us(upstream.pid),
                           machine_busy_us(), time.monotonic())
    out = run_wrk(wrk, script, envoy.ports[name], seconds, CONNECTIONS)
    time.sleep(0.2)  # let Envoy finish closing wrk's connections
    cpu1, up1, busy1, t1 = (proc_cpu_us(envoy.pid), proc_cpu_us(upstream.pid),
                           machine_busy_us(), time.monotonic())
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    rq1 = envoy.counters("downstream_rq_total")[key]
    served = rq1 - rq0
    if served <= 0:
        raise HarnessError(f"{name}: {key} did not move")
    wrk_us = ((ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)) * 1e6
    ours = (cpu1 - cpu0) + (up1 - up0) + wrk_us
    return Run(
        cpu_us_per_req=(cpu1 - cpu0) / served,
        rps=out["requests"] / (out["duration_us"] / 1e6),
        p50_ms=out["p50_us"] / 1000,
        p99_ms=out["p99_us"] / 1000,
        requests=served,
        upstream_cpu_us_per_req=(up1 - up0) / served,
        wrk_cpu_us_per_req=wrk_us / served,
        other_load_cores=max(0.0, (busy1 - busy0) - ours) / ((t1 - t0) * 1e6),
    )


# ---------------------------------------------------------------------------
# The side measures: RSS at concurrency 2, config load time
# ---------------------------------------------------------------------------

def start_upstream(envoy_bin: Path) -> Envoy:
    return start_envoy("upstream", envoy_bin, upstream_config, ["v1", "v2"], 1)


def single_listener_envoy(label: str, name: str, envoy_bin: Path, up: Envoy,
                          filter_wasm: Path, empty_wasm: Path, concurrency: int) -> Envoy:
    return start_envoy(label, envoy_bin, lambda p: measured_config(
        [name], p, up.ports, filter_wasm, empty_wasm), [name], concurrency)


def rss_with(name: str, envoy_bin: Path, up: Envoy, wrk: str, script: Path,
             filter_wasm: Path, empty_wasm: Path) -> float:
    env = single_listener_envoy(f"rss-{name}", name, envoy_bin, up, filter_wasm, empty_wasm, 2)
    try:
        run_wrk(wrk, script, env.ports[name], 2, CONNECTIONS)  # warm both workers
        time.sleep(0.5)
        return proc_rss_mib(env.pid)
    finally:
        stop(env.proc)


def startup_cost(name: str, envoy_bin: Path, up: Envoy, filter_wasm: Path,
                 empty_wasm: Path, tries: int = 3) -> dict:
    """Envoy (--concurrency 1, this one listener) from spawn to /ready: its own CPU
    time (robust to other load) and the wall time; medians of `tries` starts."""
    cpu, wall = [], []
    for t in range(tries):
        env = single_listener_envoy(f"load-{name}-{t}", name, envoy_bin, up, filter_wasm,
                                    empty_wasm, 1)
        cpu.append(env.startup_cpu_s)
        wall.append(env.startup_s)
        stop(env.proc)
    return {"cpu_s": statistics.median(cpu), "wall_s": statistics.median(wall)}


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def machine() -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(),
            "os": platform.platform(terse=True)}


def envoy_version(envoy_bin: Path) -> str:
    res = subprocess.run([str(envoy_bin), "--version"], capture_output=True, text=True)
    text = (res.stdout + res.stderr).strip()
    return text.split("version:", 1)[-1].strip() if text else "unknown"


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    if ROUNDS < 1 or SECONDS < 1 or CONNECTIONS < 1:
        raise HarnessError("BENCH_ROUNDS, BENCH_SECONDS and BENCH_CONNECTIONS must be >= 1")

    wrk = ensure_wrk()
    envoy_bin = find_envoy()
    filter_wasm, empty_wasm = build_modules()
    mach = machine()
    version = envoy_version(envoy_bin)
    log(f"\nmachine: {mach['cpu']}, {mach['cores']} cores, kernel {mach['kernel']}")
    log(f"envoy:   {version}")
    log(f"load:    wrk, 1 thread, {CONNECTIONS} connections, {SECONDS:g} s per run, "
        f"{ROUNDS} round(s), listeners alternating; warm-up {WARMUP:g} s each")
    log(f"setup:   ONE measured Envoy (--concurrency 1, {len(LISTENERS)} listeners on loopback, each "
        "behind the same jwt_authn);\n"
        "         upstream v1/v2 = a SEPARATE Envoy process (direct_response, "
        "--concurrency 1), whose CPU is not counted")

    tokens = make_tokens()
    script = OUT / "mix.lua"
    make_wrk_script(tokens, script)
    paced_script = OUT / "mix-paced.lua"
    make_wrk_script(tokens, paced_script, PACE_MS)

    up = start_upstream(envoy_bin)
    envoy = start_envoy("measured", envoy_bin, lambda p: measured_config(
        LISTENERS, p, up.ports, filter_wasm, empty_wasm), LISTENERS, 1)
    log(f"\nmeasured Envoy pid {envoy.pid} (ready in {envoy.startup_s:.2f} s), "
        f"upstream Envoy pid {up.pid}")

    checks = sanity_check(envoy, tokens)
    log("routing check (share of the mix sent to v2; rule triggers sent to v2):")
    for name, c in checks.items():
        log(f"  {name:<22} {c['v2_share']:6.1%}  {', '.join(c['rules_to_v2']) or '(no rules)'}")

    if WARMUP > 0:
        log(f"\nwarm-up: {WARMUP:g} s per listener")
        for name in LISTENERS:
            run_wrk(wrk, script, envoy.ports[name], WARMUP, CONNECTIONS)

    runs: dict[str, list[Run]] = {n: [] for n in LISTENERS}
    for r in range(ROUNDS):
        order = LISTENERS[r % len(LISTENERS):] + LISTENERS[:r % len(LISTENERS)]
        for name in order:
            run = measure(envoy, up, wrk, script, name, SECONDS)
            runs[name].append(run)
            log(f"  round {r + 1}/{ROUNDS} {name:<22} {run.cpu_us_per_req:7.2f} µs/req "
                f"{run.rps:9.0f} req/s  p50 {run.p50_ms:.3f} ms  p99 {run.p99_ms:.3f} ms"
                f"  (other load {run.other_load_cores:.2f} cores)")
    paced: dict[str, list[dict]] = {n: [] for n in LISTENERS}
    if PACED_SECONDS > 0:
        log(f"\npaced latency: {CONNECTIONS} connections, {PACE_MS} ms between a connection's "
            f"requests, {PACED_SECONDS:g} s per listener and round")
        for r in range(ROUNDS):
            order = LISTENERS[r % len(LISTENERS):] + LISTENERS[:r % len(LISTENERS)]
            for name in order:
                out = run_wrk(wrk, paced_script, envoy.ports[name], PACED_SECONDS, CONNECTIONS)
                paced[name].append({"rps": out["requests"] / (out["duration_us"] / 1e6),
                                    "p50_ms": out["p50_us"] / 1000, "p99_ms": out["p99_us"] / 1000})
                log(f"  round {r + 1}/{ROUNDS} {name:<22} {paced[name][-1]['rps']:7.0f} req/s  "
                    f"p50 {paced[name][-1]['p50_ms']:.3f} ms  p99 {paced[name][-1]['p99_ms']:.3f} ms")
    stop(envoy.proc)

    log("\nside measures: RSS at --concurrency 2 after 2 s of load; startup to /ready")
    rss = {n: rss_with(n, envoy_bin, up, wrk, script, filter_wasm, empty_wasm)
           for n in ["native", "wasm-empty", "canary-router", "canary-router-large",
                     *(["native-module"] if NATIVE_MODULE else [])]
           if SIDE_MEASURES}
    load = {n: startup_cost(n, envoy_bin, up, filter_wasm, empty_wasm)
            for n in ["native", "canary-router", "canary-router-large"]
            if SIDE_MEASURES}
    stop(up.proc)

    # Host speed: on this kind of VM the CPU time a fixed piece of work takes
    # drifts by 20-30 % within seconds, which swamps differences of a few µs.
    # The upstream Envoy does the same work for every request of every listener,
    # at the same moments, so its CPU per request is a speed reference measured
    # alongside: the normalized value is the raw one x (median reference / this
    # run's reference). BENCH_NORMALIZE=0 uses the raw values for everything.
    ref = statistics.median(x.upstream_cpu_us_per_req for n in LISTENERS for x in runs[n])

    def norm(x: Run) -> float:
        return x.cpu_us_per_req * ref / x.upstream_cpu_us_per_req

    def value(x: Run) -> float:
        return norm(x) if NORMALIZE else x.cpu_us_per_req

    # Medians over rounds. The added CPU is paired: each listener minus native
    # in the same round, then the median, so slow drifts of the machine cancel.
    med = {n: {k: statistics.median(getattr(x, k) for x in runs[n])
               for k in Run.__dataclass_fields__} for n in LISTENERS}
    for n in LISTENERS:
        med[n]["norm_cpu_us_per_req"] = statistics.median(norm(x) for x in runs[n])
        med[n]["cpu"] = statistics.median(value(x) for x in runs[n])
    native = med["native"]

    def paired(n: str, other: str) -> list[tuple[float, float]]:
        return [(value(a), value(b)) for a, b in zip(runs[n], runs[other])]

    added_rounds = {n: [a - b for a, b in paired(n, "native")] for n in LISTENERS}
    added = {n: statistics.median(added_rounds[n]) for n in LISTENERS}
    empty_added = added["wasm-empty"]

    def ratio_interval(n: str, other: str, iters: int = 4000) -> str:
        """added(n) / added(other), medians over the rounds, with its 90 % interval
        from resampling whole rounds (a round measures every listener at nearly the
        same moment, so rounds are the independent units): a target on a ratio is
        shown only when the whole interval is on one side of it."""
        rng = random.Random(1)
        k = len(added_rounds[n])
        samples = []
        for _ in range(iters):
            pick = [rng.randrange(k) for _ in range(k)]
            b = statistics.median(added_rounds[other][i] for i in pick)
            if b > 0:
                samples.append(statistics.median(added_rounds[n][i] for i in pick) / b)
        samples.sort()
        if k < 5 or len(samples) < iters // 2:
            return f"{added[n] / added[other]:.2f} x (too few rounds for an interval)"
        low, high = samples[int(0.05 * len(samples))], samples[int(0.95 * len(samples)) - 1]
        return (f"{added[n] / added[other]:.2f} x, 90 % interval {low:.2f}..{high:.2f} "
                f"over {k} rounds")

    rows = {}
    for n in LISTENERS:
        rows[n] = {
            **{k: round(v, 4) for k, v in med[n].items() if k != "cpu"},
            "added_cpu_us": round(added[n], 3),
            "added_cpu_us_rounds": [round(v, 3) for v in added_rounds[n]],
            "added_vs_wasm_empty": (round(added[n] / empty_added, 3)
                                    if n != "native" and empty_added > 0 else None),
            "cpu_vs_native": round(med[n]["cpu"] / native["cpu"], 3),
            "p99_vs_native": round(med[n]["p99_ms"] / native["p99_ms"], 3),
            "paced": ({k: round(statistics.median(x[k] for x in paced[n]), 4)
                       for k in ("rps", "p50_ms", "p99_ms")} if paced[n] else None),
            "rounds": [{**vars(x), "norm_cpu_us_per_req": round(norm(x), 3)} for x in runs[n]],
        }

    basis = "normalized" if NORMALIZE else "raw"
    wasm_kib = filter_wasm.stat().st_size / 1024
    if not (FULL and SIDE_MEASURES):
        # A tuning run: the table of the listeners measured, no targets.
        log(f"\n{'listener':<22} {'norm µs':>8} {'added µs':>9} {'÷ empty':>8}  rounds")
        for n in LISTENERS:
            log(f"{n:<22} {med[n]['norm_cpu_us_per_req']:>8.1f} {added[n]:>+9.1f} "
                f"{fmt(rows[n]['added_vs_wasm_empty'], '.2f'):>8}  "
                + " ".join(f"{v:+.1f}" for v in added_rounds[n]))
        if "native-module" in LISTENERS:
            for other in ("wasm-empty", "lua"):
                if other in LISTENERS:
                    log(f"native-module added ÷ {other} added: "
                        f"{ratio_interval('native-module', other)}")
        log("(a partial run: BENCH_LISTENERS or BENCH_SIDE=0; no targets, no latest.json)")
        return 0
    rss_growth = rss["canary-router"] - rss["native"]
    cr, large = med["canary-router"], med["canary-router-large"]
    large_delta = statistics.median(a / b - 1 for a, b in paired("canary-router-large",
                                                               "canary-router"))
    targets = [
        (f"canary-router added CPU <= 1.25 x wasm-empty's ({basis})",
         added["canary-router"] <= 1.25 * empty_added,
         f"{added['canary-router']:.2f} µs vs 1.25 x {empty_added:.2f} = {1.25 * empty_added:.2f} µs"),
        (f"canary-router added CPU < lua's ({basis})",
         added["canary-router"] < added["lua"],
         f"{added['canary-router']:.2f} µs vs {added['lua']:.2f} µs"),
        (f"canary-router-large CPU/request within 10 % of canary-router ({basis})",
         abs(large_delta) <= 0.10,
         f"{large['cpu']:.2f} vs {cr['cpu']:.2f} µs "
         f"({large_delta:+.1%}, median of the rounds' ratios)"),
        ("canary-router p99 within 10 % of native, full load",
         cr["p99_ms"] <= 1.10 * native["p99_ms"],
         f"{cr['p99_ms']:.3f} vs {native['p99_ms']:.3f} ms "
         f"({cr['p99_ms'] / native['p99_ms'] - 1:+.1%})"),
        *([("canary-router p99 within 10 % of native, paced load",
            rows["canary-router"]["paced"]["p99_ms"] <= 1.10 * rows["native"]["paced"]["p99_ms"],
            f"{rows['canary-router']['paced']['p99_ms']:.3f} vs "
            f"{rows['native']['paced']['p99_ms']:.3f} ms "
            f"({rows['canary-router']['paced']['p99_ms'] / rows['native']['paced']['p99_ms'] - 1:+.1%}"
            f", {rows['native']['paced']['rps']:.0f} req/s)")]
          if PACED_SECONDS > 0 else []),
        (".wasm < 250 KiB", wasm_kib < 250, f"{wasm_kib:.1f} KiB"),
        ("RSS growth with the filter < 10 MiB (concurrency 2)", rss_growth < 10,
         f"{rss['canary-router']:.1f} - {rss['native']:.1f} = {rss_growth:.1f} MiB"),
    ]
    if NATIVE_MODULE:
        # The dynamic module's targets: CPU per request against what a Proxy-Wasm
        # filter costs doing nothing and against Lua, its memory, its paced p99.
        nm_added, nm_rss = added["native-module"], rss["native-module"] - rss["native"]
        targets += [
            (f"native-module added CPU <= 1.0 x wasm-empty's ({basis})",
             nm_added <= empty_added,
             f"{nm_added:.2f} µs vs {empty_added:.2f} µs "
             f"({ratio_interval('native-module', 'wasm-empty')})"),
            (f"native-module added CPU <= 0.6 x lua's ({basis})",
             nm_added <= 0.6 * added["lua"],
             f"{nm_added:.2f} µs vs 0.6 x {added['lua']:.2f} = {0.6 * added['lua']:.2f} µs "
             f"({ratio_interval('native-module', 'lua')})"),
            ("native-module RSS growth <= 2 MiB (concurrency 2)", nm_rss <= 2,
             f"{rss['native-module']:.1f} - {rss['native']:.1f} = {nm_rss:+.1f} MiB"),
            *([("native-module p99 within 10 % of native, paced load",
                rows["native-module"]["paced"]["p99_ms"]
                <= 1.10 * rows["native"]["paced"]["p99_ms"],
                f"{rows['native-module']['paced']['p99_ms']:.3f} vs "
                f"{rows['native']['paced']['p99_ms']:.3f} ms "
                f"({rows['native-module']['paced']['p99_ms'] / rows['native']['paced']['p99_ms'] - 1:+.1%})")]
              if PACED_SECONDS > 0 else []),
        ]

    log(f"\nEnvoy CPU per request (median of {ROUNDS} round(s); {mach['cpu']}, "
        f"{mach['cores']} cores, kernel {mach['kernel']}); added and ratios from the "
        f"{basis} values")
    head = (f"{'listener':<22} {'raw µs':>7} {'norm µs':>7} {'added µs':>8} "
            f"{'(rounds min..max)':>17} {'÷ empty':>7} {'req/s':>6} {'p50 ms':>6} "
            f"{'p99 ms':>6} {'p99 ÷ native':>12}")
    log(head)
    log("-" * len(head))
    for n in LISTENERS:
        row = rows[n]
        spread = ("" if n == "native" else
                  f"{min(added_rounds[n]):+.1f}..{max(added_rounds[n]):+.1f}")
        log(f"{n:<22} {row['cpu_us_per_req']:>7.1f} {row['norm_cpu_us_per_req']:>7.1f} "
            f"{fmt(None if n == 'native' else row['added_cpu_us'], '+.1f'):>8} {spread:>17} "
            f"{fmt(row['added_vs_wasm_empty'], '.2f'):>7} {row['rps']:>6.0f} "
            f"{row['p50_ms']:>6.3f} {row['p99_ms']:>6.3f} {row['p99_vs_native']:>12.2f}")
    log("raw µs: the measured Envoy's CPU time / requests it served on that listener;\n"
        f"norm µs: the same, corrected for host speed by the upstream Envoy's CPU per request "
        f"(reference {ref:.1f} µs);\n"
        "added µs: listener minus native in the same round (median; min..max over the rounds"
        " shows the noise);\n÷ empty: added / wasm-empty's added; req/s, p50, p99: wrk's, "
        "under full load (median of rounds)")
    if PACED_SECONDS > 0:
        log(f"\nlatency at a paced load ({CONNECTIONS} connections, {PACE_MS} ms pause between "
            f"a connection's requests; median of {ROUNDS} round(s))")
        log(f"{'listener':<22} {'req/s':>6} {'p50 ms':>7} {'p99 ms':>7} {'p99 ÷ native':>12}")
        for n in LISTENERS:
            pc = rows[n]["paced"]
            log(f"{n:<22} {pc['rps']:>6.0f} {pc['p50_ms']:>7.3f} {pc['p99_ms']:>7.3f} "
                f"{pc['p99_ms'] / rows['native']['paced']['p99_ms']:>12.2f}")
    log(f"\n.wasm size: {filter_wasm.stat().st_size} bytes ({wasm_kib:.1f} KiB), "
        f"the filter as `make wasm` built it (wasm-empty: {empty_wasm.stat().st_size} bytes)")
    log(f"Envoy RSS, --concurrency 2, after load: native {rss['native']:.1f} MiB; "
        + ", ".join(f"{n} {rss[n]:.1f} MiB ({rss[n] - rss['native']:+.1f})"
                    for n in ["wasm-empty", "canary-router", "canary-router-large",
                              *(["native-module"] if NATIVE_MODULE else [])]))
    log("config load, Envoy spawn to /ready with one listener (median of 3), "
        "Envoy CPU time / wall time:\n  "
        + ", ".join(f"{n} {load[n]['cpu_s']:.2f} / {load[n]['wall_s']:.2f} s"
                    for n in ["native", "canary-router", "canary-router-large"])
        + f"\n  the large config costs "
        f"{load['canary-router-large']['cpu_s'] - load['canary-router']['cpu_s']:+.2f} s of CPU "
        f"over the typical one (configured twice: main thread + 1 worker)")
    other = statistics.median(x.other_load_cores for n in LISTENERS for x in runs[n])
    log(f"other load on the machine during the runs (median): {other:.2f} cores"
        + ("  <- WARNING: the machine was busy; numbers are noisy, re-run on a quiet machine"
           if other > 0.25 else ""))

    if NATIVE_MODULE:
        side = ["native-module", "canary-router", "wasm-empty", "lua", "native"]
        log("\nside by side, the filter as a dynamic module and as Wasm (added over native; "
            "RSS growth at concurrency 2; p99 at the paced load):")
        log(f"{'listener':<22} {'added µs':>9} {'÷ empty':>8} {'÷ lua':>6} {'RSS MiB':>8} "
            f"{'paced p99 ms':>12} {'÷ native':>9}")
        for n in side:
            pc = rows[n]["paced"]
            log(f"{n:<22} {fmt(None if n == 'native' else added[n], '+.1f'):>9} "
                f"{fmt(rows[n]['added_vs_wasm_empty'], '.2f'):>8} "
                f"{fmt(None if n == 'native' else added[n] / added['lua'], '.2f'):>6} "
                f"{fmt(rss[n] - rss['native'] if n in rss else None, '+.1f'):>8} "
                f"{fmt(pc and pc['p99_ms'], '.3f'):>12} "
                f"{fmt(pc and pc['p99_ms'] / rows['native']['paced']['p99_ms'], '.2f'):>9}")
    log("\ntargets:")
    for label, ok, detail in targets:
        log(f"  {'PASS' if ok else 'FAIL'}  {label}: {detail}")

    result = {
        "machine": mach,
        "envoy": version,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": {"rounds": ROUNDS, "seconds": SECONDS, "connections": CONNECTIONS,
                     "paced_seconds": PACED_SECONDS, "pace_ms": PACE_MS,
                     "warmup_seconds": WARMUP, "wrk_threads": 1, "user_ids": USER_IDS,
                     "tokens": TOKENS,
                     "measured": f"one Envoy, --concurrency 1, {len(LISTENERS)} listeners behind the same jwt_authn",
                     "upstream": "a separate Envoy process (direct_response, --concurrency 1); its CPU is not counted",
                     "cpu_per_request": "delta of the measured Envoy's utime+stime (/proc/<pid>/stat) / delta of http.<stat_prefix>.downstream_rq_total",
                     "normalized": "cpu_per_request x (median over all runs of the upstream Envoy's CPU per request / this run's)",
                     "added_and_targets_from": basis,
                     "upstream_reference_us_per_req": round(ref, 3),
                     "config_load": "Envoy's CPU time and wall time from spawn to admin /ready with one listener (--concurrency 1), median of 3"},
        "routing_check": checks,
        "listeners": rows,
        "wasm_bytes": filter_wasm.stat().st_size,
        "wasm_empty_bytes": empty_wasm.stat().st_size,
        "rss_mib_concurrency_2": {k: round(v, 2) for k, v in rss.items()},
        "startup_to_ready": {k: {m: round(x, 3) for m, x in v.items()} for k, v in load.items()},
        "other_load_cores_median": round(other, 3),
        "targets": [{"target": l, "pass": ok, "detail": d} for l, ok, d in targets],
    }
    (OUT / "latest.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    log(f"\nwrote {(OUT / 'latest.json').relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    # Ctrl-C must always reach us (a shell may start us with SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGHUP, _on_sigterm)
    try:
        code = main()
    except HarnessError as e:
        print(f"\nbench: harness error: {e}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("\nbench: interrupted", file=sys.stderr)
        code = 130
    finally:
        stop_all()
    sys.exit(code)
