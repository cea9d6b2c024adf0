"""Helpers shared by the side-by-side benchmark scripts: hugepage set-up,
testpmd command lines, and starting and stopping processes."""

import os
import pathlib
import re
import shutil
import signal
import statistics
import subprocess
import time


def hugepages() -> bool:
    """True if 2 MiB hugepages are mounted with at least 1 GiB free,
    after trying to set that up."""
    meminfo = pathlib.Path("/proc/meminfo").read_text()
    free = int(re.search(r"HugePages_Free:\s+(\d+)", meminfo).group(1))
    if free < 512 and os.geteuid() == 0:
        try:
            pathlib.Path("/proc/sys/vm/nr_hugepages").write_text("1024\n")
        except OSError:
            return False
    if os.geteuid() == 0 and not os.path.ismount("/dev/hugepages"):
        os.makedirs("/dev/hugepages", exist_ok=True)
        subprocess.run(["mount", "-t", "hugetlbfs", "nodev", "/dev/hugepages"], check=False)
    meminfo = pathlib.Path("/proc/meminfo").read_text()
    free = int(re.search(r"HugePages_Free:\s+(\d+)", meminfo).group(1))
    return free >= 512 and os.path.ismount("/dev/hugepages")


def memory_args(huge: bool, frontend: bool) -> list:
    if not huge:
        return ["--no-huge", "-m", "1024"]
    args = ["-m", "512"]
    if frontend:
        # virtio-user shares its memory as few files as possible, else the
        # backend sees more regions than vhost-user allows.
        args.append("--single-file-segments")
    return args


def wait_for(path: pathlib.Path, seconds: float) -> None:
    deadline = time.time() + seconds
    while not path.exists():
        if time.time() > deadline:
            raise RuntimeError(f"{path} never appeared")
        time.sleep(0.05)


def stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    out = proc.stdout.read() if proc.stdout else ""
    return out


def forget_prefix(prefix: str) -> None:
    """Removes what a testpmd run under `--file-prefix=prefix` leaves when it
    had to be killed: its runtime directory and its hugepage files, which
    would otherwise starve the next runs of hugepages."""
    shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)
    for f in pathlib.Path("/dev/hugepages").glob(f"{prefix}map_*"):
        f.unlink(missing_ok=True)


def testpmd_rates(output: str, key: str) -> list:
    """The periodic rates testpmd printed for `key` (e.g. "Rx-pps"),
    without the first samples, which cover start-up."""
    rates = [int(m) for m in re.findall(key + r":\s+(\d+)", output)]
    return [r for r in rates[2:] if r > 0]


def median(values):
    return statistics.median(values) if values else 0.0
