#!/usr/bin/env python3
"""Renders bench/load.sh's results.jsonl as Markdown tables, with every proxy read against
the baselines measured in the same run: calling the provider directly, and nginx (the floor).

    python3 bench/report.py OUT_DIR/results.jsonl

Labels are "<target> <kind> <n>[ round R]": the target is `direct`, `nginx`, `gateway`, a
gateway variant (`gateway-1w`, ...), `portkey` or `litellm`; the kind `open` (n = rate),
`closed` (n = workers), `streams`, or a chaos run (`flaky30`, `dead`, `secondary`).

Repeated rounds (" round R") pair each proxy's run with the direct (and nginx) run of the
same round: added latency = proxy minus direct in that round, for both latency definitions —
from the intended send time (`latency`, no coordinated omission) and from the actual send
(`service_latency`); CPU per request = the proxy's CPU time over the requests it answered.
Each summary is the median across rounds and the min … max range. CPU per request over
nginx's is the median of the per-round ratios; added latency over nginx's is the ratio of
the two medians (nginx adds so little that a single round's difference can be zero or
negative on loopback).
"""
import json
import re
import statistics
import sys

ROUND = re.compile(r"^(?P<base>.*) round (?P<n>\d+)$")
OPEN = re.compile(r"^(?P<target>\S+) open (?P<rate>\d+)$")
CLOSED = re.compile(r"^(?P<target>\S+) closed (?P<c>\d+)$")
SKIP = ("warmup ", "prime ")
PEERS = ("portkey", "litellm")


def load(path):
    runs, calls = {}, {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            row = json.loads(line)
            if row.get("label", "").startswith(SKIP):
                continue
            if "provider_calls" in row:
                calls[row["label"]] = row
            else:
                runs[row["label"]] = row
    return runs, calls


def us(v):
    return f"{v:,}" if isinstance(v, int) else str(v)


def lat(run, q, key="latency"):
    return run[key][f"{q}_us"]


def has(run, key):
    return isinstance(run.get(key), dict) and run[key].get("count", 0) > 0


def lag(run):
    """The generator's send lag as "p50 / p99 (n over 1 ms)", or n/a for older results."""
    if not has(run, "send_lag"):
        return "n/a"
    s = run["send_lag"]
    return f"{us(s['p50_us'])} / {us(s['p99_us'])} ({s.get('over_1ms', '?')} > 1 ms)"


def cpu(run):
    w = run.get("watched") or {}
    c = w.get("cpu_percent_of_one_core")
    return "n/a" if c is None else f"{c:.0f}%"


def cpu_per_request(run):
    """µs of the watched process's CPU per answered request, or None."""
    w = run.get("watched") or {}
    seconds, answered = w.get("cpu_seconds"), run.get("answered", 0)
    if seconds is None or not answered:
        return None
    return 1e6 * seconds / answered


def rss_mib(run):
    w = run.get("watched") or {}
    return (w.get("rss_peak_kib") or 0) / 1024


def spread(values, fmt="{:+,.0f}", bold=True):
    """"median (min … max)" of a list of numbers, or n/a if it is empty."""
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    med = fmt.format(statistics.median(values))
    med = f"**{med}**" if bold else med
    return f"{med} ({fmt.format(min(values))} … {fmt.format(max(values))})"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio_cell(values):
    """One ratio (of medians), bold, or n/a."""
    v = values[0] if values else None
    return "n/a" if v is None else f"**{v:.2f}×**"


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def over_floor(a, b):
    """a ÷ b for an added latency over nginx's: None (undefined) unless nginx's is positive —
    a ratio to zero or to a negative difference says nothing (and its sign would flip)."""
    return a / b if a is not None and b is not None and b > 0 else None


def target_order(name):
    order = {"direct": 0, "nginx": 1, "gateway": 2, "portkey": 8, "litellm": 9}
    return (order.get(name, 3), name)


def rounds_by(runs, kind, n):
    """{round: {target: run}} for labels "<target> <kind> <n> round R"."""
    found = {}
    for label, r in runs.items():
        m = ROUND.match(label)
        if not m:
            continue
        parts = m["base"].split(" ")
        if len(parts) == 3 and parts[1] == kind and parts[2] == str(n):
            found.setdefault(int(m["n"]), {})[parts[0]] = r
    return dict(sorted(found.items()))


def round_rates(runs, kind="open"):
    rates = set()
    for label in runs:
        m = ROUND.match(label)
        if m:
            parts = m["base"].split(" ")
            if len(parts) == 3 and parts[1] == kind and parts[2].isdigit():
                rates.add(int(parts[2]))
    return sorted(rates)


# ===== open loop at the round rate =====

def open_rounds(runs, rate):
    """Per target: lists over rounds of added p50/p99 (both definitions), CPU per request and
    the ratios to nginx of the same round."""
    rounds = rounds_by(runs, "open", rate)
    stats = {}
    for n, targets in rounds.items():
        d = targets.get("direct")
        if not d:
            continue
        x = targets.get("nginx")
        for name, r in targets.items():
            if name == "direct":
                continue
            s = stats.setdefault(name, {k: [] for k in (
                "p50", "p99", "sp50", "sp99", "cpu", "r50", "r99", "rcpu", "rows")})
            a50, a99 = lat(r, "p50") - lat(d, "p50"), lat(r, "p99") - lat(d, "p99")
            s["p50"].append(a50)
            s["p99"].append(a99)
            if has(d, "service_latency") and has(r, "service_latency"):
                s["sp50"].append(lat(r, "p50", "service_latency") - lat(d, "p50", "service_latency"))
                s["sp99"].append(lat(r, "p99", "service_latency") - lat(d, "p99", "service_latency"))
            c = cpu_per_request(r)
            s["cpu"].append(c)
            if x is not None and name != "nginx":
                s["rcpu"].append(ratio(c, cpu_per_request(x)))
            s["rows"].append((n, d, r))
    # Added latency over nginx's: the ratio of the medians over rounds (a round's own ratio
    # is meaningless when nginx's added latency in it is near zero or negative, as it can be
    # on loopback).
    floor = stats.get("nginx")
    for name, s in stats.items():
        if name == "nginx" or floor is None:
            continue
        s["r50"] = [over_floor(median(s["p50"]), median(floor["p50"]))]
        s["r99"] = [over_floor(median(s["p99"]), median(floor["p99"]))]
    return stats


def print_open_rounds(runs, rate):
    stats = open_rounds(runs, rate)
    if not stats:
        return
    names = sorted(stats, key=target_order)
    n_rounds = len(next(iter(stats.values()))["rows"])
    print(f"\n### Open loop at {rate} req/s: {n_rounds} rounds of "
          + ", ".join(f"`{n}`" for n in ["direct"] + names) + " back to back\n")
    print("Added = the proxy's latency minus the direct run's of the same round. \"From "
          "intended\": measured from each request's intended send time (no coordinated "
          "omission); \"service\": from the moment it was actually sent. CPU per request: the "
          "proxy process's CPU time (user + system; nginx: master + worker) over the requests "
          "it answered.\n")
    print("| round | target | p50 / p99 (µs) | added p50 / p99, from intended (µs) "
          "| added p50 / p99, service (µs) | send lag p50 / p99 (µs) | errors | CPU | CPU per request (µs) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, targets in rounds_by(runs, "open", rate).items():
        d = targets.get("direct")
        if not d:
            continue
        print(f"| {n} | direct | {us(lat(d,'p50'))} / {us(lat(d,'p99'))} | — | — | {lag(d)} "
              f"| {d['errors']} | | |")
        for name in names:
            r = targets.get(name)
            if not r:
                continue
            service = "n/a"
            if has(d, "service_latency") and has(r, "service_latency"):
                service = (f"{lat(r,'p50','service_latency')-lat(d,'p50','service_latency'):+,} / "
                           f"{lat(r,'p99','service_latency')-lat(d,'p99','service_latency'):+,}")
            c = cpu_per_request(r)
            print(f"| {n} | {name} | {us(lat(r,'p50'))} / {us(lat(r,'p99'))} | "
                  f"{lat(r,'p50')-lat(d,'p50'):+,} / {lat(r,'p99')-lat(d,'p99'):+,} | {service} "
                  f"| {lag(r)} | {r['errors']} | {cpu(r)} | {'n/a' if c is None else f'{c:,.0f}'} |")
    print(f"\n#### Summary at {rate} req/s (median over rounds, min … max)\n")
    print("| target | added p50 (µs) | added p99 (µs) | added p50 / p99, service (µs) "
          "| CPU per request (µs) | added p50 ÷ nginx's (of the medians) | added p99 ÷ nginx's (of the medians) | CPU per request ÷ nginx's |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        s = stats[name]
        print(f"| {name} | {spread(s['p50'])} | {spread(s['p99'])} | {spread(s['sp50'], bold=False)} / "
              f"{spread(s['sp99'], bold=False)} | {spread(s['cpu'], '{:,.0f}')} "
              f"| {ratio_cell(s['r50'])} | {ratio_cell(s['r99'])} "
              f"| {spread(s['rcpu'], '{:.2f}×')} |")


# ===== closed loop =====

def closed_rounds(runs, c):
    stats = {}
    for n, targets in rounds_by(runs, "closed", c).items():
        d, x = targets.get("direct"), targets.get("nginx")
        for name, r in targets.items():
            s = stats.setdefault(name, {k: [] for k in ("rps", "direct", "nginx", "cpu", "p50", "rss")})
            s["rps"].append(r["throughput_rps"])
            s["direct"].append(ratio(r["throughput_rps"], d and d["throughput_rps"]))
            s["nginx"].append(ratio(r["throughput_rps"], x and x["throughput_rps"]))
            s["cpu"].append(cpu_per_request(r))
            s["p50"].append(lat(r, "p50"))
            s["rss"].append(rss_mib(r))
    return stats


def print_closed(runs):
    concurrencies = round_rates(runs, "closed")
    for c in concurrencies:
        stats = closed_rounds(runs, c)
        names = sorted(stats, key=target_order)
        rounds = len(rounds_by(runs, "closed", c))
        print(f"\n### Closed loop (maximum throughput, {c} workers): {rounds} rounds, every target in each\n")
        print("| target | throughput (req/s) | ratio to direct | ratio to nginx | p50 (µs) "
              "| CPU per request (µs) | peak RSS (MiB) |")
        print("|---|---|---|---|---|---|---|")
        for name in names:
            s = stats[name]
            print(f"| {name} | {spread(s['rps'], '{:,.0f}')} | {spread(s['direct'], '{:.3f}')} "
                  f"| {spread(s['nginx'], '{:.3f}')} | {spread(s['p50'], '{:,.0f}', False)} "
                  f"| {spread(s['cpu'], '{:,.0f}', False)} | {spread(s['rss'], '{:.1f}', False)} |")
    # Older results: single closed runs.
    singles = [(l, r) for l, r in runs.items() if l.split(" ")[1:2] == ["closed"] and not ROUND.match(l)]
    if singles:
        direct = next((r for l, r in singles if l.startswith("direct ")), None)
        print("\n### Closed loop, single runs\n")
        print("| target | workers | throughput (req/s) | ratio to direct | p50 / p99 / max (µs) | errors "
              "| CPU | CPU per request (µs) | peak RSS (MiB) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for label, r in sorted(singles, key=lambda lr: target_order(lr[0].split(" ")[0])):
            rr = ratio(r["throughput_rps"], direct and direct["throughput_rps"])
            c = cpu_per_request(r)
            print(f"| {label} | {r['concurrency']} | {r['throughput_rps']:.0f} | "
                  f"{'n/a' if rr is None else f'{rr:.3f}'} | {us(lat(r,'p50'))} / {us(lat(r,'p99'))} / "
                  f"{us(lat(r,'max'))} | {r['errors']} | {cpu(r)} | {'n/a' if c is None else f'{c:,.0f}'} "
                  f"| {rss_mib(r):.1f} |")


# ===== single open-loop rates =====

def print_open_singles(runs):
    rates = {}
    for label, r in runs.items():
        m = OPEN.match(label)
        if m:
            rates.setdefault(int(m["rate"]), {})[m["target"]] = r
    if not rates:
        return
    print("\n### Open loop (fixed rate), single runs\n")
    print("| rate (req/s) | target | p50 / p90 / p99 / max (µs) | added p50 / p99 vs direct (µs) "
          "| achieved (req/s) | errors | dropped | CPU | CPU per request (µs) | peak RSS (MiB) | send lag p50 / p99 (µs) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for rate in sorted(rates):
        targets = rates[rate]
        d = targets.get("direct")
        for name in sorted(targets, key=target_order):
            r = targets[name]
            q = " / ".join(us(lat(r, x)) for x in ("p50", "p90", "p99", "max"))
            added = (f"{lat(r,'p50')-lat(d,'p50'):+,} / {lat(r,'p99')-lat(d,'p99'):+,}"
                     if d is not None and r is not d else "—")
            c = cpu_per_request(r)
            print(f"| {rate} | {name} | {q} | {added} | {r['throughput_rps']:.0f} | {r['errors']} "
                  f"| {r['dropped']} | {cpu(r)} | {'n/a' if c is None else f'{c:,.0f}'} | {rss_mib(r):.1f} | {lag(r)} |")


# ===== streams =====

def print_streams(runs, calls):
    labels = sorted((l for l in runs if " streams " in l), key=lambda l: (target_order(l.split(" ")[0]), l))
    if not labels:
        return
    nginx = runs.get("nginx streams 1000")
    print("\n### 1000 concurrent streams (20 chunks, 100 ms apart)\n")
    print("Upstream: how the primary was called, by HTTP version, as the simulated provider "
          "counted it (`... h2`: a gateway configured `http2_prior_knowledge: true` for its "
          "providers). nginx's RSS is its master's and worker's.\n")
    print("| target | streams completed | errors (broken streams) | p50 / p99 (µs) "
          "| peak RSS (MiB) | RSS ÷ nginx's | upstream calls by HTTP version |")
    print("|---|---|---|---|---|---|---|")
    for label in labels:
        r = runs[label]
        versions = (calls.get(label, {}).get("primary") or {}).get("http_versions") or {}
        versions = ", ".join(f"{v}: {n}" for v, n in sorted(versions.items())) or "n/a"
        rr = ratio(rss_mib(r), nginx and rss_mib(nginx))
        print(f"| {label} | {r['ok']} | {r['errors']} {r['error_kinds'] or ''} | "
              f"{us(lat(r,'p50'))} / {us(lat(r,'p99'))} | {rss_mib(r):.1f} | "
              f"{'n/a' if rr is None else f'{rr:.2f}×'} | {versions} |")


# ===== chaos =====

def print_chaos(runs, calls):
    rows = [(l, r) for l, r in runs.items()
            if any(f" {k} " in f" {l} " for k in ("flaky30", "dead", "secondary"))]
    if not rows:
        return
    print("\n### Chaos (secondary healthy; baseline: the secondary called directly, same rate)\n")
    print("| run | requests sent | success rate | attempts/request (x-brace-attempts) "
          "| provider calls/request | p50 / p90 / p99 / max (µs) | added p50 / p99 vs direct (µs) "
          "| primary calls (outcomes) |")
    print("|---|---|---|---|---|---|---|---|")
    dead_rates = set()
    for label, r in rows:
        m = ROUND.match(label)
        name, n = (m["base"], m["n"]) if m else (label, None)
        rate = name.split()[-1]
        if " dead " in f" {name} " and n:
            dead_rates.add(rate)
        base = runs.get(f"direct secondary {rate} round {n}" if n else f"direct secondary {rate}")
        c = calls.get(label, {})
        per = c.get("provider_calls", 0) / max(r["sent_total"], 1)
        att = r["attempts"]["mean"]
        att = "n/a" if att is None else f"{att:.3f}"
        added = (f"{lat(r,'p50')-lat(base,'p50'):+,} / {lat(r,'p99')-lat(base,'p99'):+,}"
                 if base and base is not r else "—")
        q = " / ".join(us(lat(r, x)) for x in ("p50", "p90", "p99", "max"))
        prim = c.get("primary", {})
        print(f"| {label} | {r['sent_total']} | {100*r['success_rate']:.2f}% | {att} | {per:.3f} | "
              f"{q} | {added} | {prim.get('calls','')} {json.dumps(prim.get('outcomes',''))} |")
    for rate in sorted(dead_rates, key=int):
        print(f"\n#### Dead primary at {rate} req/s, repeated (primary already out): added vs the "
              "secondary called directly in the same round (median, min … max)\n")
        print("| target | rounds | added p50 (µs) | added p99 (µs) | success | CPU per request (µs) |")
        print("|---|---|---|---|---|---|")
        per = {}
        for label, r in rows:
            m = ROUND.match(label)
            if not m or not m["base"].endswith(f" dead {rate}"):
                continue
            base = runs.get(f"direct secondary {rate} round {m['n']}")
            if not base:
                continue
            s = per.setdefault(m["base"].split(" ")[0], {"p50": [], "p99": [], "ok": [], "cpu": []})
            s["p50"].append(lat(r, "p50") - lat(base, "p50"))
            s["p99"].append(lat(r, "p99") - lat(base, "p99"))
            s["ok"].append(100 * r["success_rate"])
            s["cpu"].append(cpu_per_request(r))
        for name in sorted(per, key=target_order):
            s = per[name]
            print(f"| {name} | {len(s['p50'])} | {spread(s['p50'])} | {spread(s['p99'])} "
                  f"| {spread(s['ok'], '{:.2f}%', False)} | {spread(s['cpu'], '{:,.0f}', False)} |")


# ===== peers =====

def print_peers(runs):
    rates = {}
    for label, r in runs.items():
        m = OPEN.match(label)
        if m:
            rates.setdefault(int(m["rate"]), {})[m["target"]] = r
    peer_rates = sorted(rate for rate, t in rates.items() if any(p in t for p in PEERS))
    if not peer_rates:
        return
    print("\n### Peers at rates they sustain (same run, same providers)\n")
    names = sorted({n for rate in peer_rates for n in rates[rate]}, key=target_order)
    print("| rate (req/s) | " + " | ".join(f"{n} p50 / p99 (µs)" for n in names)
          + " | " + " | ".join(f"{n} CPU per request (µs)" for n in names if n != "direct") + " |")
    print("|---|" + "---|" * (2 * len(names) - 1))
    for rate in peer_rates:
        t = rates[rate]
        cells = [f"{us(lat(t[n],'p50'))} / {us(lat(t[n],'p99'))}" if n in t else "—" for n in names]
        cpus = []
        for n in names:
            if n == "direct":
                continue
            c = cpu_per_request(t[n]) if n in t else None
            cpus.append("n/a" if c is None else f"{c:,.0f}")
        print(f"| {rate} | " + " | ".join(cells) + " | " + " | ".join(cpus) + " |")


# ===== the targets =====

def print_targets(runs, calls):
    print("### Targets (issue 22): each a ratio measured in the same run\n")
    print("| target | measured (median over rounds, min … max) | goal | |")
    print("|---|---|---|---|")
    rate = 1000 if 1000 in round_rates(runs) else (round_rates(runs) or [None])[0]
    if rate is not None:
        stats = open_rounds(runs, rate)
        for name in sorted((n for n in stats if n.startswith("gateway")), key=target_order):
            s = stats[name]
            for key, raw, what, goal in (("r50", "p50", "p50 added", 1.5),
                                         ("r99", "p99", "p99 added", 2.0),
                                         ("rcpu", "cpu", "CPU per request", 2.0)):
                m = median(s[key])
                floor = stats.get("nginx", {}).get(raw, [])
                if m is None and key != "rcpu" and floor:
                    shown = "undefined: nginx's median added is ≤ 0"
                    verdict = "—"
                else:
                    verdict = "n/a" if m is None else ("met" if m <= goal else "not met")
                    shown = ratio_cell(s[key]) + " (ratio of the medians)" if key != "rcpu" else spread(s[key], '{:.2f}×')
                    # A floor that is itself noise (nginx's added latency below zero in some
                    # round) makes the ratio of the medians say nothing either way.
                    if m is not None and key != "rcpu" and floor and min(floor) <= 0:
                        verdict = "not judgeable: nginx's own added latency crosses zero over the rounds"
                print(f"| {name}: {what} at {rate} req/s ÷ nginx's | {shown} "
                      f"({name} {spread(s[raw], '{:,.0f}', False)} µs; "
                      f"nginx {spread(floor, '{:,.0f}', False)} µs) | ≤ {goal}× | {verdict} |")
    for c in round_rates(runs, "closed"):
        stats = closed_rounds(runs, c)
        for name in sorted((n for n in stats if n.startswith("gateway")), key=target_order):
            m = median(stats[name]["direct"])
            verdict = "n/a" if m is None else ("met" if m >= 0.45 else "not met")
            nginx = stats.get("nginx", {}).get("direct", [])
            print(f"| {name}: closed-loop maximum ({c} workers) ÷ direct | {spread(stats[name]['direct'], '{:.3f}')} "
                  f"(nginx {spread(nginx, '{:.3f}', False)}) | ≥ 0.45 | {verdict} |")
    nginx = runs.get("nginx streams 1000")
    for label in ("gateway streams 1000", "gateway streams 1000 h2"):
        r = runs.get(label)
        if r and nginx:
            rr = ratio(rss_mib(r), rss_mib(nginx))
            verdict = "met" if rr <= 1.0 else "not met"
            print(f"| {label}: peak RSS ÷ nginx's | **{rr:.2f}×** ({rss_mib(r):.1f} vs {rss_mib(nginx):.1f} MiB) "
                  f"| ≤ 1× {'(HTTP/1.1 upstreams)' if 'h2' not in label else '(for scale)'} | {verdict} |")
    print("\n(In-process full stack vs tower's retry + timeout: `cargo bench -p brace-bench --bench interleaved`.)")


# ===== instructions per request =====

def print_instructions(runs):
    rows = {label[len("instructions "):]: r for label, r in runs.items()
            if label.startswith("instructions ") and "instructions_per_request" in r}
    if not rows:
        return
    print("\n### Instructions per request (callgrind, user space, one request at a time)\n")
    print("The proxy's own process only: the kernel's share (the system calls) is not counted. "
          "Unlike time, these counts do not move with the machine's load.\n")
    print("| target | requests | errors | instructions per request | ratio to nginx |")
    print("|---|---|---|---|---|")
    floor = rows.get("nginx", {}).get("instructions_per_request")
    for name in sorted(rows, key=target_order):
        r = rows[name]
        per = r["instructions_per_request"]
        shown = f"**{per / floor:.2f}×**" if floor else "—"
        print(f"| {name} | {r['sent_total']} | {r['errors']} | {per:,.0f} | {shown} |")


def main():
    runs, calls = load(sys.argv[1])
    print_targets(runs, calls)
    print_instructions(runs)
    for rate in round_rates(runs):
        print_open_rounds(runs, rate)
    print_open_singles(runs)
    print_closed(runs)
    print_streams(runs, calls)
    print_chaos(runs, calls)
    print_peers(runs)


if __name__ == "__main__":
    main()
