#!/usr/bin/env python3
"""Summarizes target/bench-peers.jsonl (from benches/run-peers.sh): per server and tool,
the median and min-max of MiB/s, client and server CPU seconds, peak RSS and bytes stored,
and the ratios the issue's targets are stated in. Prints Markdown."""
import json
import statistics
import sys
from collections import defaultdict

path = sys.argv[1] if len(sys.argv) > 1 else "target/bench-peers.jsonl"
import re

# bc prints ".36" for 0.36: make such numbers JSON.
rows = [
    json.loads(re.sub(r":(-?)\.", r":\g<1>0.", line))
    for line in open(path)
    if line.strip().startswith("{")
]
by = defaultdict(list)
changes = defaultdict(list)
for r in rows:
    if r["tool"] == "changed":
        changes[r["server"]].append(r)
    else:
        by[(r["server"], r["tool"])].append(r)


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def span(xs):
    return f"{min(xs):.1f}-{max(xs):.1f}" if xs else "-"


def m(server, tool, key):
    return med([r[key] for r in by.get((server, tool), [])])


servers = sorted({s for s, _ in by}, key=lambda s: (s != "garage", s))
for s in servers:
    print(f"\n### {s}\n")
    print("| tool | runs | MiB/s (median, min-max) | client CPU-s | CPU-s per GiB | server CPU-s | peak RSS MiB | stored MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for (srv, tool), rs in sorted(by.items(), key=lambda kv: kv[0][1]):
        if srv != s:
            continue
        speeds = [r["mib_s"] for r in rs]
        gib = rs[0]["logical_mib"] / 1024
        cpu = med([r["client_cpu_s"] for r in rs])
        print(
            f"| {tool} | {len(rs)} | {med(speeds):.1f} ({span(speeds)}) | {cpu:.2f} | {cpu / gib:.2f} | "
            f"{med([r['server_cpu_s'] for r in rs]):.2f} | {med([r['peak_rss_mib'] for r in rs]):.1f} | "
            f"{med([r['stored_bytes'] for r in rs]) / 2**20:.1f} |"
        )
    ceil = [r["detail"] for r in by.get((s, "ceiling"), [])]
    if ceil:
        put = med([c["put_mib_s"] for c in ceil])
        get = med([c["get_mib_s"] for c in ceil])
        print(f"\nceiling: put {put:.1f} MiB/s ({span([c['put_mib_s'] for c in ceil])}), "
              f"parallel get {get:.1f} MiB/s ({span([c['get_mib_s'] for c in ceil])})")
        full = by.get((s, "catena-full-zstd1"), [])
        if full:
            sent = med([r["stored_bytes"] / 2**20 / r["wall_s"] for r in full])
            print(f"\nratios (medians, same run):")
            print(f"- FULL zstd-1 / restic backup: {m(s, 'catena-full-zstd1', 'mib_s') / m(s, 'restic-backup', 'mib_s'):.2f}x (target >= 2)")
            print(f"- FULL zstd-1 / aws-cli: {m(s, 'catena-full-zstd1', 'mib_s') / m(s, 'aws-cli', 'mib_s'):.2f}x (target >= 1.2)")
            print(f"- FULL zstd-1 bytes sent per second / ceiling put: {sent:.1f} / {put:.1f} = {sent / put:.2f}x (target >= 0.85)")
            print(f"- FULL zstd-1 / best peer ({max(('rclone-default','rclone-tuned','aws-cli','restic-backup'), key=lambda t: m(s, t, 'mib_s'))}): "
                  f"{m(s, 'catena-full-zstd1', 'mib_s') / max(m(s, t, 'mib_s') for t in ('rclone-default','rclone-tuned','aws-cli','restic-backup')):.2f}x")
            print(f"- client CPU per GiB, FULL zstd-1: {m(s, 'catena-full-zstd1', 'client_cpu_s') / (full[0]['logical_mib'] / 1024):.2f} (target <= 2.0)")
            print(f"- DIFF / restic second backup: {m(s, 'catena-diff-zstd1', 'mib_s') / m(s, 'restic-backup-2', 'mib_s'):.2f}x (target >= 1.5)")
            print(f"- restore / restic restore: {m(s, 'catena-restore', 'mib_s') / m(s, 'restic-restore', 'mib_s'):.2f}x (target >= 1.5)")
            print(f"- restore / ceiling parallel get: {m(s, 'catena-restore', 'mib_s') / get:.2f}x (target >= 0.8)")
            print(f"- peak RSS FULL zstd-1: {m(s, 'catena-full-zstd1', 'peak_rss_mib'):.1f} MiB (target <= 8 x 8 + 32 = 96)")
    for c in changes.get(s, []):
        print(f"\nrun {c['run']}: changed {c['changed_bytes'] / 2**20:.1f} MiB, DIFF stored {c['diff_stored_bytes'] / 2**20:.1f} MiB")
scal = sorted((r for (srv, t), rs in by.items() for r in rs if t.startswith("scaling")), key=lambda r: r["logical_mib"])
if scal:
    print("\n### scaling (garage, FULL zstd-1)\n")
    print("| GiB | MiB/s | client CPU-s per GiB | peak RSS MiB |")
    print("|---|---|---|---|")
    for r in scal:
        print(f"| {r['logical_mib'] / 1024:g} | {r['mib_s']:.1f} | {r['client_cpu_s'] / (r['logical_mib'] / 1024):.2f} | {r['peak_rss_mib']:.1f} |")
