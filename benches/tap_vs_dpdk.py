#!/usr/bin/env python3
"""Side by side on the tap path: `vhost-compat serve --tap` against DPDK's
vhost PMD forwarding to its tap PMD (`--vdev net_vhost0 --vdev net_tap0
--forward-mode=io`), both directions, in one run.

- TX: testpmd's virtio-user driver in `txonly` -> backend -> tap. The host
  side of the tap is up and drops what it gets. Rate: the driver's Tx-pps
  (it can only send as fast as the backend frees transmit buffers).
- RX: a host-side generator (testpmd `net_af_packet` on the tap, `txonly`)
  -> tap -> backend -> virtio-user `rxonly`. Rate: the driver's Rx-pps.

The backend runs on core 0, the drivers' forwarding lcores on core 1 (in RX
runs the generator shares core 1 with the driver, equally for both
backends). Backends alternate within each round, several rounds; the
report gives medians and ratios ours/DPDK per direction and size, and with
`--pairs 2` also our rate with two queue pairs and its ratio to one.

Needs root (taps). Usage: benches/tap_vs_dpdk.py [--rounds 3] [--seconds 8]
[--sizes 64,512,1500] [--pairs 2] [--out benches/results]
Writes OUT/tap.json and OUT/tap.svg and prints a table.
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benches"))
from plot import svg_lines  # noqa: E402
from sidebyside import forget_prefix, hugepages, median, memory_args, stop, testpmd_rates, wait_for  # noqa: E402


def link_exists(name: str) -> bool:
    return pathlib.Path(f"/sys/class/net/{name}").exists()


def wait_link(name: str, seconds: float) -> None:
    deadline = time.time() + seconds
    while not link_exists(name):
        if time.time() > deadline:
            raise RuntimeError(f"tap {name} never appeared")
        time.sleep(0.05)
    subprocess.run(["ip", "link", "set", name, "up"], check=False)


def testpmd(prefix, cores, vdevs, app, huge, frontend):
    cmd = ["dpdk-testpmd"] + cores + ["--no-pci", f"--file-prefix={prefix}"] + memory_args(huge, frontend)
    for v in vdevs:
        cmd += ["--vdev", v]
    cmd += ["--"] + app
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def start_backend(kind, binary, sock, tap, pairs, huge, prefix):
    if kind == "vhost-compat":
        proc = subprocess.Popen(
            ["taskset", "-c", "0", binary, "serve", "--socket", str(sock), "--tap", tap,
             "--queue-pairs", str(pairs), "--poll", "always"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(sock, 10)
    else:
        proc = testpmd(
            prefix, ["-l", "0,1", "--main-lcore", "1"],
            [f"net_vhost0,iface={sock},queues={pairs}", f"net_tap0,iface={tap}"],
            ["--forward-mode=io", "--nb-cores=1", "--stats-period", "100",
             f"--rxq={pairs}", f"--txq={pairs}"],
            huge, frontend=False,
        )
        wait_for(sock, 60)
    wait_link(tap, 30)
    return proc


def driver(sock, mode, size, pairs, huge, prefix):
    return testpmd(
        prefix, ["-l", "0,1"],
        [f"net_virtio_user0,path={sock},queues={pairs},queue_size=1024,mrg_rxbuf=1,in_order=0"],
        [f"--forward-mode={mode}", f"--txpkts={size}", "--nb-cores=1", "--stats-period", "1",
         f"--rxq={pairs}", f"--txq={pairs}"],
        huge, frontend=True,
    )


def generator(tap, size, huge, prefix):
    return testpmd(
        prefix, ["-l", "0,1"],
        [f"net_af_packet0,iface={tap},qpairs=1"],
        ["--forward-mode=txonly", f"--txpkts={size}", "--nb-cores=1", "--stats-period", "100"],
        huge, frontend=False,
    )


def measure(kind, direction, size, pairs, args, huge, tag):
    with tempfile.TemporaryDirectory(prefix="tapsbs-") as tmp:
        sock = pathlib.Path(tmp) / "port.sock"
        tap = f"tsb{os.getpid() % 10000}{tag[-4:]}"[:15]
        procs = []
        prefixes = [f"{tag}b", f"{tag}d", f"{tag}g"]
        try:
            procs.append(start_backend(kind, args.binary, sock, tap, pairs, huge, prefixes[0]))
            mode = "txonly" if direction == "tx" else "rxonly"
            d = driver(sock, mode, size, pairs, huge, prefixes[1])
            procs.append(d)
            if direction == "rx":
                time.sleep(2)
                procs.append(generator(tap, size, huge, prefixes[2]))
            time.sleep(args.seconds + 3)
            out = stop(d)
            samples = testpmd_rates(out, "Tx-pps" if direction == "tx" else "Rx-pps")
            if not samples:
                raise RuntimeError(f"{kind} {direction} {size}: no traffic:\n{out[-2000:]}")
            return median(samples)
        finally:
            for p in reversed(procs):
                stop(p)
            for prefix in prefixes:
                forget_prefix(prefix)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--sizes", default="64,512,1500")
    parser.add_argument("--pairs", type=int, default=0, help="also measure ours with this many queue pairs")
    parser.add_argument("--out", default=str(ROOT / "benches" / "results"))
    parser.add_argument("--binary", default=str(ROOT / "target" / "release" / "vhost-compat"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("taps need root", file=sys.stderr)
        return 2
    if not shutil.which("dpdk-testpmd"):
        print("dpdk-testpmd not found: install the Debian package dpdk-dev", file=sys.stderr)
        return 2
    if not os.path.exists(args.binary):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    huge = hugepages()
    print(f"memory: {'hugepages' if huge else 'no hugepages (--no-huge)'}; "
          f"{args.rounds} rounds x {args.seconds} s per backend, direction and size")
    kinds = ["vhost-compat", "dpdk"]
    results = {(k, d, s): [] for k in kinds for d in ("tx", "rx") for s in sizes}
    scaled = {(d, s): [] for d in ("tx", "rx") for s in sizes}
    for r in range(args.rounds):
        for direction in ("tx", "rx"):
            for size in sizes:
                order = kinds if (r + size) % 2 == 0 else list(reversed(kinds))
                for kind in order:
                    tag = f"tsb{os.getpid()}{r}{direction}{size}{kind[0]}"
                    pps = measure(kind, direction, size, 1, args, huge, tag)
                    results[(kind, direction, size)].append(pps)
                    print(f"  round {r + 1} {direction} {size:5} B {kind:13} {pps / 1e6:6.3f} Mpps", flush=True)
                if args.pairs > 1:
                    tag = f"tsb{os.getpid()}{r}{direction}{size}p"
                    pps = measure("vhost-compat", direction, size, args.pairs, args, huge, tag)
                    scaled[(direction, size)].append(pps)
                    print(f"  round {r + 1} {direction} {size:5} B vhost-compat x{args.pairs} pairs {pps / 1e6:6.3f} Mpps",
                          flush=True)
    summary = []
    print(f"\n{'dir':>3} {'size':>6} {'vhost-compat':>13} {'DPDK+tap':>10} {'ratio':>6}"
          + (f" {f'{args.pairs} pairs':>10} {'x1 pair':>8}" if args.pairs > 1 else ""))
    for direction in ("tx", "rx"):
        for size in sizes:
            ours = median(results[("vhost-compat", direction, size)])
            theirs = median(results[("dpdk", direction, size)])
            row = {"direction": direction, "size": size, "vhost_compat_mpps": ours / 1e6,
                   "dpdk_mpps": theirs / 1e6, "ratio": ours / theirs if theirs else None}
            line = f"{direction:>3} {size:>5}B {ours / 1e6:>9.3f} Mpps {theirs / 1e6:>6.3f} Mpps {row['ratio']:>6.2f}"
            if args.pairs > 1:
                multi = median(scaled[(direction, size)])
                row["multi_pair_mpps"] = multi / 1e6
                row["multi_pair_ratio"] = multi / ours if ours else None
                line += f" {multi / 1e6:>7.3f} Mpps {row['multi_pair_ratio']:>8.2f}"
            summary.append(row)
            print(line)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "test": "testpmd virtio-user txonly/rxonly through the backend to/from a host tap",
        "hugepages": huge,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "pairs": args.pairs,
        "samples_pps": {f"{k}/{d}/{s}": v for (k, d, s), v in results.items()},
        "medians": summary,
    }
    (out / "tap.json").write_text(json.dumps(doc, indent=2) + "\n")
    series = {}
    for direction in ("tx", "rx"):
        rows = [r for r in summary if r["direction"] == direction]
        series[f"vhost-compat --tap, {direction.upper()}"] = [r["vhost_compat_mpps"] for r in rows]
        series[f"DPDK vhost + net_tap, {direction.upper()}"] = [r["dpdk_mpps"] for r in rows]
    (out / "tap.svg").write_text(svg_lines(
        title="Tap path: testpmd virtio-user, 1 queue pair (median Mpps)",
        x_label="packet size (bytes)", y_label="Mpps", xs=sizes, series=series))
    print(f"\nwrote {out / 'tap.json'} and {out / 'tap.svg'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
