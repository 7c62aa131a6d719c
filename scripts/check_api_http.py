"""Checks httpyac's JSON results against the `# expect: NNN` line of every
request in an .http file.

Usage: check_api_http.py FILE.http ALL.json [NAME=ONLY.json ...]
A NAME=ONLY.json argument takes that request's result from its own run
(for requests that need concurrency or a different server set-up) instead
of from ALL.json. Exits 1 if any request lacks an expectation or a result,
or got another status.
"""
import json
import re
import sys


def expectations(path):
    """(name, expected status) for every request block, in file order."""
    found = []
    for block in open(path, encoding="utf-8").read().split("\n###")[1:]:
        name = re.search(r"^# @name (\S+)", block, re.M)
        expect = re.search(r"^# expect: (\d{3})\s*$", block, re.M)
        title = block.split("\n", 1)[0].strip()
        if not name or not expect:
            sys.exit(f"request {title!r} needs a `# @name` and a `# expect: NNN` line")
        found.append((name.group(1), int(expect.group(1))))
    return found


def statuses(path):
    data = json.load(open(path, encoding="utf-8"))
    return {r["name"]: r.get("response", {}).get("statusCode") for r in data["requests"]}


def main():
    http_file, all_json, *overrides = sys.argv[1:]
    results = statuses(all_json)
    for override in overrides:
        name, path = override.split("=", 1)
        results[name] = statuses(path).get(name)
    failures = 0
    print(f"{'request':32} {'expected':>8} {'got':>5}")
    for name, expected in expectations(http_file):
        got = results.get(name)
        ok = got == expected
        failures += not ok
        print(f"{name:32} {expected:>8} {str(got):>5} {'' if ok else '  <-- MISMATCH'}")
    if failures:
        sys.exit(f"{failures} request(s) did not get their documented status")
    print("every request got its documented status")


if __name__ == "__main__":
    main()
