"""Outputs of `kneealign measure` and ``pipeline.measure`` with run-dependent values taken out.

Shared by ``Testing/data/golden_measure/make_golden.py`` (which wrote the expected files
with the code before the speed work of issue 15) and ``test_outputs_unchanged.py``.
Timings are the only values that differ from run to run: ``timings_ms`` in the JSON and
``total_ms`` in the summary are replaced by a placeholder; everything else is compared
as text, byte for byte (markups files, 150 kB each, as their SHA-256). Overlay PNGs are
left out here: their pixels are compared loosely by the test (drawing them may change).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from pathlib import Path

TIMINGS = re.compile(r'"timings_ms": \{[^}]*\}')
PLACEHOLDER = '"timings_ms": "<timings>"'


def normalise_json(text: str) -> str:
    return TIMINGS.sub(PLACEHOLDER, text)


def normalise_summary(text: str) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    column = rows[0].index("total_ms")
    for row in rows[1:]:
        row[column] = "<ms>" if row[column] else ""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def run_measure(inputs: Path, models: Path, out: Path, *extra: str) -> int:
    from KneeAlignmentLib import cli

    return cli.main(["measure", str(inputs), "--out", str(out), "--models-dir", str(models), "--quiet",
                     "--device", "cpu", *extra])


def normalised_outputs(inputs: Path, models: Path, out: Path, *extra: str) -> dict[str, str]:
    """Run `kneealign measure` into ``out``; its text outputs by file name, normalised (PNGs left out)."""
    run_measure(inputs, models, out, *extra)
    texts = {}
    for path in sorted(p for p in out.iterdir() if p.is_file() and not p.name.endswith(".png")):
        text = path.read_text(encoding="utf-8")
        if path.name == "summary.csv":
            text = normalise_summary(text)
        elif path.name.endswith(".mrk.json"):
            text = "sha256 " + hashlib.sha256(text.encode("utf-8")).hexdigest() + "\n"
        elif path.name.endswith(".json"):
            text = normalise_json(text)
        texts[path.name] = text
    return texts


def single_image_results(inputs: Path, models: Path) -> dict[str, str]:
    """``pipeline.measure`` (a batch of one, as the Slicer module runs it) per input: JSON, normalised."""
    from KneeAlignmentLib.bundle.modelset import ModelSet
    from KneeAlignmentLib.imageio import read_radiograph
    from KneeAlignmentLib.pipeline import measure

    model_set = ModelSet.load(models, device="cpu")
    return {path.name: normalise_json(measure(read_radiograph(path), model_set).to_json())
            for path in sorted(inputs.iterdir())}
