#!/usr/bin/env python3
"""Footprint of an idle port: time from exec to a listening socket, and
resident memory with no frontend connected.

Usage: benches/footprint.py [--runs 20] [--binary target/release/vhost-compat]
Prints the median and worst start-up time and the idle RSS.
"""

import argparse
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def listening(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def rss_kib(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--binary", default=str(ROOT / "target" / "release" / "vhost-compat"))
    args = parser.parse_args()
    if not os.path.exists(args.binary):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    starts, rss = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            sock = os.path.join(tmp, "port.sock")
            t0 = time.perf_counter()
            proc = subprocess.Popen([args.binary, "serve", "--socket", sock],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while not listening(sock):
                if proc.poll() is not None:
                    print("serve exited", file=sys.stderr)
                    return 1
                time.sleep(0.0001)
            starts.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.5)
            rss.append(rss_kib(proc.pid))
            proc.terminate()
            proc.wait()
    print(f"start to listening: median {statistics.median(starts):.2f} ms, worst {max(starts):.2f} ms "
          f"over {args.runs} runs")
    print(f"idle RSS: median {statistics.median(rss) / 1024:.2f} MiB, worst {max(rss) / 1024:.2f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
