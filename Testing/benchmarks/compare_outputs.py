"""How far two ``kneealign measure`` output folders differ: the check behind any change that may move numbers.

Not a test (pytest does not collect it). Run::

    .venv/bin/python Testing/benchmarks/compare_outputs.py BEFORE_DIR AFTER_DIR [--angle-limit 0.05]

Cases are matched by their JSON's ``case_id``. Every number in the case JSONs is compared
(timings aside): the largest absolute difference per field is printed, angles first, with
the case it occurs in; every other value (status, side, kind, flag codes and messages,
sources) must be equal, and each difference is listed. Exit status 1 when an angle
(``*_deg``) moved by more than ``--angle-limit`` degrees, a case is missing from either
folder, or a non-numeric value differs.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

SKIPPED = ("timings_ms",)


def _leaves(value, path: str = ""):
    """(path, value) of every leaf; list indices become ``[]`` so a field's elements pool together."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key not in SKIPPED:
                yield from _leaves(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item, f"{path}[]")
    else:
        yield path, value


def _cases(folder: Path) -> dict[str, dict]:
    cases = {}
    for file in sorted(folder.glob("*.json")):
        if file.name.endswith(".mrk.json"):
            continue
        data = json.loads(file.read_text())
        if data.get("format") == "kneealignment-measurement":
            cases[data["case_id"]] = data
    return cases


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def compare(before: dict[str, dict], after: dict[str, dict]) -> tuple[dict, list[str]]:
    """Largest difference per numeric field {path: (difference, case)} and the other differences."""
    largest: dict[str, tuple[float, str]] = defaultdict(lambda: (0.0, ""))
    problems = [f"{case}: only in {which}" for which, a, b in (("before", before, after), ("after", after, before))
                for case in sorted(set(a) - set(b))]
    for case in sorted(set(before) & set(after)):
        old, new = list(_leaves(before[case])), list(_leaves(after[case]))
        if [p for p, _ in old] != [p for p, _ in new]:
            problems.append(f"{case}: the fields differ")
            continue
        for (path, a), (_, b) in zip(old, new):
            if _is_number(a) and _is_number(b):
                difference = abs(a - b) if math.isfinite(a) and math.isfinite(b) else (0.0 if a == b else math.inf)
                if difference >= largest[path][0]:
                    largest[path] = (difference, case)
            elif a != b and not (isinstance(a, str) and isinstance(b, str) and _same_text_but_numbers(a, b)):
                problems.append(f"{case}: {path}: {a!r} -> {b!r}")
    return dict(largest), problems


_NUMBER = re.compile(r"-?\d+\.?\d*(?:e-?\d+)?")


def _same_text_but_numbers(a: str, b: str) -> bool:
    """Messages that differ only in a printed number's last digits (e.g. 'confidence 0.39 < 0.41')."""
    na, nb = _NUMBER.findall(a), _NUMBER.findall(b)
    if _NUMBER.sub("#", a) != _NUMBER.sub("#", b) or len(na) != len(nb):
        return False
    return all(abs(float(x) - float(y)) <= 0.011 * max(1.0, abs(float(x))) for x, y in zip(na, nb))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--angle-limit", type=float, default=0.05, help="degrees (default 0.05)")
    args = parser.parse_args(argv)
    before, after = _cases(args.before), _cases(args.after)
    largest, problems = compare(before, after)
    print(f"{len(set(before) & set(after))} cases in both folders")
    angles = {p: v for p, v in largest.items() if p.endswith("_deg") or p.endswith("_deg[]")}
    for title, fields in (("angles (degrees)", angles), ("other numbers", {p: v for p, v in largest.items()
                                                                            if p not in angles})):
        moved = sorted(((v, p) for p, v in fields.items() if v[0] > 0), reverse=True)
        print(f"\nlargest difference, {title}: {len(fields) - len(moved)} fields identical")
        for (difference, case), path in moved:
            print(f"  {difference:10.3g}  {path}  ({case})")
    worst = max((v for v, _ in angles.values()), default=0.0)
    print(f"\nlargest angle difference {worst:.3g} degrees (limit {args.angle_limit})")
    if problems:
        print("\nother differences (printed numbers that differ by up to 1 % in their last digits are not counted):")
        print("\n".join(f"  {p}" for p in problems))
    return 1 if worst > args.angle_limit or problems else 0


if __name__ == "__main__":
    sys.exit(main())
