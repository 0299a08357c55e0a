#!/usr/bin/env python3
"""The side-by-side table of bench/peers/run.sh: vigil's `bench ingest` JSON and the peers'
`vigil-peers` JSON, one column each, with vigil's ratios to each peer. With --check, fails
unless every run is sound: no spurious expiry or transition, every stopped agent detected, no
errors, and every ratio computed (no absolute time is asserted)."""
import json
import math
import sys

args = [a for a in sys.argv[1:] if not a.startswith("--")]
check = "--check" in sys.argv
vigil, etcd, redis = (json.load(open(p)) for p in args)


def peer(r):
    return {
        "agents": r["params"]["agents"],
        "offered": r["offered_per_sec"],
        "rate": r["refreshes_per_sec"],
        "server_cpu": r["server_cpu_share_of_one_core"],
        "gen_cpu": r["generator_cpu_share_of_one_core"],
        "us": r["server_cpu_us_per_refresh"],
        "late": r["expired_late"],
        "stopped": r["stopped"],
        "missing": r["missing"],
        "spurious": r["spurious"],
        "errors": r["errors"],
        "register": r["register_secs"],
    }


p = vigil["params"]
interval = p["interval"]
secs = float(interval[:-2]) / 1000 if interval.endswith("ms") else float(interval.rstrip("s"))
v = {
    "agents": p["agents"],
    "offered": p["agents"] / (secs * p["beat_ratio"]),
    "rate": vigil["server_frames_per_sec"],
    "server_cpu": vigil["server_cpu_share_of_one_core"],
    "gen_cpu": vigil["generator_cpu_share_of_one_core"],
    "us": vigil["server_cpu_us_per_beat"],
    "late": vigil["degraded_delivered_late"],
    "stopped": vigil["stopped"],
    "missing": vigil["missing"],
    "spurious": vigil["spurious"] + vigil.get("spurious_before_window", 0),
    "errors": vigil["generator_errors"],
    "register": vigil["register_secs"],
}
e, r = peer(etcd), peer(redis)
cols = [v, e, r]


def cap(c):
    # Refreshes one core of the server could take at this cost.
    return 1e6 / c["us"] if c["us"] else float("nan")


def ratio(a, b, higher_better=True):
    if not b or not a or any(map(math.isnan, (a, b))):
        return float("nan")
    return a / b if higher_better else b / a


def fmt(x, unit=""):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, str):
        return x
    if isinstance(x, float):
        return f"{x:,.1f}{unit}" if abs(x) < 100 else f"{x:,.0f}{unit}"
    return f"{x:,}{unit}"


rows = [
    ("agents (keys, leases)", lambda c: c["agents"], None),
    ("register / grant all, s", lambda c: c["register"], None),
    ("refreshes offered per s", lambda c: c["offered"], None),
    ("refreshes acknowledged per s", lambda c: c["rate"], True),
    ("server CPU, share of one core", lambda c: c["server_cpu"] * 100, None),
    ("server CPU per refresh, µs", lambda c: c["us"], False),
    ("refreshes one server core could take per s", cap, True),
    ("generator CPU, share of one core", lambda c: c["gen_cpu"] * 100, None),
    ("expiry seen after the deadline, p50 ms", lambda c: c["late"]["p50_ms"], False),
    ("… p99 ms", lambda c: c["late"]["p99_ms"], False),
    ("… max ms", lambda c: c["late"]["max_ms"], False),
    ("stopped agents / seen expiring", lambda c: f'{c["stopped"]} / {c["late"]["n"]}', None),
    ("spurious expiries", lambda c: c["spurious"], None),
    ("errors", lambda c: c["errors"], None),
]
print(f"| {'':44} | vigil | etcd | Redis | vigil vs etcd | vigil vs Redis |")
print("| --- | --- | --- | --- | --- | --- |")
ratios = {}
for name, f, better in rows:
    vals = [f(c) for c in cols]
    cells = [fmt(x, "%" if "share" in name else "") for x in vals]
    if better is None:
        rs = ["", ""]
    else:
        re_ = ratio(vals[0], vals[1], better)
        rr = ratio(vals[0], vals[2], better)
        ratios[name] = (re_, rr)
        rs = [fmt(re_, "×"), fmt(rr, "×")]
    print(f"| {name} | " + " | ".join(cells + rs) + " |")
print()
print("Ratios: how many times better vigil is (above 1×: vigil better; for times and costs, "
      "the peer's figure over vigil's).")

if check:
    bad = []
    for name, c in zip(("vigil", "etcd", "redis"), cols):
        if c["spurious"]:
            bad.append(f"{name}: {c['spurious']} spurious")
        if c["missing"]:
            bad.append(f"{name}: {c['missing']} stopped agents never seen expiring")
        if c["errors"]:
            bad.append(f"{name}: {c['errors']} errors")
        if c["late"]["n"] != c["stopped"] or c["stopped"] == 0:
            bad.append(f"{name}: {c['late']['n']} of {c['stopped']} stopped agents measured")
    for name, (a, b) in ratios.items():
        if math.isnan(a) or math.isnan(b):
            bad.append(f"ratio not computed: {name}")
    if bad:
        print("check failed:\n  " + "\n  ".join(bad), file=sys.stderr)
        sys.exit(1)
    print("check: every run sound, every ratio computed", file=sys.stderr)
