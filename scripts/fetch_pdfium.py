#!/usr/bin/env python3
"""Fetch a pinned, SHA-256 verified libpdfium.so for the jobserver.

What
    Downloads the pypdfium2 wheel for the target platform with
    ``python3 -m pip download`` (download only: pip installs nothing),
    checks the wheel's SHA-256 against a hash pinned in this file, extracts
    just ``pypdfium2_raw/libpdfium.so`` to ``<dest>/libpdfium.so`` (written
    under a temporary name, then moved into place with os.replace) and
    records its SHA-256 in ``<dest>/libpdfium.so.sha256`` (sha256sum format).

Why
    The server renders PDFs with pdfium through the ``pdfium-render`` crate,
    which loads libpdfium.so at run time. pdfium is neither on crates.io nor
    in Debian; the pypdfium2 wheels on PyPI ship a prebuilt shared library,
    and PyPI is reachable with nothing but python3 and pip. build.rs runs
    this script so a fresh checkout gets the library without manual steps.

Pinned version
    pypdfium2 == 5.15.2, which bundles pdfium 159.0.8149.0 (build 8149).
    Wheels: manylinux_2_17 (glibc) and musllinux_1_2 (musl), x86_64 and
    aarch64. Other platforms are refused. To move to another version,
    update PYPDFIUM2_VERSION, PDFIUM_BUILD and every hash in WHEELS (take them
    from https://pypi.org/simple/pypdfium2/ and confirm them by downloading).

Behaviour
    Idempotent: if ``<dest>/libpdfium.so`` is present, the stamp matches the
    pinned hash and the file's own SHA-256 matches the stamp, it exits 0
    without touching the network. Otherwise it fetches. Exit status is 0 on
    success, 1 on any failure (pip missing, no network, hash mismatch,
    unsupported platform), 2 on bad usage. One line goes to stderr either way.
    pip is run as a plain subprocess, so PIP_INDEX_URL, PIP_EXTRA_INDEX_URL,
    PIP_FIND_LINKS, PIP_CERT, proxies and pip.conf apply as usual.

Usage
    python3 scripts/fetch_pdfium.py [DEST] [--arch x86_64|aarch64]
                                           [--libc glibc|musl]
    DEST defaults to ``.pdfium`` under the repository root.
"""

import argparse
import glob
import platform
import sys
import tempfile
import time
from pathlib import Path

from pinned_wheels import (
    Failure, extract_verified, pip_download, read_stamp, run, sha256_file, write_stamp,
)

PYPDFIUM2_VERSION = "5.15.2"
PDFIUM_BUILD = "8149"
MEMBER = "pypdfium2_raw/libpdfium.so"
LIB_NAME = "libpdfium.so"
STAMP_NAME = LIB_NAME + ".sha256"

# (arch, libc) -> (pip --platform tag, wheel sha256, libpdfium.so sha256)
WHEELS = {
    ("x86_64", "glibc"): (
        "manylinux_2_17_x86_64",
        "dc31aea5b0fb9fefc9b537a65f4113980b2c40798445736a7e6565bc85161e37",
        "c76dc0f7839644bfa7c3e3107a6068df714e339c861bb7d4519907b821d427f9",
    ),
    ("aarch64", "glibc"): (
        "manylinux_2_17_aarch64",
        "dd46e93c0c3a73f6cea8489baff6d77a5d0759dd53fbbce0aeb49c91830176fc",
        "4378615ad9710397c96c112611be9018629bbfe38805d91a2663a534b99c28ca",
    ),
    ("x86_64", "musl"): (
        "musllinux_1_2_x86_64",
        "ef452a7178744196d4ff97029f46b56a13817346fc7ee0473c75643512276b3a",
        "aa224cee2b8ba09d1b9d20f9acc7a07ae9aed03f4a59578ca4dffbb862db47b9",
    ),
    ("aarch64", "musl"): (
        "musllinux_1_2_aarch64",
        "71ba93a356708cb2a7b1a82dbc2c07ddb62c501e35bb6a67c7323e1da6ae9cb7",
        "94ca92ec7b2e89b0d374682106e22357e4e97ae68d3a31289e456cc5881907f0",
    ),
}

ARCH_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}

PROG = "fetch_pdfium"


def say(msg):
    print(f"{PROG}: {msg}", file=sys.stderr)


def host_libc():
    name, _ = platform.libc_ver()
    if name == "glibc":
        return "glibc"
    if glob.glob("/lib/ld-musl-*.so.1"):
        return "musl"
    return "glibc"


def pick_wheel(arch, libc):
    if not sys.platform.startswith("linux") and arch is None:
        raise Failure(
            f"unsupported platform {sys.platform!r}: only Linux x86_64/aarch64 wheels are "
            "pinned; set PDFIUM_LIB_PATH to an existing libpdfium instead"
        )
    raw = arch or platform.machine()
    norm = ARCH_ALIASES.get(raw.lower())
    libc = libc or host_libc()
    if norm is None or (norm, libc) not in WHEELS:
        raise Failure(
            f"unsupported platform linux-{raw}-{libc}: only x86_64/aarch64 (glibc or musl) "
            "wheels are pinned; set PDFIUM_LIB_PATH to an existing libpdfium instead"
        )
    return norm, libc, WHEELS[(norm, libc)]


def already_done(dest, lib_sha):
    lib, stamp = dest / LIB_NAME, dest / STAMP_NAME
    if not lib.is_file() or read_stamp(stamp) != lib_sha:
        return False
    try:
        return sha256_file(lib) == lib_sha
    except OSError:
        return False


def download_wheel(tag, workdir):
    pip_download([f"pypdfium2=={PYPDFIUM2_VERSION}", "--platform", tag], workdir)
    wheels = sorted(Path(workdir).glob("pypdfium2-*.whl"))
    if len(wheels) != 1:
        raise Failure(f"pip download produced {len(wheels)} pypdfium2 wheels, expected 1")
    return wheels[0]


def extract_lib(wheel, dest, lib_sha):
    return extract_verified(wheel, MEMBER, dest / LIB_NAME, lib_sha)


def main(argv=None):
    repo = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(
        prog=PROG,
        description=f"Fetch pinned libpdfium.so (pypdfium2 {PYPDFIUM2_VERSION}, "
                    f"pdfium build {PDFIUM_BUILD}) from PyPI via pip.")
    ap.add_argument("dest", nargs="?", default=str(repo / ".pdfium"),
                    help="destination directory (default: %(default)s)")
    ap.add_argument("--arch", help="target CPU: x86_64 or aarch64 (default: this machine's)")
    ap.add_argument("--libc", choices=("glibc", "musl"),
                    help="target C library (default: this machine's)")
    args = ap.parse_args(argv)

    dest = Path(args.dest).absolute()
    _, _, (tag, wheel_sha, lib_sha) = pick_wheel(args.arch, args.libc)
    what = f"pdfium {PDFIUM_BUILD} (pypdfium2 {PYPDFIUM2_VERSION}, {tag})"
    if already_done(dest, lib_sha):
        say(f"{dest / LIB_NAME} is already {what}; nothing to do")
        return 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fetch_pdfium.") as work:
        wheel = download_wheel(tag, work)
        got = sha256_file(wheel)
        if got != wheel_sha:
            raise Failure(f"SHA-256 mismatch for {wheel.name}: got {got}, "
                          f"pinned {wheel_sha}; refusing it")
        try:
            dest.mkdir(parents=True, exist_ok=True)
            lib = extract_lib(wheel, dest, lib_sha)
            write_stamp(dest / STAMP_NAME, lib_sha, LIB_NAME)
        except OSError as e:
            raise Failure(f"cannot write into {dest}: {e}")
        size = wheel.stat().st_size
    say(f"fetched {what}: {size / 1e6:.1f} MB wheel verified, "
        f"wrote {lib} in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run(main, say))