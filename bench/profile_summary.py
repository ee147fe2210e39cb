"""Summarize a ``py-spy record --format raw`` (collapsed stacks) profile of the server.

``python -m bench.profile_summary FILE [--top 25]`` prints where the samples fall:
self time by package (the innermost frame's package), inclusive time of PocketPay's own
functions (a function is counted once per sample even if recursive), and the hottest leaves.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::(?P<line>\d+))?\)$")


def package_of(path: str) -> str:
    """A short package name for a source path (``sqlalchemy``, ``pocketpay.ledger``, ...).

    py-spy prints paths relative to their sys.path entry (``sqlalchemy/engine/base.py``)."""
    for marker in ("site-packages/", "/src/", "/lib/python3.11/", "/lib/python3.12/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    parts = path.split("/")
    if parts[0] == "pocketpay" and len(parts) > 1:
        return "pocketpay." + parts[1].removesuffix(".py")
    if path.startswith("<frozen"):
        return "importlib"
    return parts[0].removesuffix(".py") or "?"


def parse(path: Path) -> list[tuple[list[tuple[str, str]], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        frames = []
        for raw in stack.split(";"):
            m = FRAME.match(raw)
            if m:
                frames.append((m["func"], m["file"]))
            else:
                frames.append((raw, ""))
        stacks.append((frames, int(count)))
    return stacks


def summarize(path: Path, top: int = 25, main_thread: bool = False) -> str:
    stacks = parse(path)
    if main_thread:  # the event loop's thread only: drop stacks rooted in threading._bootstrap
        stacks = [(f, c) for f, c in stacks if f and "threading" not in f[0][1]]
    total = sum(c for _, c in stacks) or 1
    self_pkg: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    incl_pkg: Counter[str] = Counter()
    incl_fn: Counter[str] = Counter()
    for frames, count in stacks:
        if not frames:
            continue
        func, file = frames[-1]
        self_pkg[package_of(file)] += count
        leaf[f"{func} ({package_of(file)})"] += count
        for p in {package_of(f) for _, f in frames}:
            incl_pkg[p] += count
        for name in {f"{fn} ({package_of(f)})" for fn, f in frames if "pocketpay" in f}:
            incl_fn[name] += count

    def block(title: str, counter: Counter[str], n: int) -> list[str]:
        out = [f"\n{title}"]
        for name, c in counter.most_common(n):
            out.append(f"  {100 * c / total:5.1f}%  {name}")
        return out

    scope = "main thread" if main_thread else "all threads"
    lines = [f"{path}: {total} samples, {scope} (busy time only; idle waits are not sampled)"]
    lines += block("self time by package (innermost frame)", self_pkg, top)
    lines += block("inclusive time by package (on the stack)", incl_pkg, top)
    lines += block("inclusive time of PocketPay functions", incl_fn, top)
    lines += block("hottest innermost functions", leaf, top)
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("file", type=Path)
    p.add_argument("--top", type=int, default=25)
    p.add_argument(
        "--main-thread",
        action="store_true",
        help="only the main (event loop) thread; worker threads waiting on a lock or a queue "
        "are often sampled as busy",
    )
    args = p.parse_args()
    print(summarize(args.file, args.top, args.main_thread))


if __name__ == "__main__":
    main()
