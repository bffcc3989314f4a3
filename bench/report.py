#!/usr/bin/env python3
"""Renders bench/load.sh's results.jsonl as Markdown tables (ratios against the baseline
measured in the same run).

    python3 bench/report.py OUT_DIR/results.jsonl

Repeated rounds (labels ending in " round N": the target rate's direct/gateway pairs and the
dead-primary chaos phase's secondary/gateway pairs) get a table of each round's added
p50/p99 (gateway minus the direct run of the same round) for both latency definitions —
from the intended send time (`latency`, no coordinated omission) and from the actual send
(`service_latency`) — and a summary: the median across rounds and the min–max range.
"""
import json
import re
import statistics
import sys

ROUND = re.compile(r"^(?P<base>.*) round (?P<n>\d+)$")


def load(path):
    runs, calls = {}, {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            row = json.loads(line)
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


def rounds_of(runs, direct_base, gateway_base):
    """[(n, direct run, gateway run)] for the rounds where both runs exist, by round."""
    found = {}
    for label, r in runs.items():
        m = ROUND.match(label)
        if m and m["base"] in (direct_base, gateway_base):
            found.setdefault(int(m["n"]), {})[m["base"]] = r
    return [(n, v[direct_base], v[gateway_base]) for n, v in sorted(found.items())
            if direct_base in v and gateway_base in v]


def spread(values):
    """"median (min – max)" of a list of numbers, or n/a if it is empty."""
    if not values:
        return "n/a"
    return f"**{statistics.median(values):+,.0f}** ({min(values):+,} … {max(values):+,})"


def rounds_table(title, runs, direct_base, gateway_base):
    rounds = rounds_of(runs, direct_base, gateway_base)
    if not rounds:
        return
    print(f"\n### {title}: {len(rounds)} rounds, `{direct_base}` then `{gateway_base}`\n")
    print("Added = gateway minus the direct run of the same round. \"From intended\": latency "
          "measured from each request's intended send time (no coordinated omission); "
          "\"service\": from the moment the request was actually sent.\n")
    print("| round | direct p50 / p99 (µs) | gateway p50 / p99 (µs) | added p50 / p99, from intended "
          "(µs) | added p50 / p99, service (µs) | send lag p50 / p99 (µs), direct | send lag p50 / p99 "
          "(µs), gateway | errors (direct / gw) | gateway CPU |")
    print("|---|---|---|---|---|---|---|---|---|")
    added = {k: [] for k in ("p50", "p99", "sp50", "sp99")}
    for n, d, g in rounds:
        a50, a99 = lat(g, "p50") - lat(d, "p50"), lat(g, "p99") - lat(d, "p99")
        added["p50"].append(a50)
        added["p99"].append(a99)
        if has(d, "service_latency") and has(g, "service_latency"):
            s50 = lat(g, "p50", "service_latency") - lat(d, "p50", "service_latency")
            s99 = lat(g, "p99", "service_latency") - lat(d, "p99", "service_latency")
            added["sp50"].append(s50)
            added["sp99"].append(s99)
            service = f"{s50:+,} / {s99:+,}"
        else:
            service = "n/a"
        print(f"| {n} | {us(lat(d,'p50'))} / {us(lat(d,'p99'))} | {us(lat(g,'p50'))} / "
              f"{us(lat(g,'p99'))} | {a50:+,} / {a99:+,} | {service} | {lag(d)} | {lag(g)} | "
              f"{d['errors']} / {g['errors']} | {cpu(g)} |")
    print(f"| **median (min … max)** | | | p50 {spread(added['p50'])}<br>p99 {spread(added['p99'])} "
          f"| p50 {spread(added['sp50'])}<br>p99 {spread(added['sp99'])} | | | | |")
    print(f"\nAdded p50 from intended: median {spread(added['p50'])} µs; added p99: median "
          f"{spread(added['p99'])} µs; service-latency added p50: median {spread(added['sp50'])} µs, "
          f"p99: median {spread(added['sp99'])} µs (over {len(rounds)} rounds; range min … max).")


def rss_mib(run):
    w = run.get("watched") or {}
    return f"{w.get('rss_peak_kib', 0) / 1024:.1f}"


def cpu(run):
    w = run.get("watched") or {}
    c = w.get("cpu_percent_of_one_core")
    return "n/a" if c is None else f"{c:.0f}%"


def main():
    runs, calls = load(sys.argv[1])
    rates = sorted({int(float(r["target_rate"])) for k, r in runs.items()
                    if k.startswith("gateway open")})
    pairs = []  # (row name, direct, gateway): single runs, then each round of a repeated rate
    for rate in rates:
        d, g = runs.get(f"direct open {rate}"), runs.get(f"gateway open {rate}")
        if d and g:
            pairs.append((str(rate), d, g))
        for n, d, g in rounds_of(runs, f"direct open {rate}", f"gateway open {rate}"):
            pairs.append((f"{rate} (round {n})", d, g))

    print("### Open loop (fixed rate): gateway vs direct-to-sim\n")
    print("| rate (req/s) | direct p50 / p90 / p99 / max (µs) | gateway p50 / p90 / p99 / max (µs) "
          "| added p50 / p99 (µs) | gateway achieved (req/s) | errors (direct / gw) | dropped "
          "| gateway CPU (of one core) | gateway peak RSS (MiB) | send lag p50 / p99 (µs), direct; gateway |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row, d, g in pairs:
        q = lambda r: " / ".join(us(lat(r, x)) for x in ("p50", "p90", "p99", "max"))
        print(f"| {row} | {q(d)} | {q(g)} | {lat(g,'p50')-lat(d,'p50'):,} / "
              f"{lat(g,'p99')-lat(d,'p99'):,} | {g['throughput_rps']:.0f} | {d['errors']} / "
              f"{g['errors']} | {d['dropped']} / {g['dropped']} | {cpu(g)} | {rss_mib(g)} "
              f"| {lag(d)}; {lag(g)} |")
    for rate in rates:
        rounds_table(f"Open loop at {rate} req/s, repeated", runs, f"direct open {rate}",
                     f"gateway open {rate}")
        # The same rounds through a gateway started with --worker-threads N (load.sh's
        # ROUND_WORKERS), if the run had one.
        for label in sorted({m.group("base") for m in map(ROUND.match, runs) if m}):
            if re.fullmatch(rf"gateway-\d+w open {rate}", label):
                workers = label.split("-")[1].split("w")[0]
                rounds_table(f"Open loop at {rate} req/s, repeated, gateway with "
                             f"--worker-threads {workers}", runs, f"direct open {rate}", label)

    print("\n### Closed loop (maximum throughput)\n")
    print("| target | workers | throughput (req/s) | ratio to direct | p50 / p99 / max (µs) | errors "
          "| CPU of the served process (of one core) | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|---|")
    direct = runs.get("direct closed 32")
    for label in ("direct closed 32", "gateway closed 32", "gateway closed 32 (again)",
                  "litellm closed 32"):
        r = runs.get(label)
        if not r:
            continue
        ratio = r["throughput_rps"] / direct["throughput_rps"] if direct else float("nan")
        print(f"| {label} | {r['concurrency']} | {r['throughput_rps']:.0f} | {ratio:.3f} | "
              f"{us(lat(r,'p50'))} / {us(lat(r,'p99'))} / {us(lat(r,'max'))} | {r['errors']} | "
              f"{cpu(r)} | {rss_mib(r)} |")

    print("\n### 1000 concurrent streams (20 chunks, 100 ms apart)\n")
    print("Upstream: how the primary was called, by HTTP version, as the simulated provider "
          "counted it (`gateway streams 1000 h2`: a gateway configured "
          "`http2_prior_knowledge: true` for its providers).\n")
    print("| target | streams completed | errors (broken streams) | p50 / p99 (µs) "
          "| peak RSS of the served process (MiB) | upstream calls by HTTP version |")
    print("|---|---|---|---|---|---|")
    for label in ("direct streams 1000", "gateway streams 1000", "gateway streams 1000 h2"):
        r = runs.get(label)
        if r:
            versions = (calls.get(label, {}).get("primary") or {}).get("http_versions") or {}
            versions = ", ".join(f"{v}: {n}" for v, n in sorted(versions.items())) or "n/a"
            print(f"| {label} | {r['ok']} | {r['errors']} {r['error_kinds'] or ''} | "
                  f"{us(lat(r,'p50'))} / {us(lat(r,'p99'))} | {rss_mib(r)} | {versions} |")

    print("\n### Chaos (secondary healthy; baseline: the secondary called directly, same rate)\n")
    print("| run | requests sent | success rate | attempts/request (x-brace-attempts) "
          "| provider calls/request | p50 / p90 / p99 / max (µs) | added p50 / p99 vs direct (µs) "
          "| primary calls (outcomes) |")
    print("|---|---|---|---|---|---|---|---|")
    chaos_rates = set()
    for label, r in runs.items():
        if not any(s in label for s in ("flaky30", "dead", "direct secondary")):
            continue
        if label.startswith(("prime ", "warmup ")):  # not measured runs
            continue
        m = ROUND.match(label)
        name, n = (m["base"], m["n"]) if m else (label, None)
        rate = name.split()[-1]
        chaos_rates.add(rate)
        # The baseline: the direct run of the same round, or of the same rate.
        base = runs.get(f"direct secondary {rate} round {n}" if n else f"direct secondary {rate}")
        c = calls.get(label, {})
        per = c.get("provider_calls", 0) / max(r["sent_total"], 1)
        att = r["attempts"]["mean"]
        att = "n/a" if att is None else f"{att:.3f}"
        added = (f"{lat(r,'p50')-lat(base,'p50'):,} / {lat(r,'p99')-lat(base,'p99'):,}"
                 if base and base is not r else "—")
        q = " / ".join(us(lat(r, x)) for x in ("p50", "p90", "p99", "max"))
        prim = c.get("primary", {})
        print(f"| {label} | {r['sent_total']} | {100*r['success_rate']:.2f}% | {att} | {per:.3f} | "
              f"{q} | {added} | {prim.get('calls','')} {json.dumps(prim.get('outcomes',''))} |")
    for rate in sorted(chaos_rates, key=lambda r: int(r) if r.isdigit() else 0):
        rounds_table(f"Dead primary at {rate} req/s, repeated (one gateway, primary already out)",
                     runs, f"direct secondary {rate}", f"gateway dead {rate}")

    ll = sorted({int(float(r["target_rate"])) for k, r in runs.items() if k.startswith("litellm open")})
    if ll:
        print("\n### LiteLLM proxy vs gateway (same run, same providers)\n")
        print("| rate (req/s) | direct p50 / p99 (µs) | gateway p50 / p99 (µs) | LiteLLM p50 / p99 (µs) "
              "| achieved gw / LiteLLM (req/s) | errors gw / LiteLLM | LiteLLM CPU | LiteLLM peak RSS (MiB) |")
        print("|---|---|---|---|---|---|---|---|")
        for rate in ll:
            d, g, l = (runs.get(f"{t} open {rate}") for t in ("direct", "gateway", "litellm"))
            if not (d and g and l):
                continue
            p = lambda r: f"{us(lat(r,'p50'))} / {us(lat(r,'p99'))}"
            print(f"| {rate} | {p(d)} | {p(g)} | {p(l)} | {g['throughput_rps']:.0f} / "
                  f"{l['throughput_rps']:.0f} | {g['errors']} / {l['errors']} | {cpu(l)} | {rss_mib(l)} |")
        g, l = runs.get("gateway closed 32 (again)") or runs.get("gateway closed 32"), runs.get("litellm closed 32")
        if g and l and l["throughput_rps"] > 0:
            print(f"\nClosed-loop maximum: gateway {g['throughput_rps']:.0f} req/s, LiteLLM "
                  f"{l['throughput_rps']:.0f} req/s: **{g['throughput_rps']/l['throughput_rps']:.0f}×**.")


if __name__ == "__main__":
    main()
