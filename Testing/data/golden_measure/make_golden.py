"""Write ``expected/``: what `kneealign measure` and ``pipeline.measure`` gave on ``inputs/`` with ``models/``.

Run on the code before the speed work of issue 15, with::

    PYTHONPATH=<that code>/KneeAlignment .venv/bin/python Testing/data/golden_measure/make_golden.py

The files were first written from commit 32ed2ef, and again each time the speed work was
rebased onto a main whose outputs had changed: c511933 (issue 16's orientation check and
model provenance), 5d89a36 (issue 14's FTS axes from the image and QC thresholds in the
bundles) and a9fe849 (metal-like pixels relative to the 99.9th percentile). Each time the
speed work reproduced them. Rewritten twice by the speed work itself, for changes in the
last digits of convolutions: when `kneealign measure` went to one CPU thread per network call
(``--threads``, default 1; torch's default had been one thread per core), and to two images
per network batch (``--batch-size``, default 2, was 4). Measured with
``Testing/benchmarks/compare_outputs.py``: on the shipped models and 40 phantoms no angle
moved by more than 5e-5 degrees and nothing else changed; on these random tiny networks no
angle moved by more than 5e-6 degrees, and one landmark of a flat heatmap went to another
cell (20 px; no angle depends on it). The overlay PNG was replaced when overlays went from
matplotlib to PIL (the same marks, sizes and panels; 1 px narrower: the image's own aspect).

``Testing/test_outputs_unchanged.py`` compares today's outputs with these files. Do not
re-run it to make that test pass: a difference is a change of behaviour to explain.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # Testing/, for golden_outputs
from golden_outputs import normalised_outputs, single_image_results  # noqa: E402


def main() -> None:
    expected = HERE / "expected"
    shutil.rmtree(expected, ignore_errors=True)
    (expected / "measure").mkdir(parents=True)
    work = HERE / "_work"
    shutil.rmtree(work, ignore_errors=True)
    for name, text in normalised_outputs(HERE / "inputs", HERE / "models", work).items():
        (expected / "measure" / name).write_text(text, encoding="utf-8")
    overlay = sorted(work.glob("case-*.png"))[0]
    shutil.copy(overlay, expected / "measure" / overlay.name)
    shutil.rmtree(work)
    (expected / "single.json").write_text(json.dumps(single_image_results(HERE / "inputs", HERE / "models"),
                                                     indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
