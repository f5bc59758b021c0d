"""`kneealign measure` and ``pipeline.measure`` give today what they gave before the speed work (issue 15).

``data/golden_measure``: three small phantom radiographs (two DICOM with laterality, one
16-bit PNG without, so the side is detected), tiny seeded model bundles (committed, so
the expected numbers do not hang on the shipped weights or on how networks are
initialised), and the outputs that the code before the speed work wrote
(``make_golden.py``). Per-case JSON (timings aside), markups and the summary must be
byte for byte the same; the overlay may be drawn differently but must show the same
picture.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from golden_outputs import normalised_outputs, single_image_results

GOLDEN = Path(__file__).resolve().parent / "data" / "golden_measure"
EXPECTED = GOLDEN / "expected"


def expected_measure_outputs() -> dict[str, str]:
    return {path.name: path.read_text(encoding="utf-8")
            for path in sorted((EXPECTED / "measure").iterdir()) if not path.name.endswith(".png")}


@pytest.mark.parametrize("options", [(), ("--workers", "0", "--batch-size", "2")], ids=["defaults", "no-workers"])
def test_measure_outputs_are_byte_for_byte_unchanged(tmp_path, options):
    got = normalised_outputs(GOLDEN / "inputs", GOLDEN / "models", tmp_path / "out", *options)
    expected = expected_measure_outputs()
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert got[name] == expected[name], f"{name} differs from the output before the speed work"


def test_single_image_measurement_is_unchanged():
    expected = json.loads((EXPECTED / "single.json").read_text(encoding="utf-8"))
    got = single_image_results(GOLDEN / "inputs", GOLDEN / "models")
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert got[name] == expected[name], f"pipeline.measure on {name} changed"


def test_overlay_shows_the_same_picture(tmp_path):
    (reference,) = (EXPECTED / "measure").glob("case-*.png")
    normalised_outputs(GOLDEN / "inputs", GOLDEN / "models", tmp_path / "out")
    with Image.open(reference) as before, Image.open(tmp_path / "out" / reference.name) as now:
        assert now.size == before.size
        a = np.asarray(before.convert("RGB"), dtype=np.float64)
        b = np.asarray(now.convert("RGB"), dtype=np.float64)
    difference = np.abs(a - b)
    # Same image, landmarks, axes and text: small differences of resampling and anti-aliasing only.
    assert difference.mean() < 2.0, difference.mean()
    assert np.mean(difference.max(axis=-1) > 64) < 0.01
