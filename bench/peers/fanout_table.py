#!/usr/bin/env python3
"""One row's table of bench/peers/fanout.sh: the JSON of `vigil bench fanout` with its default
store (SurrealKV) and with `--store mem`, and of `vigil-peers-fanout` against Redis and NATS,
one column each; then vigil's ratios to each peer (vigil's figure over the peer's, for the
server's CPU per delivery and the p99 delay).

    fanout_table.py [--check] [--title TEXT] VIGIL_SURREALKV VIGIL_MEM REDIS NATS

Fails if the four runs were not of the same workload. With --check, also fails unless every
run is sound: nothing lost (vigil: no `lagged`; the peers: no gap in a channel's sequence),
every subscriber received events in the window, and every ratio computed (no absolute figure
is asserted)."""
import json
import math
import sys

argv = sys.argv[1:]
check = "--check" in argv
title = None
paths = []
i = 0
while i < len(argv):
    if argv[i] == "--check":
        pass
    elif argv[i] == "--title":
        i += 1
        title = argv[i]
    else:
        paths.append(argv[i])
    i += 1
if len(paths) != 4:
    sys.exit(__doc__)
vigil_kv, vigil_mem, redis, nats = (json.load(open(p)) for p in paths)


def vigil(r):
    p = r["params"]
    share, rate = r["server_cpu_share_of_one_core"], r["deliveries_per_sec"]
    return {
        "subscribers": p["monitors"],
        "channels": p["kinds"],
        "rate": p["rate"],
        "published": r["transitions_per_sec"],
        "deliveries": rate,
        "delivered": r["delivered"],
        "server_cpu": share,
        # Newer vigil binaries write this figure; older ones give the same from share / rate.
        "us": r.get("server_cpu_us_per_delivery", share * 1e6 / rate if rate else None),
        "client_cpu": r["monitors_cpu_share_of_one_core"],
        # vigil tells a monitor that fell behind with a `lagged` frame; its streams here are
        # filtered, so a jump in seq is no gap and is not counted.
        "lost": r["lagged"] + r["gaps"],
        "min": r["min_per_monitor"],
    }


def peer(r):
    p = r["params"]
    return {
        "subscribers": p["subscribers"],
        "channels": p["channels"],
        "rate": p["rate"],
        "published": r["published_per_sec"],
        "deliveries": r["deliveries_per_sec"],
        "delivered": r["delivered"],
        "server_cpu": r["server_cpu_share_of_one_core"],
        "us": r["server_cpu_us_per_delivery"],
        "client_cpu": r["client_cpu_share_of_one_core"],
        "lost": r["gaps"],
        "min": r["min_per_subscriber"],
    }


names = ["vigil (SurrealKV)", "vigil (mem)", "Redis", "NATS"]
cols = [vigil(vigil_kv), vigil(vigil_mem), peer(redis), peer(nats)]
shape = {(c["subscribers"], c["channels"], c["rate"]) for c in cols}
if len(shape) != 1:
    sys.exit(f"the runs were not of the same workload (subscribers, channels, rate): {shape}")
if {vigil_kv["params"]["store"], vigil_mem["params"]["store"]} != {"surrealkv", "mem"}:
    sys.exit("the first vigil run must be --store surrealkv, the second --store mem")
subs, channels, rate = shape.pop()


def fmt(x, unit=""):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, str):
        return x
    if isinstance(x, float):
        if abs(x) < 10:
            return f"{x:,.2f}{unit}"
        return f"{x:,.1f}{unit}" if abs(x) < 100 else f"{x:,.0f}{unit}"
    return f"{x:,}{unit}"


def pct(x):
    return None if x is None else x * 100


rows = [
    ("events published per s", lambda c: c["published"]),
    ("deliveries per s", lambda c: c["deliveries"]),
    ("delivered, p50 ms", lambda c: c["delivered"]["p50_ms"]),
    ("… p99 ms", lambda c: c["delivered"]["p99_ms"]),
    ("… max ms", lambda c: c["delivered"]["max_ms"]),
    ("server CPU, share of one core", lambda c: fmt(pct(c["server_cpu"]), "%")),
    ("server CPU per delivery, µs", lambda c: c["us"]),
    ("subscribers' process CPU, share of one core", lambda c: fmt(pct(c["client_cpu"]), "%")),
    ("lost (vigil: lagged; peers: gaps)", lambda c: c["lost"]),
    ("fewest events one subscriber got", lambda c: c["min"]),
]
if title:
    over = "1 channel" if channels == 1 else f"{channels:,} channels"
    print(f"### {title}: {subs:,} subscribers over {over}, {rate:,} events/s "
          f"({rate * subs // channels:,} deliveries/s offered)")
    print()
print("| | " + " | ".join(names) + " |")
print("| --- " * (len(names) + 1) + "|")
for name, f in rows:
    print(f"| {name} | " + " | ".join(fmt(f(c)) for c in cols) + " |")
print()


def ratio(a, b):
    if a is None or b is None or not b or any(map(math.isnan, (a, b))):
        return float("nan")
    return a / b


measures = [
    ("server CPU per delivery", lambda c: c["us"]),
    ("delivered p99", lambda c: c["delivered"]["p99_ms"]),
]
pairs = [(0, 2), (0, 3), (1, 2), (1, 3)]
print("| vigil ÷ peer | " + " | ".join(f"{names[a]} ÷ {names[b]}" for a, b in pairs) + " |")
print("| --- " * (len(pairs) + 1) + "|")
ratios = {}
for name, f in measures:
    rs = [ratio(f(cols[a]), f(cols[b])) for a, b in pairs]
    ratios[name] = rs
    print(f"| {name} | " + " | ".join(fmt(r, "×") for r in rs) + " |")
print()
print("Ratios: vigil's figure over the peer's (below 1×: vigil costs less or is faster). "
      "vigil's server also makes the events (its runtime's transitions, with SurrealKV a "
      "durable write before publication); a peer's server only routes what the publisher "
      "hands it, and the publisher runs in the subscribers' process.")
print()

if check:
    bad = []
    for name, c in zip(names, cols):
        if c["lost"]:
            bad.append(f"{name}: {c['lost']} lagged or gaps")
        if not c["deliveries"] or not c["min"]:
            bad.append(f"{name}: a subscriber received nothing in the window")
    for name, rs in ratios.items():
        if any(math.isnan(r) for r in rs):
            bad.append(f"ratio not computed: {name}")
    if bad:
        print("check failed:\n  " + "\n  ".join(bad), file=sys.stderr)
        sys.exit(1)
    print("check: every run sound, every ratio computed", file=sys.stderr)
