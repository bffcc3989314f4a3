#!/usr/bin/env python3
"""Renders bench/load.sh's results.jsonl as Markdown tables (ratios against the baseline
measured in the same run).

    python3 bench/report.py OUT_DIR/results.jsonl
"""
import json
import sys


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


def lat(run, q):
    return run["latency"][f"{q}_us"]


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

    print("### Open loop (fixed rate): gateway vs direct-to-sim\n")
    print("| rate (req/s) | direct p50 / p90 / p99 / max (µs) | gateway p50 / p90 / p99 / max (µs) "
          "| added p50 / p99 (µs) | gateway achieved (req/s) | errors (direct / gw) | dropped "
          "| gateway CPU (of one core) | gateway peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for rate in rates:
        d, g = runs.get(f"direct open {rate}"), runs.get(f"gateway open {rate}")
        if not d or not g:
            continue
        q = lambda r: " / ".join(us(lat(r, x)) for x in ("p50", "p90", "p99", "max"))
        print(f"| {rate} | {q(d)} | {q(g)} | {lat(g,'p50')-lat(d,'p50'):,} / "
              f"{lat(g,'p99')-lat(d,'p99'):,} | {g['throughput_rps']:.0f} | {d['errors']} / "
              f"{g['errors']} | {d['dropped']} / {g['dropped']} | {cpu(g)} | {rss_mib(g)} |")

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
    print("| target | streams completed | errors | p50 / p99 (µs) | peak RSS of the served process (MiB) |")
    print("|---|---|---|---|---|")
    for label in ("direct streams 1000", "gateway streams 1000"):
        r = runs.get(label)
        if r:
            print(f"| {label} | {r['ok']} | {r['errors']} {r['error_kinds'] or ''} | "
                  f"{us(lat(r,'p50'))} / {us(lat(r,'p99'))} | {rss_mib(r)} |")

    print("\n### Chaos (secondary healthy; baseline: the secondary called directly, same rate)\n")
    print("| run | requests sent | success rate | attempts/request (x-brace-attempts) "
          "| provider calls/request | p50 / p90 / p99 / max (µs) | added p50 / p99 vs direct (µs) "
          "| primary calls (outcomes) |")
    print("|---|---|---|---|---|---|---|---|")
    for label, r in runs.items():
        if not any(s in label for s in ("flaky30", "dead", "direct secondary")):
            continue
        rate = label.split()[-1]
        base = runs.get(f"direct secondary {rate}")
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
