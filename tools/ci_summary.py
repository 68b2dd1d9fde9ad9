"""Sum the closing lines of every pytest run in a CI log into one line.

Prints ``N passed, N failed, N skipped`` and exits 1 when no test ran at all or any failed/errored.
"""

from __future__ import annotations

import re
import sys

COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)")
CLOSING = re.compile(r"^=+ .*(passed|failed|error|no tests ran).* in [\d.]+s.* =+$")


def main(path: str) -> int:
    totals = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
    runs = 0
    with open(path, errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not CLOSING.match(line):
                continue
            runs += 1
            for n, kind in COUNT.findall(line):
                key = "error" if kind.startswith("error") else kind
                if key in totals:
                    totals[key] += int(n)
    failed = totals["failed"] + totals["error"]
    print(f"pytest runs: {runs}")
    print(f"{totals['passed']} passed, {failed} failed, {totals['skipped']} skipped")
    if runs == 0 or totals["passed"] == 0:
        print("error: no test ran", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
