#!/usr/bin/env python3
"""`make bench-simultaneous`: added CPU per request in µs, with every listener
measured AT THE SAME TIME, each in its own Envoy.

`make bench` measures the listeners of one Envoy one after another. On the
benchmark VMs the CPU's speed drifts by 10-30 % within seconds, so one round's
added µs moves by ±15 µs around differences of a few µs, and a ratio of two
added costs stays undecided even over 30 rounds (BENCHMARKS.md, "The filter as
an Envoy dynamic module"). Here the drift is shared instead of averaged:

- one Envoy per listener (`--concurrency 1`, the listener exactly as run.py
  builds it, the same upstream Envoy behind all of them);
- per round, one wrk per Envoy, all started together for SIM_SECONDS; each
  Envoy's CPU time is read from its threads' schedstat (nanoseconds, not the
  10 ms ticks of /proc/PID/stat), and its requests from its own counter;
- a listener's added µs in a round is its CPU per request minus native's in
  the SAME window, so a slower or faster moment of the machine moves both;
- the rounds are split over SIM_STARTS sets of freshly started Envoys: one
  set of processes keeps its own speed (where its code and data landed, how
  its threads share the cores) through all its rounds, and between sets the
  ratios moved by more than one set's rounds suggested (BENCHMARKS.md);
- medians over rounds, and each ratio target with its 90 % interval from
  resampling the sets and then the rounds within them, so that the interval
  covers the set-to-set spread too: shown, missed, or undecided.

The Envoys share the machine's two cores with their wrk clients, so every
listener's CPU per request is higher than in `make bench` (caches and
scheduling are shared too); the differences between listeners are what this
measures. Knobs: SIM_LISTENERS (default lua,wasm-empty,native-module; native is
always measured; any listener of run.py, e.g. native-empty, native-floor), SIM_ROUNDS=12
(in all), SIM_STARTS=3, SIM_SECONDS=4, SIM_CONNECTIONS=4.
Writes target/bench/simultaneous.json.
"""
from __future__ import annotations

import glob
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (the listeners, Envoys, wrk script and helpers)

NAMES = ["native"] + [n for n in os.environ.get(
    "SIM_LISTENERS", "lua,wasm-empty,native-module").split(",") if n and n != "native"]
ROUNDS = int(os.environ.get("SIM_ROUNDS", "12"))
STARTS = int(os.environ.get("SIM_STARTS", "3"))
SECONDS = int(os.environ.get("SIM_SECONDS", "4"))
CONNECTIONS = int(os.environ.get("SIM_CONNECTIONS", "4"))
# native-module's targets (the dynamic-module issue): added CPU <= factor x other's.
TARGETS = [("wasm-empty", 1.0), ("lua", 0.6)]


def cpu_ns(pid: int) -> int:
    """CPU time of all of a process's threads, in ns (schedstat's first field)."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that just ended
    return total


def served(envoy: run.Envoy, name: str) -> int:
    return envoy.counters("downstream_rq_total")[
        f"http.{run.stat_prefix(name)}.downstream_rq_total"]


def window(wrk: str, script: Path, envs: dict[str, run.Envoy], seconds: int) -> dict:
    """Load every Envoy at once; CPU µs per request and requests, per listener."""
    before = {n: (cpu_ns(e.pid), served(e, n)) for n, e in envs.items()}
    procs = {n: subprocess.Popen(
        [wrk, "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "10s", "-s",
         str(script), f"http://127.0.0.1:{e.ports[n]}/"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n, e in envs.items()}
    for n, p in procs.items():
        stdout, stderr = p.communicate(timeout=seconds + 60)
        line = next((l for l in stdout.splitlines() if l.startswith("BENCHJSON ")), None)
        if p.returncode != 0 or line is None:
            raise run.HarnessError(f"{n}: wrk failed ({p.returncode}):\n{stdout}\n{stderr}")
        out = json.loads(line[len("BENCHJSON "):])
        errors = sum(out["errors"].values())
        if out["requests"] == 0 or errors > out["requests"] * 0.001:
            raise run.HarnessError(f"{n}: {errors} errors in {out['requests']} requests "
                                   f"({out['errors']}); non-2xx means a listener is broken")
    time.sleep(0.3)  # let each Envoy finish closing wrk's connections
    out = {}
    for n, e in envs.items():
        requests = served(e, n) - before[n][1]
        if requests <= 0:
            raise run.HarnessError(f"{n}: no request served")
        out[n] = {"cpu_us_per_req": (cpu_ns(e.pid) - before[n][0]) / 1000 / requests,
                  "requests": requests}
    return out


def ratio_interval(added: dict[str, list[float]], a: str, b: str, starts: list[int],
                   iters: int = 4000) -> tuple[float, float, float]:
    """median(added a) / median(added b), and its 90 % interval from resampling
    the sets of Envoys (`starts[i]`: round i's set), then the rounds of each set
    drawn."""
    rng = random.Random(1)
    by_start: dict[int, list[int]] = {}
    for i, start in enumerate(starts):
        by_start.setdefault(start, []).append(i)
    sets = list(by_start.values())
    samples = []
    for _ in range(iters):
        pick = [i for chosen in (rng.choice(sets) for _ in sets)
                for i in (rng.choice(chosen) for _ in chosen)]
        den = statistics.median(added[b][i] for i in pick)
        if den > 0:
            samples.append(statistics.median(added[a][i] for i in pick) / den)
    samples.sort()
    point = statistics.median(added[a]) / statistics.median(added[b])
    if len(starts) < 5 or len(samples) < iters // 2:
        return point, float("nan"), float("nan")
    return point, samples[int(0.05 * len(samples))], samples[int(0.95 * len(samples)) - 1]


def main() -> int:
    if min(ROUNDS, STARTS, SECONDS, CONNECTIONS) < 1 or STARTS > ROUNDS:
        raise run.HarnessError("SIM_ROUNDS, SIM_STARTS, SIM_SECONDS and SIM_CONNECTIONS "
                               "must be >= 1, and SIM_STARTS <= SIM_ROUNDS")
    run.OUT.mkdir(parents=True, exist_ok=True)
    run.LOGS.mkdir(parents=True, exist_ok=True)
    wrk = run.ensure_wrk()
    envoy_bin = run.find_envoy()
    run.LISTENERS = NAMES  # what build_modules builds besides the filter
    filter_wasm, empty_wasm = run.build_modules()
    script = run.OUT / "mix.lua"
    run.make_wrk_script(run.make_tokens(), script)
    up = run.start_upstream(envoy_bin)
    run.log(f"{len(NAMES)} Envoys loaded at once ({', '.join(NAMES)}), {ROUNDS} rounds of "
            f"{SECONDS} s over {STARTS} sets of freshly started Envoys, wrk -c{CONNECTIONS} each")
    rounds, starts = [], []
    for start in range(STARTS):
        envs = {n: run.single_listener_envoy(f"sim-{n}", n, envoy_bin, up, filter_wasm,
                                             empty_wasm, 1) for n in NAMES}
        window(wrk, script, envs, 2)  # warm-up
        # The rounds spread evenly: the first sets take one more when they do not divide.
        for _ in range(ROUNDS // STARTS + (start < ROUNDS % STARTS)):
            w = window(wrk, script, envs, SECONDS)
            rounds.append(w)
            starts.append(start)
            run.log(f"  set {start + 1} round {len(rounds)}/{ROUNDS}  " + "  ".join(
                f"{n} {v['cpu_us_per_req']:.1f} µs ({v['requests']})" for n, v in w.items()))
        for e in envs.values():
            run.stop(e.proc)
    run.stop(up.proc)

    added = {n: [w[n]["cpu_us_per_req"] - w["native"]["cpu_us_per_req"] for w in rounds]
             for n in NAMES if n != "native"}
    run.log(f"\n{'listener':<16} {'µs/request':>10} {'added µs':>9} {'(rounds min..max)':>18}")
    for n in NAMES:
        cpu = statistics.median(w[n]["cpu_us_per_req"] for w in rounds)
        extra = ("" if n == "native" else
                 f"{statistics.median(added[n]):>+9.1f} "
                 f"{min(added[n]):>+8.1f}..{max(added[n]):+.1f}")
        run.log(f"{n:<16} {cpu:>10.1f} {extra}")
    if STARTS > 1:
        run.log("added µs by set of Envoys (median of its rounds): " + "; ".join(
            f"{n} " + " ".join(
                f"{statistics.median(v for v, s in zip(added[n], starts) if s == k):+.1f}"
                for k in range(STARTS)) for n in added))
    result = {"rounds": rounds, "starts": starts, "added_us": {n: statistics.median(v) for n, v in added.items()},
              "targets": []}
    if "native-module" in added:
        run.log("\ntargets (native-module's added CPU, µs, measured simultaneously):")
        for other, factor in TARGETS:
            if other not in added:
                continue
            point, low, high = ratio_interval(added, "native-module", other, starts)
            verdict = ("PASS" if high <= factor else "FAIL" if low > factor
                       else "NOT SHOWN")
            run.log(f"  {verdict:<9} <= {factor:g} x {other}'s: {point:.2f} x "
                    f"(90 % interval {low:.2f}..{high:.2f}, {len(rounds)} rounds, "
                    f"{STARTS} sets)")
            result["targets"].append({"vs": other, "factor": factor, "ratio": round(point, 3),
                                      "interval": [round(low, 3), round(high, 3)],
                                      "verdict": verdict})
    (run.OUT / "simultaneous.json").write_text(json.dumps(result, indent=1) + "\n")
    run.log(f"wrote {(run.OUT / 'simultaneous.json').relative_to(run.ROOT)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except run.HarnessError as e:
        run.log(f"bench-simultaneous: harness error: {e}")
        run.stop_all()
        sys.exit(1)
