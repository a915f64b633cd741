"""Coverage-guided fuzzing of the targets in :mod:`fuzz.targets` with atheris (libFuzzer).

    pip install -e ".[fuzz]"
    python fuzz/run.py --list
    python fuzz/run.py TARGET [libFuzzer flags, e.g. -runs=100000 -max_total_time=60]
    python fuzz/run.py --all --seconds 60 [--only a,b] [--json results.json]

Each target starts from its seeds (valid inputs) plus what earlier runs kept in
``fuzz/work/<target>/corpus``; a crash (an exception that is not the parser's documented error)
is written to ``fuzz/work/<target>/crash-*`` with its traceback on stderr. libFuzzer ends a run
with ``Done N runs in S second(s)``, a crash with ``fuzz: TARGET: crash after N inputs``: the
counts the hardening notes quote.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(REPO, "fuzz", "work")
DONE_RE = re.compile(r"^Done (\d+) runs in (\d+) second", re.M)
CRASH_RE = re.compile(r"^fuzz: \S+: crash after (\d+) inputs", re.M)

if REPO not in sys.path:
    sys.path.insert(0, REPO)


def _seed_corpus(name: str, seeds: list) -> str:
    corpus = os.path.join(WORK, name, "corpus")
    os.makedirs(corpus, exist_ok=True)
    for seed in seeds:
        path = os.path.join(corpus, "seed-" + hashlib.sha1(seed).hexdigest())
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(seed)
    return corpus


def fuzz_one(name: str, libfuzzer_args: list) -> None:
    """Fuzz one target in this process; libFuzzer ends it (exit code 0, or 1 on a crash)."""
    import atheris

    from fuzz import targets

    target, seeds, packages = targets.TARGETS[name]
    stack = contextlib.ExitStack()
    # The parsers are imported (and so instrumented for coverage) when the target is entered.
    with atheris.instrument_imports(include=list(packages)):
        run = stack.enter_context(target())
        corpus = _seed_corpus(name, seeds())
    tried = [0]

    def one_input(data: bytes) -> None:
        tried[0] += 1
        try:
            run(data)
        except BaseException:
            print(f"fuzz: {name}: crash after {tried[0]} inputs", file=sys.stderr, flush=True)
            raise

    artifacts = os.path.join(WORK, name) + os.sep
    args = [sys.argv[0], f"-artifact_prefix={artifacts}", "-timeout=20", *libfuzzer_args, corpus]
    atheris.Setup(args, one_input)
    atheris.Fuzz()


def fuzz_all(names: list, seconds: int) -> list:
    """Each target in a child process for ``seconds``: [{target, inputs, seconds, crashed}]."""
    results = []
    for name in names:
        cmd = [sys.executable, os.path.abspath(__file__), name, f"-max_total_time={seconds}"]
        started = time.monotonic()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        elapsed = time.monotonic() - started
        done, crash = DONE_RE.search(proc.stdout), CRASH_RE.search(proc.stdout)
        inputs = int(done.group(1)) if done else int(crash.group(1)) if crash else 0
        crashed = proc.returncode != 0
        results.append({"target": name, "inputs": inputs, "seconds": elapsed, "crashed": crashed})
        print(f"{name:14s} {inputs:>9d} inputs {elapsed:7.1f} s  {'CRASH' if crashed else 'ok'}")
        if crashed:
            print(proc.stdout[-4000:])
        sys.stdout.flush()
    return results


def main() -> None:
    from fuzz import targets

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", nargs="?", choices=sorted(targets.TARGETS))
    parser.add_argument("--list", action="store_true", help="list the targets")
    parser.add_argument("--all", action="store_true", help="fuzz every target in turn")
    parser.add_argument("--seconds", type=int, default=60, help="per target, with --all")
    parser.add_argument("--only", help="with --all: these targets (comma-separated)")
    parser.add_argument("--json", help="with --all: write the results here")
    args, rest = parser.parse_known_args()
    if args.list:
        for name, (target, _, _) in targets.TARGETS.items():
            print(f"{name:14s} {(target.__doc__ or '').split(chr(10))[0]}")
        return
    if args.all:
        names = args.only.split(",") if args.only else list(targets.TARGETS)
        unknown = sorted(set(names) - set(targets.TARGETS))
        if unknown:
            parser.error(f"unknown targets: {', '.join(unknown)}")
        results = fuzz_all(names, args.seconds)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
        sys.exit(1 if any(r["crashed"] for r in results) else 0)
    if args.target is None:
        parser.error("give a TARGET, --all or --list")
    fuzz_one(args.target, rest)


if __name__ == "__main__":
    main()
