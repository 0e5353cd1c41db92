"""Keeps docs/compatibility.md true: every matrix row's test must have passed in
this run, and every conformance test must appear in the matrix.

usage: check_matrix.py <junit.xml> <docs/compatibility.md>
"""
import re
import sys
import xml.etree.ElementTree as ET


def main(junit_path, doc_path):
    results = {}
    for case in ET.parse(junit_path).getroot().iter("testcase"):
        failed = any(case.find(t) is not None for t in ("failure", "error", "skipped"))
        results[case.get("name")] = not failed
    doc = open(doc_path, encoding="utf-8").read()
    section = doc.split("## Verified clients", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\|[^\n]*\|\s*`(test_[a-z0-9_]+)`\s*\|\s*$", section, re.M)
    problems = []
    for test in rows:
        if test not in results:
            problems.append(f"matrix row names {test}, which did not run")
        elif not results[test]:
            problems.append(f"matrix row {test} says passes, but the test did not pass")
    selected_all = len(results) >= len(rows)
    if selected_all:
        for test in results:
            if test not in rows:
                problems.append(f"{test} has no row in the compatibility matrix")
    for p in problems:
        print("compatibility matrix:", p)
    if problems:
        return 1
    print(f"compatibility matrix: {len(rows)} rows match the suite")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
