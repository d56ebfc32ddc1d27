"""Wall time of a one-shot ``ngctl -s SOCK list`` against a running daemon, against a bare
``python -c "import trio"``, interleaved round by round. Target (issue 4): at most 1.5x.

    .venv/bin/python bench/ngctl_startup.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sock = str(Path(tmp) / "ng.sock")
        daemon = subprocess.Popen([sys.executable, "-m", "netgraph", "serve", "--socket", sock])
        try:
            deadline = time.monotonic() + 20
            while not os.path.exists(sock):
                if time.monotonic() > deadline or daemon.poll() is not None:
                    raise SystemExit("the daemon did not start")
                time.sleep(0.05)
            trio_only = [sys.executable, "-c", "import trio"]
            ngctl = [sys.executable, "-m", "ngctl", "-s", sock, "list"]
            wall(ngctl)  # warm the file cache for both
            bare, ours = [], []
            for _ in range(rounds):
                bare.append(wall(trio_only))
                ours.append(wall(ngctl))
        finally:
            daemon.terminate()
            daemon.wait(10)
    b, o = statistics.median(bare), statistics.median(ours)
    print(f"{rounds} interleaved rounds; median wall time")
    print(f'  python -c "import trio"     {b * 1000:7.1f} ms')
    print(f"  ngctl -s SOCK list          {o * 1000:7.1f} ms")
    print(f"  ratio                       {o / b:7.2f}x   (target <= 1.50x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    main(parser.parse_args().rounds)
