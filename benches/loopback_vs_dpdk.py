#!/usr/bin/env python3
"""Side by side: DPDK testpmd's virtio-user driver against `vhost-compat serve
--loopback` and against DPDK's own vhost PMD, in one run.

The frontend is the same for both (`--forward-mode=mac --tx-first`: it sends
one burst and forwards whatever comes back). Each backend echoes packets:
ours with `serve --loopback --poll always`, DPDK's with
`--vdev net_vhost0 --forward-mode=io`. Backends alternate within each
round, several rounds, and the report gives per-size medians and the ratio
ours/DPDK. The backend runs on core 0 and the frontend's forwarding lcore
on core 1, so neither shares a core with the other's busy loop.

Hugepages are used when they can be set up (root): both sides then map
guest memory from hugetlbfs, as in production. Otherwise `--no-huge`.

Usage: benches/loopback_vs_dpdk.py [--rounds 3] [--seconds 8]
       [--sizes 64,512,1500] [--out benches/results]
Writes OUT/loopback.json and OUT/loopback.svg and prints a table.
"""

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benches"))
from plot import svg_lines  # noqa: E402
from sidebyside import forget_prefix, hugepages, memory_args, stop, testpmd_rates, wait_for  # noqa: E402


def start_ours(binary: str, sock: pathlib.Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["taskset", "-c", "0", binary, "serve", "--socket", str(sock), "--poll", "always"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(sock, 10)
    return proc


def start_dpdk(sock: pathlib.Path, huge: bool, prefix: str) -> subprocess.Popen:
    cmd = (
        ["dpdk-testpmd", "-l", "0,1", "--main-lcore", "1", "--no-pci", f"--file-prefix={prefix}"]
        + memory_args(huge, frontend=False)
        + ["--vdev", f"net_vhost0,iface={sock},queues=1", "--"]
        + ["--forward-mode=io", "--nb-cores=1", "--stats-period", "100"]
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(sock, 60)
    return proc


def run_frontend(sock: pathlib.Path, size: int, seconds: int, huge: bool, prefix: str) -> float:
    """Runs the virtio-user frontend and returns its median Rx-pps over the
    run, leaving out the first samples (start-up)."""
    cmd = (
        ["dpdk-testpmd", "-l", "0,1", "--no-pci", f"--file-prefix={prefix}"]
        + memory_args(huge, frontend=True)
        + ["--vdev", f"net_virtio_user0,path={sock},queues=1,queue_size=1024,mrg_rxbuf=1,in_order=0", "--"]
        + ["--forward-mode=mac", "--tx-first", f"--txpkts={size}", "--nb-cores=1", "--stats-period", "1"]
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(seconds + 3)
    out = stop(proc)
    samples = testpmd_rates(out, "Rx-pps")
    if not samples:
        raise RuntimeError("the frontend moved no packets:\n" + out[-2000:])
    return statistics.median(samples)


def measure(backend: str, binary: str, size: int, args, huge: bool, round_no: int) -> float:
    with tempfile.TemporaryDirectory(prefix="sbs-") as tmp:
        sock = pathlib.Path(tmp) / "port.sock"
        tag = f"sbs{os.getpid()}r{round_no}s{size}{backend}"
        if backend == "vhost-compat":
            server = start_ours(binary, sock)
        else:
            server = start_dpdk(sock, huge, tag + "b")
        try:
            return run_frontend(sock, size, args.seconds, huge, tag + "f")
        finally:
            stop(server)
            for prefix in (tag + "b", tag + "f"):
                forget_prefix(prefix)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--sizes", default="64,512,1500")
    parser.add_argument("--out", default=str(ROOT / "benches" / "results"))
    parser.add_argument("--binary", default=str(ROOT / "target" / "release" / "vhost-compat"))
    args = parser.parse_args()
    if not shutil.which("dpdk-testpmd"):
        print("dpdk-testpmd not found: install the Debian package dpdk-dev", file=sys.stderr)
        return 2
    if not os.path.exists(args.binary):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    huge = hugepages()
    print(f"memory: {'hugepages' if huge else 'no hugepages (--no-huge)'}; "
          f"{args.rounds} rounds x {args.seconds} s per backend and size")
    backends = ["vhost-compat", "dpdk"]
    results = {b: {s: [] for s in sizes} for b in backends}
    for r in range(args.rounds):
        for size in sizes:
            # Alternate who goes first, so drift over time hits both.
            order = backends if (r + size) % 2 == 0 else list(reversed(backends))
            for backend in order:
                pps = measure(backend, args.binary, size, args, huge, r)
                results[backend][size].append(pps)
                print(f"  round {r + 1} {size:5} B {backend:13} {pps / 1e6:6.2f} Mpps", flush=True)
    summary = []
    print(f"\n{'size':>6} {'vhost-compat':>13} {'DPDK vhost':>11} {'ratio':>6}  {'per-round ratios (median, range)':>30}")
    for size in sizes:
        ours = statistics.median(results["vhost-compat"][size])
        theirs = statistics.median(results["dpdk"][size])
        ratio = ours / theirs if theirs else float("inf")
        # Both backends of a round ran back to back, under the same machine
        # conditions: their ratio is steadier than the ratio of medians.
        per_round = [o / d for o, d in zip(results["vhost-compat"][size], results["dpdk"][size]) if d]
        summary.append({
            "size": size,
            "vhost_compat_mpps": ours / 1e6,
            "dpdk_mpps": theirs / 1e6,
            "ratio": ratio,
            "per_round_ratio_median": statistics.median(per_round),
            "per_round_ratio_range": [min(per_round), max(per_round)],
        })
        print(f"{size:>5}B {ours / 1e6:>10.2f} Mpps {theirs / 1e6:>7.2f} Mpps {ratio:>6.2f}  "
              f"{statistics.median(per_round):>12.2f} ({min(per_round):.2f}-{max(per_round):.2f})")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "test": "testpmd virtio-user mac --tx-first against an echoing backend, 1 queue pair",
        "hugepages": huge,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "samples_pps": {b: {str(s): v for s, v in d.items()} for b, d in results.items()},
        "medians": summary,
    }
    (out / "loopback.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "loopback.svg").write_text(
        svg_lines(
            title="Loopback: testpmd virtio-user, 1 queue pair (median Mpps)",
            x_label="packet size (bytes)",
            y_label="Mpps",
            xs=sizes,
            series={
                "vhost-compat serve --loopback": [s["vhost_compat_mpps"] for s in summary],
                "DPDK 22.11 vhost PMD (io)": [s["dpdk_mpps"] for s in summary],
            },
        )
    )
    print(f"\nwrote {out / 'loopback.json'} and {out / 'loopback.svg'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
