#!/usr/bin/env python3
"""`make bench-profile`: Envoy's work per request per listener in instructions,
counted by valgrind's callgrind, and where the filter's instructions go.

CPU time on the benchmark VMs drifts by 10-28 % between runs, which hides the
few-µs differences that `make bench` compares. Instruction counts do not
depend on the machine's load: the same requests to the same build give the same
counts (three runs agreed within 0.07 %), so they resolve the ratios between
listeners. BENCHMARKS.md ("Instruction counts") explains how to read them.

What it does:
- builds the filter and the empty module (run.py's build_modules);
- writes a copy of the stripped Envoy with a symbol table (elfsyms.py: functions
  from the unwind tables, virtual functions from the RTTI, the Proxy-Wasm host
  functions by name); the code is byte-for-byte the same;
- starts the upstream Envoy natively and the measured Envoy (run.py's six
  listeners plus `native-no-jwt`, the native split without jwt_authn, which
  prices jwt_authn; plus BENCH_VARIANTS as in run.py) under `valgrind
  --tool=callgrind`, with instrumentation switched on once it is ready;
- per listener, on one keep-alive connection from a sequential HTTP/1.1 client:
  PROFILE_WARMUP requests of the mix (not counted), `callgrind_control --zero`,
  PROFILE_REQUESTS requests of the mix (the same request numbers for every
  listener), `callgrind_control --dump`; then an idle window, whose rate of
  instructions per second is subtracted from each window by its wall time;
- parses each dump: instructions per request; for the Wasm listeners the split
  into proxy-wasm/V8's calls into the VM, guest code, host calls and other Envoy
  work, and each host call's calls, instructions and callees;
- prints the tables and writes target/bench/profile.json; the dumps stay in
  target/bench/profile/ for callgrind_annotate / kcachegrind.

Environment: PROFILE_REQUESTS (2000), PROFILE_WARMUP (300), PROFILE_LISTENERS
(comma list; default all), PROFILE_SIMULATE (1: simulated cache misses,
mispredicted branches and estimated cycles too), BENCH_VARIANTS, ENVOY_BIN, WASM,
WASM_OPT_FLAGS (as for run.py), BENCH_SKIP_MAKE_WASM.
Exit status: 0 when it ran, 1 when the harness failed (a build, an Envoy or
valgrind that would not start, a listener that routes wrongly).

Python 3.11 standard library only (plus valgrind on PATH).
"""

from __future__ import annotations

import functools
import glob
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import elfsyms  # noqa: E402
import run  # noqa: E402
from run import HarnessError, log  # noqa: E402

REQUESTS = int(os.environ.get("PROFILE_REQUESTS", "2000"))
WARMUP = int(os.environ.get("PROFILE_WARMUP", "300"))
IDLE_SECONDS = 10.0
# PROFILE_SIMULATE=1: callgrind also simulates the caches and the branch
# predictor (twice as slow), and the report adds the misses per request and an
# estimate of cycles from them (CYCLE_MODEL): what instruction counts alone miss
# when two listeners retire instructions at different rates.
SIMULATE = os.environ.get("PROFILE_SIMULATE", "0") == "1"
# Cycles per event: a base of 0.4 cycles per instruction (a few per cycle when
# nothing stalls), an L1 miss served by L2 about 12 cycles, a mispredicted
# branch about 17. Round figures for a recent x86 server core, not measured
# here (the VMs expose no cycle counter): the estimate ranks listeners, it is
# not their time.
CYCLE_MODEL = {"Ir": 0.4, "I1mr": 12, "D1mr": 12, "Bcm": 17, "Bim": 17}
ALL = ["native-no-jwt", *run.ALL_LISTENERS]
# examples/wasm_floor.rs, the least a header-routing Wasm filter does: measured on
# request (PROFILE_LISTENERS=wasm-floor,wasm-floor-counted), not by default,
# because V8 reserves gigabytes of address space per VM and valgrind runs out
# of it at about ten VMs (Envoy logs "Failed to create new Wasm instance").
# The Envoy dynamic module (run.py's native-module listener) is in the default set
# when `make native` has built it (make bench-profile does): it starts no VM.
ALL += [n for n in run.OPTIONAL_LISTENERS if n in run.DEFAULT_OPTIONAL]
EXTRA = ["wasm-floor", "wasm-floor-counted",
         *[n for n in run.OPTIONAL_LISTENERS if n not in ALL]]
LISTENERS = [n for n in ALL + EXTRA if n in ("native", "wasm-empty") or n in os.environ.get(
    "PROFILE_LISTENERS", ",".join(ALL)).split(",")]
# BENCH_VARIANTS=a=/tmp/a.wasm,... (as for run.py): other builds of the filter with the
# typical config, as listeners variant-a, ...: an A/B of a change in instructions.
LISTENERS += [n for n in run.LISTENERS if n.startswith("variant-")]


@functools.cache
def is_wasm_listener(name: str) -> bool:
    """Whether the listener runs a Wasm filter (from run.py's config for it)."""
    if name == "native-no-jwt":
        return False
    filters, _ = run.listener_filters(name, Path("filter.wasm"), Path("empty.wasm"))
    return any(f["name"] == "envoy.filters.http.wasm" for f in filters)
PROF = run.OUT / "profile"
RESULT = run.OUT / "profile.json"


# ---------------------------------------------------------------------------
# The measured Envoy's configuration: run.py's, plus the listener without jwt_authn
# ---------------------------------------------------------------------------

def profiled_config(ports: dict, up: dict, filter_wasm: Path, empty_wasm: Path) -> dict:
    listeners = []
    for name in LISTENERS:
        if name == "native-no-jwt":
            lst = run.listener("native", ports[name], filter_wasm, empty_wasm)
            lst["name"] = name
            hcm = lst["filter_chains"][0]["filters"][0]["typed_config"]
            hcm["stat_prefix"] = run.stat_prefix(name)
            hcm["http_filters"] = [f for f in hcm["http_filters"]
                                   if f["name"] != "envoy.filters.http.jwt_authn"]
        else:
            lst = run.listener(name, ports[name], filter_wasm, empty_wasm)
        listeners.append(lst)
    return {
        "admin": run.admin(ports["admin"]),
        # No periodic stats flush (a timer that walks every stat every 5 s): only
        # the requests should run between a zero and a dump.
        "stats_flush_on_admin": True,
        "static_resources": {
            "listeners": listeners,
            "clusters": [run.cluster("v1", up["v1"]), run.cluster("v2", up["v2"])],
        },
    }


# ---------------------------------------------------------------------------
# valgrind
# ---------------------------------------------------------------------------

def ensure_valgrind() -> None:
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            raise HarnessError(f"{tool} is missing: `apt-get install valgrind` "
                               "(make bench-profile does it)")


def callgrind_control(pid: int, *args: str) -> str:
    res = subprocess.run(["callgrind_control", f"--vgdb-prefix={PROF / 'vgdb'}", *args,
                          str(pid)], capture_output=True, text=True, timeout=300)
    if res.returncode != 0 or "Error" in res.stdout:
        raise HarnessError(f"callgrind_control {' '.join(args)} {pid} failed "
                           f"({res.returncode}):\n{res.stdout}{res.stderr}")
    return res.stdout


def new_dump(before: set[str], pid: int, deadline_s: float = 300) -> Path:
    """The dump file that appeared since `before` (callgrind writes it itself)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline_s:
        now = set(glob.glob(str(PROF / f"callgrind.{pid}.out.*")))
        fresh = sorted(now - before, key=lambda p: int(p.rsplit(".", 1)[1]))
        if fresh:
            path = Path(fresh[-1])
            # callgrind writes "totals:" last
            if path.read_bytes().rstrip().splitlines()[-1].startswith(b"totals:"):
                return path
        time.sleep(0.2)
    raise HarnessError("callgrind wrote no dump")


# ---------------------------------------------------------------------------
# Parsing a callgrind dump (format: valgrind's docs, "Callgrind Format Specification")
# ---------------------------------------------------------------------------

class Profile:
    """Self and inclusive Ir per function; calls between functions."""

    def __init__(self, path: Path):
        self.path = path
        self.total = 0
        self.events: list[str] = ["Ir"]
        self.totals: list[int] = []  # every event's total, in `events` order
        self.idle = 0.0  # the idle Envoy's instructions during this window (set later)
        self.self_ir: dict[tuple[str, str], int] = defaultdict(int)
        # (caller, callee) -> [calls, inclusive Ir of those calls]
        self.calls: dict[tuple[tuple[str, str], tuple[str, str]], list[int]] = {}
        self._parse()

    def _parse(self) -> None:
        names: dict[str, dict[str, str]] = {"ob": {}, "fl": {}, "fn": {}}

        def name(kind: str, value: str) -> str:
            m = re.match(r"\((\d+)\)(?: (.*))?$", value)
            if not m:
                return value
            if m.group(2) is not None:
                names[kind][m.group(1)] = m.group(2)
            return names[kind][m.group(1)]

        ob = fn = cob = cfn = None
        pending_calls = None
        events = None
        with open(self.path, errors="replace") as f:
            for line in f:
                line = line.rstrip("\n")
                if not line:
                    continue
                c = line[0]
                if c.isdigit() or c in "+-*":
                    parts = line.split()
                    ir = int(parts[1]) if len(parts) > 1 else 0
                    if pending_calls is not None:
                        key = ((ob, fn), (cob or ob, cfn))
                        entry = self.calls.setdefault(key, [0, 0])
                        entry[0] += pending_calls
                        entry[1] += ir
                        pending_calls = None
                        cob = None
                    else:
                        self.self_ir[(ob, fn)] += ir
                    continue
                key, _, value = line.partition("=")
                if key == "ob":
                    ob = name("ob", value)
                elif key == "fn":
                    fn = name("fn", value)
                    cob = None
                elif key in ("fl", "fi", "fe"):
                    name("fl", value)
                elif key == "cob":
                    cob = name("ob", value)
                elif key in ("cfi", "cfl"):
                    name("fl", value)
                elif key == "cfn":
                    cfn = name("fn", value)
                elif key == "calls":
                    pending_calls = int(value.split()[0])
                elif line.startswith("events:"):
                    events = line.split()[1:]
                elif line.startswith(("totals:", "summary:")):
                    self.totals = [int(x) for x in line.split()[1:]]
                    self.total = self.totals[0]
        if events:
            self.events = events
        if events and events[0] != "Ir":
            raise HarnessError(f"{self.path}: unexpected events {events}")
        if not self.total:
            self.total = sum(self.self_ir.values())

    def inclusive(self, fn: tuple[str, str]) -> int:
        return self.self_ir.get(fn, 0) + sum(
            ir for (a, b), (_, ir) in self.calls.items() if a == fn and b != fn)

    def calls_to(self, fn: tuple[str, str]) -> tuple[int, int]:
        """(calls, inclusive Ir) of all calls into fn from other functions."""
        n = ir = 0
        for (a, b), (c, i) in self.calls.items():
            if b == fn and a != fn:
                n += c
                ir += i
        return n, ir

    def find(self, fn_name: str) -> list[tuple[str, str]]:
        return [k for k in set(self.self_ir) | {b for _, b in self.calls} if k[1] == fn_name]


def is_jit(fn: tuple[str, str]) -> bool:
    """Code in anonymous memory, which callgrind names by address: what V8
    generated (Wasm functions compiled from the module, call wrappers), V8's
    builtins if V8 copied them next to its code space (see classify_jit), and on
    the lua listener LuaJIT's traces."""
    return fn[1].startswith("0x")


def base_name(name: str) -> str:
    """callgrind marks a function entered again inside itself as name'2, name'3..."""
    return name.split("'", 1)[0]


def cost_class(fn: tuple[str, str], builtins: set[str]) -> str:
    ob, name = fn
    name = base_name(name)
    if is_jit(fn):
        return "v8_builtins" if name in builtins else "generated_code"
    if name == "v8::embedded_builtins":
        return "v8_builtins"
    if name.startswith("tcmalloc::"):
        return "tcmalloc"
    base = Path(ob or "").name
    if base.startswith("libc.so") or base.startswith("libc-"):
        return "libc"
    if base.startswith("ld-linux"):
        return "ld.so"
    if ob in (None, "???") or base == "envoy":
        return "envoy"
    return base


def classify_jit(pid: int, names: set[str], envoy: Path, blob: tuple[int, int]) -> set[str]:
    """The anonymous-memory functions whose code is a copy of V8's embedded builtins
    (V8 may copy the builtins blob next to its code space so that generated code
    reaches them with short calls): their first bytes, read from the live process,
    are found in the blob in the binary."""
    start, length = blob
    if not length:
        return set()
    elf = elfsyms.Elf(envoy)
    try:
        tx = elf.sections[".text"]
        off = start - tx.addr + tx.offset
        data = elf.m[off:off + length]
    finally:
        elf.close()
    found = set()
    try:
        mem = open(f"/proc/{pid}/mem", "rb")
    except OSError:
        return found
    with mem:
        for name in names:
            try:
                mem.seek(int(name, 16))
                head = mem.read(64)
            except (OSError, ValueError):
                continue
            if len(head) == 64 and data.find(head) >= 0:
                found.add(name)
    return found


# ---------------------------------------------------------------------------
# Load: a sequential keep-alive HTTP/1.1 client
# ---------------------------------------------------------------------------

def send(conn: http.client.HTTPConnection, first: int, count: int, tokens: list[str],
         name: str) -> int:
    """Requests first..first+count-1 of the mix; returns how many went to v2."""
    v2 = 0
    for i in range(first, first + count):
        headers = run.request_headers(i, tokens)
        if "cohort" in name:
            headers["baggage"] = run.cohort_baggage(i)
        if name.endswith("-grpc"):
            headers["content-type"] = "application/grpc"
        conn.request("GET", "/", headers=headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise HarnessError(f"{name}: status {resp.status} for request {i}")
        v2 += resp.getheader("x-served-by") == "v2"
    return v2


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def main() -> int:
    t_start = time.monotonic()
    run.OUT.mkdir(parents=True, exist_ok=True)
    run.LOGS.mkdir(parents=True, exist_ok=True)
    if PROF.exists():
        shutil.rmtree(PROF)
    PROF.mkdir(parents=True)
    if REQUESTS < 1 or WARMUP < 0:
        raise HarnessError("PROFILE_REQUESTS must be >= 1 and PROFILE_WARMUP >= 0")
    ensure_valgrind()
    envoy_bin = run.find_envoy()
    run.LISTENERS = LISTENERS  # what build_modules builds besides the filter
    filter_wasm, empty_wasm = run.build_modules()
    version = run.envoy_version(envoy_bin)
    valgrind_version = subprocess.run(["valgrind", "--version"], capture_output=True,
                                      text=True).stdout.strip()

    imports = sorted({n for w in (filter_wasm, empty_wasm) for n in elfsyms.wasm_imports(w)})
    symbolized = PROF / "envoy"
    syms = elfsyms.write_symbolized(envoy_bin, symbolized, imports)
    hosts = syms["host_functions"]
    missing = [n for n in imports if n not in hosts]
    log(f"symbols: {syms['functions']} functions from the unwind tables, "
        f"{len(hosts)} of {len(imports)} imported host functions named"
        + (f" (not found: {', '.join(missing)})" if missing else ""))

    tokens = run.make_tokens()
    up = run.start_upstream(envoy_bin)
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                # V8 writes and rewrites machine code in anonymous memory
                "--smc-check=all-non-file",
                f"--callgrind-out-file={PROF}/callgrind.%p.out",
                f"--vgdb-prefix={PROF / 'vgdb'}",
                *(["--cache-sim=yes", "--branch-sim=yes"] if SIMULATE else []),
                ]
    log(f"\nstarting the measured Envoy under callgrind ({len(LISTENERS)} listeners; "
        "V8 compiles the modules under valgrind: a minute or two)")
    t0 = time.monotonic()
    envoy = run.start_envoy("profiled", symbolized, lambda p: profiled_config(
        p, up.ports, filter_wasm, empty_wasm), LISTENERS, 1, wrapper=valgrind,
        ready_timeout=900)
    pid = envoy.pid
    log(f"ready in {time.monotonic() - t0:.0f} s (pid {pid}); instrumentation on")
    callgrind_control(pid, "--instr=on")

    rows = {}
    dumps = {}
    for name in LISTENERS:
        t1 = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", envoy.ports[name], timeout=300)
        send(conn, 0, WARMUP, tokens, name)
        before = set(glob.glob(str(PROF / f"callgrind.{pid}.out.*")))
        callgrind_control(pid, "--zero")
        t_zero = time.monotonic()
        v2 = send(conn, WARMUP, REQUESTS, tokens, name)
        window_s = time.monotonic() - t_zero
        callgrind_control(pid, f"--dump={name}")
        conn.close()
        dump = new_dump(before, pid)
        final = PROF / f"{name}.callgrind.out"
        dump.rename(final)
        dumps[name] = final
        share = v2 / REQUESTS
        # wasm-empty and native-empty decide nothing, native-floor writes v1; a
        # skipped request passes through untouched (no routing header: v1).
        low, high = ((0.0, 0.0) if name.startswith("wasm-") or name.endswith("-skipped")
                     or name in ("native-empty", "native-floor")
                     else (0.05, 0.20))
        if not name.startswith("variant-") and not low <= share <= high:
            vm_failed = "Failed to create new Wasm instance" in envoy.log_tail(10_000)
            raise HarnessError(f"{name}: {share:.1%} of the mix went to v2 "
                               f"(expected {low:.0%}..{high:.0%})"
                               + ("; a Wasm VM failed to start (too many listeners for "
                                  "valgrind's address space? use PROFILE_LISTENERS)"
                                  if vm_failed else ""))
        rows[name] = {"v2_share": round(share, 4), "window_seconds": round(window_s, 2)}
        log(f"  {name:<20} {WARMUP} + {REQUESTS} requests in {time.monotonic() - t1:5.0f} s"
            f"  ({share:.1%} to v2)")

    # An idle window: what Envoy does with no requests (timers, the filter's
    # on_tick, V8's background threads), in instructions per second. It also runs
    # during each listener's window, whose wall time depends on the machine's
    # load, so it is subtracted: idle rate x the window's wall time.
    before = set(glob.glob(str(PROF / f"callgrind.{pid}.out.*")))
    callgrind_control(pid, "--zero")
    t_zero = time.monotonic()
    time.sleep(IDLE_SECONDS)
    idle_s = time.monotonic() - t_zero
    callgrind_control(pid, "--dump=idle")
    idle_final = PROF / "idle.callgrind.out"
    new_dump(before, pid).rename(idle_final)
    idle_profile = Profile(idle_final)
    idle_ir_per_s = idle_profile.total / idle_s

    # Parse while the process lives: the generated code's bytes are read from it.
    profiles = {n: Profile(p) for n, p in dumps.items()}
    jit_names = {base_name(f[1]) for p in profiles.values() for f in p.self_ir if is_jit(f)}
    builtins = classify_jit(pid, jit_names, symbolized, tuple(syms["v8_builtins"]))
    run.stop(envoy.proc)
    run.stop(up.proc)
    for leftover in glob.glob(str(PROF / f"callgrind.{pid}.out*")):
        os.remove(leftover)  # the dump at exit: only the shutdown

    for name, prof in profiles.items():
        prof.idle = idle_ir_per_s * rows[name]["window_seconds"]
    report = analyse(profiles, hosts, builtins, rows, symbolized)
    report.update({
        "envoy": version,
        "valgrind": valgrind_version,
        "machine": run.machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": {
            "requests_per_listener": REQUESTS, "warmup_requests": WARMUP,
            "client": "one keep-alive HTTP/1.1 connection, sequential requests "
                      "(Python http.client), the same request numbers for every listener",
            "counted": "instructions (callgrind Ir) of all threads of the measured Envoy "
                       "between callgrind_control --zero and --dump, minus the idle "
                       "Envoy's instructions per second x the window's wall time, "
                       "divided by the requests sent",
            "valgrind": " ".join(valgrind),
            "wasm_bytes": filter_wasm.stat().st_size,
            "wasm_empty_bytes": empty_wasm.stat().st_size,
        },
        "idle_ir_per_second": round(idle_ir_per_s),
        "symbols": {"functions_from_unwind_tables": syms["functions"],
                    "v8_builtins_blob": [hex(syms["v8_builtins"][0]), syms["v8_builtins"][1]],
                    "jit_functions_found_in_builtins_blob": len(builtins),
                    "jit_functions": len(jit_names),
                    "host_functions": {n: {k: hex(v) for k, v in h.items()}
                                       for n, h in hosts.items()}},
        "wall_seconds": round(time.monotonic() - t_start),
    })
    report["targets"] = native_module_targets(report["listeners"])
    if SIMULATE:
        report["simulated"] = simulated(profiles, rows, idle_profile, idle_s)
    print_report(report)
    RESULT.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    log(f"\nwrote {RESULT.relative_to(run.ROOT)} and the dumps in "
        f"{PROF.relative_to(run.ROOT)}/ (callgrind_annotate --inclusive=yes FILE); "
        f"{report['wall_seconds']} s in all")
    return 0


# ---------------------------------------------------------------------------
# Analysis
# ---------------------------------------------------------------------------

def per_request(x: float) -> int:
    return round(x / REQUESTS)


def vm_split(prof: Profile, host_names: set[str]) -> dict:
    """Split a listener's work at the Wasm VM's boundaries, from the call graph:
    - into the VM: calls from Envoy's code into generated code, not nested inside
      a host call (callgrind names the nested ones name'2);
    - out of the VM: calls from generated code into Envoy's code; a callee whose
      call tree reaches a host function is V8's host-call path (the C API
      callback, proxy-wasm's argument conversion, then the host function), the
      others are V8 runtime helpers that generated code calls.
    Host functions: calls into each named callback and their inclusive cost."""
    children: dict[tuple[str, str], set] = defaultdict(set)
    for (a, b) in prof.calls:
        children[a].add(b)

    def reaches_host(fn, depth=6, seen=None):
        seen = seen if seen is not None else set()
        if base_name(fn[1]) in host_names:
            return True
        if depth == 0 or fn in seen:
            return False
        seen.add(fn)
        return any(reaches_host(c, depth - 1, seen) for c in children[fn] if not is_jit(c))

    into_vm = [0, 0]
    host_path = [0, 0]
    runtime = [0, 0]
    for (a, b), (calls, ir) in prof.calls.items():
        if not is_jit(a) and is_jit(b) and "'" not in a[1]:
            into_vm[0] += calls
            into_vm[1] += ir
        elif is_jit(a) and not is_jit(b):
            bucket = host_path if reaches_host(b) else runtime
            bucket[0] += calls
            bucket[1] += ir
    # The calls into the VM as proxy-wasm makes them: the std::function that
    # V8::getModuleFunctionImpl wraps around each module export, called from
    # ContextBase's onXxx methods (not from inside a host call: allocating guest
    # memory calls the guest's malloc the same way).
    inside_hosts: set = set()
    frontier = [fn for fn in children if base_name(fn[1]) in host_names]
    for _ in range(10):
        frontier = [c for f in frontier for c in children[f]
                    if not is_jit(c) and c not in inside_hosts]
        inside_hosts.update(frontier)
    call_path = [0, 0]
    for (a, b), (calls, ir) in prof.calls.items():
        if ("getModuleFunctionImpl" in b[1] and not is_jit(a) and "'" not in a[1]
                and a not in inside_hosts and "getModuleFunctionImpl" not in a[1]):
            call_path[0] += calls
            call_path[1] += ir
    hosts = {}
    for h in sorted(host_names):
        calls = ir = 0
        for fn in prof.find(h):
            c, i = prof.calls_to(fn)
            calls += c
            ir += i
        if calls:
            hosts[h] = (calls, ir)
    return {"into_vm": into_vm, "host_path": host_path, "runtime": runtime, "hosts": hosts,
            "call_path": call_path}


def breakdown(prof: Profile, name: str, per: int, hint, limit: int = 8) -> dict:
    """Where a host function's instructions go, exactly: callgrind keeps the
    inclusive cost per caller->callee pair, so the callees of a function are
    exact for that caller. From `name`, follow the callee that takes most of the
    cost while nothing else calls it (then its cost is all this host call's),
    and list the callees there: instructions per call of the host function.
    `hint(name)` gives strings that an unnamed function's code refers to."""
    fns = prof.find(name)
    if not fns:
        return {}
    node = fns[0]
    path = [node[1]]
    while True:
        kids = [(b, c, i) for (a, b), (c, i) in prof.calls.items() if a == node and b != node]
        if not kids:
            break
        b, _, i = max(kids, key=lambda k: k[2])
        if i < 0.8 * prof.inclusive(node) or prof.calls_to(b)[1] != i:
            break
        node = b
        path.append(b[1])
    kids = sorted(((b, c, i) for (a, b), (c, i) in prof.calls.items() if a == node and b != node),
                  key=lambda k: -k[2])
    return {
        "path": path,
        "self": round(prof.self_ir.get(node, 0) / per),
        "callees": [{"function": b[1], "calls": round(c / per, 2), "ir": round(i / per),
                     **({"strings": hint(b[1])} if hint(b[1]) else {})}
                    for b, c, i in kids[:limit]],
        "other_callees_ir": round(sum(i for _, _, i in kids[limit:]) / per),
    }


def string_hints(envoy: Path):
    """name -> the C strings an unnamed Envoy function (fn_<address>) refers to."""
    elf = elfsyms.Elf(envoy)
    lengths = dict(elf.fde_functions())
    cache: dict[str, list[str]] = {}

    def hint(name: str) -> list[str]:
        m = re.fullmatch(r"(?:tcmalloc::)?fn_([0-9a-f]+)(?:'\d+)?", name)
        if not m:
            return []
        if name not in cache:
            addr = int(m.group(1), 16)
            cache[name] = elf.strings_referenced(addr, lengths.get(addr, 0))
        return cache[name]
    return hint


def analyse(profiles: dict[str, Profile], hosts: dict, builtins: set[str], rows: dict,
            envoy: Path) -> dict:
    hint = string_hints(envoy)
    per_req = {n: (p.total - p.idle) / REQUESTS for n, p in profiles.items()}
    native, empty = per_req["native"], per_req["wasm-empty"]
    empty_added = empty - native
    out: dict = {"listeners": {}}
    host_names = set(hosts)
    for name, prof in profiles.items():
        added = per_req[name] - native
        by_class: dict[str, int] = defaultdict(int)
        for fn, ir in prof.self_ir.items():
            by_class[cost_class(fn, builtins)] += ir
        split = vm_split(prof, host_names) if is_wasm_listener(name) else {
            "into_vm": [0, 0], "host_path": [0, 0], "runtime": [0, 0], "hosts": {},
            "call_path": [0, 0]}
        into_calls, into_ir = split["into_vm"]
        path_calls, path_ir = split["host_path"]
        host_incl = sum(ir for _, ir in split["hosts"].values())
        host_calls = sum(c for c, _ in split["hosts"].values())
        # V8 + proxy-wasm's part of a host call: from generated code to the host
        # function and back, minus the host function itself; per call on average.
        transition = (path_ir - host_incl) / path_calls if path_calls else 0
        row = {
            **rows.get(name, {}),
            "ir_per_request": round(per_req[name]),
            "ir_per_request_with_idle": per_request(prof.total),
            "vs_native": round(per_req[name] / native, 4),
            "vs_wasm_empty": round(per_req[name] / empty, 4),
            "added_over_native": round(added),
            "added_vs_wasm_empty_added": (round(added / empty_added, 3)
                                          if name != "native" and empty_added > 0 else None),
            "self_ir_per_request_by_class": {k: per_request(v) for k, v in
                                             sorted(by_class.items(), key=lambda kv: -kv[1])},
        }
        if into_calls:
            cp_calls, cp_ir = split["call_path"]
            machinery = (cp_ir - into_ir) / cp_calls if cp_calls else 0
            row["vm"] = {
                "calls_into_vm_per_request": round(into_calls / REQUESTS, 3),
                "vm_call_path_calls_per_request": round(cp_calls / REQUESTS, 3),
                "vm_call_path_ir_per_call": round(machinery),
                "added_over_native_split": {
                    "vm_call_path": per_request(cp_ir - into_ir),
                    "guest_code": per_request(into_ir - path_ir),
                    "host_calls": per_request(path_ir),
                    "other_envoy_work": round(added - (cp_ir - path_ir) / REQUESTS
                                              - path_ir / REQUESTS),
                },
                "inside_vm_ir_per_request": per_request(into_ir),
                "outside_vm_ir_per_request": per_request(prof.total - prof.idle - into_ir),
                "host_calls_per_request": round(path_calls / REQUESTS, 3),
                "host_calls_ir_per_request": per_request(path_ir),
                "host_call_transition_ir_per_call": round(transition),
                "guest_ir_per_request": per_request(into_ir - path_ir),
                "v8_runtime_helpers_ir_per_request": per_request(split["runtime"][1]),
                "host_functions": {
                    h: {"calls_per_request": round(c / REQUESTS, 3),
                        "ir_per_call": round(i / c),
                        "ir_per_call_with_transition": round(i / c + transition),
                        "ir_per_request_with_transition": per_request(i + c * transition),
                        "per_call_breakdown": breakdown(prof, h, c, hint)}
                    for h, (c, i) in sorted(split["hosts"].items(), key=lambda kv: -kv[1][1])},
            }
            if host_calls != path_calls:
                row["vm"]["note"] = (f"{path_calls} calls on the host-call path but {host_calls} "
                                     "into named host functions")
        top = sorted(prof.self_ir.items(), key=lambda kv: -kv[1])[:30]
        row["top_self"] = [{"function": fn[1], "class": cost_class(fn, builtins),
                            "ir_per_request": per_request(ir)} for fn, ir in top]
        row["dump"] = str(prof.path.relative_to(run.ROOT))
        out["listeners"][name] = row
    if "native-no-jwt" in per_req:
        out["jwt_authn_ir_per_request"] = round(native - per_req["native-no-jwt"])
    return out


def native_module_targets(L: dict) -> list[dict]:
    """The dynamic module's CPU targets, in instructions: its added Ir over native
    routing <= 1.0 x wasm-empty's and <= 0.6 x lua's (when those were measured)."""
    if "native-module" not in L:
        return []
    added = {n: r["added_over_native"] for n, r in L.items()}
    nm = added["native-module"]
    out = []
    for other, factor in (("wasm-empty", 1.0), ("lua", 0.6)):
        if other in added:
            out.append({"target": f"native-module added Ir <= {factor:g} x {other}'s",
                        "pass": nm <= factor * added[other],
                        "detail": f"{nm:+,} vs {factor:g} x {added[other]:+,} = "
                                  f"{factor * added[other]:+,.0f} Ir/request "
                                  f"({nm / added[other]:.3f} x)"})
    return out


def simulated(profiles: dict[str, Profile], rows: dict, idle: Profile,
              idle_s: float) -> dict:
    """PROFILE_SIMULATE: each listener's simulated cache misses and mispredicted
    branches per request (the idle rate subtracted, as for Ir), added over
    native, and CYCLE_MODEL's estimate of cycles from them."""
    events = idle.events
    if any(p.events != events for p in profiles.values()) or "Bcm" not in events:
        raise HarnessError(f"PROFILE_SIMULATE: the dumps lack cache and branch events ({events})")

    def per_request_events(p: Profile, window_s: float) -> dict[str, float]:
        rate = {e: v / idle_s for e, v in zip(events, idle.totals)}
        return {e: (v - rate[e] * window_s) / REQUESTS for e, v in zip(events, p.totals)}

    per = {n: per_request_events(p, rows[n]["window_seconds"]) for n, p in profiles.items()}
    out = {"cycle_model": CYCLE_MODEL, "listeners": {}}
    for n, ev in per.items():
        added = {e: ev[e] - per["native"][e] for e in events}
        out["listeners"][n] = {
            "added": {e: round(v, 1) for e, v in added.items()},
            "added_estimated_cycles": round(sum(w * added[e] for e, w in CYCLE_MODEL.items())),
        }
    return out


def print_simulated(sim: dict) -> None:
    shown = ["Ir", "I1mr", "D1mr", "D1mw", "Bcm", "Bim"]
    log("\nsimulated caches and branches (PROFILE_SIMULATE=1), added per request over native: "
        "L1 instruction and data read misses (I1mr, D1mr), data write misses (D1mw), "
        "mispredicted conditional and indirect branches (Bcm, Bim), and cycles estimated as "
        + " + ".join(f"{w:g} x {e}" for e, w in sim["cycle_model"].items()))
    head = f"{'listener':<20} " + " ".join(f"{e:>8}" for e in shown) + f" {'est. cycles':>12}"
    log(head)
    log("-" * len(head))
    L = sim["listeners"]
    for n, r in L.items():
        log(f"{n:<20} " + " ".join(f"{r['added'][e]:>+8,.0f}" for e in shown)
            + f" {r['added_estimated_cycles']:>+12,}")
    if "native-module" in L:
        nm = L["native-module"]["added_estimated_cycles"]
        for other, factor in (("wasm-empty", 1.0), ("lua", 0.6)):
            if other in L and L[other]["added_estimated_cycles"] > 0:
                log(f"native-module ÷ {other}, estimated cycles: "
                    f"{nm / L[other]['added_estimated_cycles']:.2f} x (target <= {factor:g})")


def print_report(report: dict) -> None:
    L = report["listeners"]
    log(f"\nEnvoy instructions per request (callgrind Ir, all threads; {REQUESTS} requests "
        f"per listener after {WARMUP} of warm-up; minus the idle Envoy's "
        f"{report['idle_ir_per_second']:,} Ir/s over each window)")
    head = (f"{'listener':<20} {'Ir/request':>11} {'÷ native':>9} {'÷ empty':>8} "
            f"{'added':>9} {'added ÷ empty added':>20} {'inside VM':>10} {'host calls':>11}")
    log(head)
    log("-" * len(head))
    for n, r in L.items():
        vm = r.get("vm", {})
        log(f"{n:<20} {r['ir_per_request']:>11,} {r['vs_native']:>9.3f} "
            f"{r['vs_wasm_empty']:>8.3f} {r['added_over_native']:>+9,} "
            f"{run.fmt(r['added_vs_wasm_empty_added'], '.2f'):>20} "
            f"{run.fmt(vm.get('inside_vm_ir_per_request'), ','):>10} "
            f"{run.fmt(vm.get('host_calls_ir_per_request'), ','):>11}")
    log("added: minus native; inside VM: from Envoy's calls into the Wasm module to their "
        "returns (guest code and its host calls); host calls: from the guest's call of a "
        "host function to its return")
    if "jwt_authn_ir_per_request" in report:
        log(f"jwt_authn (native minus native-no-jwt): {report['jwt_authn_ir_per_request']:,} Ir/request")
    if "simulated" in report:
        print_simulated(report["simulated"])
    if report.get("targets"):
        log("\ntargets:")
        for t in report["targets"]:
            log(f"  {'PASS' if t['pass'] else 'FAIL'}  {t['target']}: {t['detail']}")
    for n, r in L.items():
        vm = r.get("vm")
        if not vm:
            continue
        log(f"\n{n}: {vm['calls_into_vm_per_request']:.2f} calls into the VM per request; "
            f"inside the VM {vm['inside_vm_ir_per_request']:,} Ir/request = guest code "
            f"{vm['guest_ir_per_request']:,} + host calls {vm['host_calls_ir_per_request']:,} "
            f"({vm['host_calls_per_request']:.2f} calls, V8/proxy-wasm transition "
            f"{vm['host_call_transition_ir_per_call']:,} Ir per call); outside the VM "
            f"{vm['outside_vm_ir_per_request']:,}")
        sp = vm["added_over_native_split"]
        log(f"  added over native {r['added_over_native']:,} = proxy-wasm/V8 path of the "
            f"{vm['vm_call_path_calls_per_request']:.2f} calls into the VM {sp['vm_call_path']:,} "
            f"({vm['vm_call_path_ir_per_call']:,} per call) + guest code {sp['guest_code']:,} + "
            f"host calls {sp['host_calls']:,} + other Envoy work {sp['other_envoy_work']:,}")
        log("  self Ir/request by kind of code: " + ", ".join(
            f"{k} {v:,}" for k, v in r["self_ir_per_request_by_class"].items() if v))
        log(f"  {'host function':<36} {'calls/req':>9} {'Ir/call':>8} {'+transition':>11} "
            f"{'Ir/request':>10}")
        for h, c in vm["host_functions"].items():
            log(f"  {h:<36} {c['calls_per_request']:>9.2f} {c['ir_per_call']:>8,} "
                f"{c['ir_per_call_with_transition']:>11,} {c['ir_per_request_with_transition']:>10,}")
        for h, c in vm["host_functions"].items():
            b = c["per_call_breakdown"]
            if not b or c["ir_per_call"] < 2000:
                continue
            log(f"  {h}, per call: " + " > ".join(b["path"]) + f" (self {b['self']:,})")
            for k in b["callees"]:
                strings = (" (refers to " + ", ".join(repr(x) for x in k["strings"][:3]) + ")"
                           if k.get("strings") else "")
                log(f"      {k['ir']:>7,} Ir  {k['calls']:>5.2f}x  {k['function'][:100]}{strings}")


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, run._on_sigterm)
    signal.signal(signal.SIGHUP, run._on_sigterm)
    try:
        code = main()
    except HarnessError as e:
        print(f"\nbench-profile: harness error: {e}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("\nbench-profile: interrupted", file=sys.stderr)
        code = 130
    finally:
        run.stop_all()
    sys.exit(code)
