"""Start-up of the embedded server with and without the extension pack (pgcrypto, uuid-ossp), in one run.

    .venv/bin/python bench/embedded.py [--repeat 5]

A cluster is made once; then each round stops it and times ``embedded.ensure_running`` (the pack's
check and the server's start) with the pack installed, and a bare ``pg_ctl start`` of the same cluster
without the extension options (the floor). The one-time fetch of the pack is timed on its own, into a
fresh cache folder. Figures are medians; ratios are against the floor.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pgshift.databases import embedded, extensions, pgbin  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="pgshift-bench-embedded-", dir="/tmp"))
    folder.chmod(0o755)
    fetch_dir = Path(tempfile.mkdtemp(prefix="pgshift-bench-pack-")) / "pack"
    try:
        started = time.perf_counter()
        why = extensions.ensure(fetch_dir)
        fetch = time.perf_counter() - started
        extensions.ensure()
        embedded.ensure_running(folder)
        user = embedded._system_user()
        ours, bare = [], []
        for _ in range(args.repeat):
            embedded.stop(folder)
            started = time.perf_counter()
            embedded.ensure_running(folder)
            ours.append(time.perf_counter() - started)
            embedded.stop(folder)
            socket_dir = embedded._socket_dir(folder, user)
            started = time.perf_counter()
            embedded._run([str(pgbin.program("pg_ctl")), "-D", str(folder / "cluster"), "-l",
                           str(folder / "server.log"), "-w", "-t", "60", "-o",
                           f"-c listen_addresses='' -k '{socket_dir}' -p 5432", "start"], user, "start")
            bare.append(time.perf_counter() - started)
        embedded.stop(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(fetch_dir.parent, ignore_errors=True)
    floor = statistics.median(bare)
    print(f"medians of {args.repeat} starts of one cluster")
    print(f"{'case':<44}{'seconds':>9}{'ratio':>8}")
    print(f"{'pg_ctl start, no extension options (floor)':<44}{floor:>9.3f}{1.0:>7.2f}x")
    mine = statistics.median(ours)
    print(f"{'ensure_running, pgcrypto + uuid-ossp':<44}{mine:>9.3f}{mine / floor:>7.2f}x")
    print(f"{'one-time fetch of the pack (once per machine)':<44}{fetch:>9.3f}" + (f"  ({why})" if why else ""))


if __name__ == "__main__":
    main()
