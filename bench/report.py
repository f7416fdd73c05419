#!/usr/bin/env python3
"""Summarises the wrk runs of bench/load.sh into the results table and the ratios.

    report.py RESULTS.tsv

RESULTS.tsv has one line per wrk run: `scenario  target  round  wrk-output-file  cpu-seconds`.
With several rounds, each figure is the median over the rounds.
"""

import re
import statistics
import sys

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_hey(text):
    out = {"non3xx": 0, "errors": 0}
    for line in text.splitlines():
        s = line.split()
        if line.strip().startswith("Requests/sec:"):
            out["rps"] = float(s[1])
        elif len(s) == 4 and s[0].rstrip("%") in ("50", "99") and s[1] == "in":
            out["p" + s[0].rstrip("%")] = float(s[2]) * 1000
        elif re.match(r"\s+\[(\d+)\]\s+(\d+) responses", line):
            code, n = re.match(r"\s+\[(\d+)\]\s+(\d+) responses", line).groups()
            out["requests"] = out.get("requests", 0) + int(n)
            if not code.startswith(("2", "3")):
                out["non3xx"] += int(n)
        elif line.strip().startswith("[") and "\t" in line:
            out["errors"] += int(line.split("\t")[0].strip().strip("[]"))
    return out


def parse(path):
    out = {"non3xx": 0, "errors": 0}
    with open(path) as f:
        text = f.read()
    if "Summary:" in text:
        out = parse_hey(text)
        if "rps" not in out:
            raise SystemExit(f"cannot parse hey output {path}")
        return out
    with open(path) as f:
        for line in f:
            s = line.split()
            if line.startswith("Requests/sec:"):
                out["rps"] = float(s[1])
            elif len(s) == 2 and s[0] in ("50%", "99%"):
                out["p" + s[0][:-1]] = ms(s[1])
            elif "requests in" in line:
                out["requests"] = int(s[0])
            elif line.strip().startswith("Non-2xx or 3xx responses:"):
                out["non3xx"] = int(s[-1])
            elif line.strip().startswith("Socket errors:"):
                out["errors"] = sum(int(x.strip(",")) for x in s[3::2])
    if "rps" not in out:
        raise SystemExit(f"cannot parse wrk output {path}")
    return out


def main():
    runs = {}
    order = []
    with open(sys.argv[1]) as f:
        for line in f:
            scenario, target, _round, path, cpu = line.split()
            r = parse(path)
            r["cpu_us"] = float(cpu) * 1e6 / max(r.get("requests", 1), 1)
            key = (scenario, target)
            if key not in runs:
                order.append(key)
            runs.setdefault(key, []).append(r)

    def med(key, field):
        return statistics.median(r[field] for r in runs[key])

    print(f"{'scenario':<14} {'target':<22} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/req':>11} {'bad':>5}")
    for key in order:
        bad = sum(r["non3xx"] + r["errors"] for r in runs[key])
        # No latency at all: every request timed out.
        lat = lambda f: f"{med(key, f):>8.2f}" if med(key, f) > 0 else f"{'-':>8}"
        print(
            f"{key[0]:<14} {key[1]:<22} {med(key, 'rps'):>10.0f} {lat('p50')} "
            f"{lat('p99')} {med(key, 'cpu_us'):>11.1f} {bad:>5}"
        )
    print()
    for scenario in dict.fromkeys(k[0] for k in order):
        serve = (scenario, "serve")
        if serve not in runs:
            continue
        parts = []
        for target in [k[1] for k in order if k[0] == scenario and k[1] != "serve"]:
            other = (scenario, target)
            if med(other, "rps") <= 0:
                parts.append(f"serve/{target} n/a")
                continue
            ratio = med(serve, "rps") / med(other, "rps")
            # wrk reports no latency when every request timed out.
            p99 = med(other, "p99") and f"{med(serve, 'p99') / med(other, 'p99'):.2f}x"
            parts.append(f"serve/{target} req/s {ratio:.2f}x, p99 {p99 or 'n/a (timeouts)'}")
        print(f"{scenario}: " + "; ".join(parts))
        # Rounds alternate the targets, so a round's ratio compares runs seconds apart: on
        # shared cores the spread of these says more than the ratio of medians alone.
        for target in [k[1] for k in order if k[0] == scenario and k[1] in ("nginx", "serve-base")]:
            pairs = list(zip(runs[serve], runs[(scenario, target)]))
            if len(pairs) > 1 and all(o["rps"] > 0 for _, o in pairs):
                ratios = [s["rps"] / o["rps"] for s, o in pairs]
                listed = " ".join(f"{r:.2f}x" for r in ratios)
                print(f"  serve/{target} req/s per round: {listed} (median {statistics.median(ratios):.2f}x)")


if __name__ == "__main__":
    main()
