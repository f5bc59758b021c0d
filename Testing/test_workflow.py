"""Tests of KneeAlignmentLib.workflow: staged measuring with progress and cancellation."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from KneeAlignmentLib.bundle.modelset import ModelCache
from KneeAlignmentLib.bundle.resolve import resolve_models
from KneeAlignmentLib.imageio import radiograph_from_array
from KneeAlignmentLib.pipeline import measure
from KneeAlignmentLib.workflow import Cancelled, checkpoint, measure_radiograph
from model_factory import save_models


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return resolve_models(save_models(tmp_path_factory.mktemp("models"), kinds=("preop",)))


@pytest.fixture(scope="module")
def radiograph():
    pixels = np.random.default_rng(0).uniform(0, 1, size=(96, 80))
    return radiograph_from_array(pixels, spacing_mm=(0.5, 0.5), value_range=(0.0, 1.0))


def test_progress_is_reported_in_order_within_the_span(paths, radiograph):
    reports = []
    result = measure_radiograph(radiograph, paths, kind="preop", side="R", device="cpu",
                                progress=lambda fraction, message: reports.append((fraction, message)),
                                span=(0.2, 0.8))
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[0] == pytest.approx(0.2) and fractions[-1] == pytest.approx(0.8)
    assert [m for _, m in reports] == ["Loading the models", "Finding the landmarks", "Reference points found",
                                       "pre-op landmarks found", "Orientation checked", "Landmarks found"]
    assert result.kind == "preop" and result.landmarks is not None


def test_the_result_is_the_pipelines(paths, radiograph):
    cache = ModelCache()
    staged = measure_radiograph(radiograph, paths, kind="preop", side="R", device="cpu", cache=cache)
    direct = measure(radiograph, cache.get(paths, "cpu"), kind="preop", side="R")
    np.testing.assert_allclose(staged.landmarks.points_px, direct.landmarks.points_px)
    assert staged.flag_codes == direct.flag_codes


@pytest.mark.parametrize("stop_at", [1, 2, 3, 4, 5, 6])
def test_cancel_stops_at_the_next_stage(paths, radiograph, stop_at):
    asked, reports = [], []

    def cancelled():
        asked.append(True)
        return len(asked) >= stop_at

    with pytest.raises(Cancelled):
        measure_radiograph(radiograph, paths, kind="preop", device="cpu", cancelled=cancelled,
                           progress=lambda f, m: reports.append(m))
    assert len(reports) == stop_at - 1  # no stage reported after the cancel


def test_checkpoint_reports_unless_cancelled():
    seen = []
    checkpoint(0.5, "half", lambda f, m: seen.append((f, m)), lambda: False)
    assert seen == [(0.5, "half")]
    with pytest.raises(Cancelled, match="cancelled before: next"):
        checkpoint(0.6, "next", seen.append, lambda: True)
    checkpoint(0.7, "no callbacks", None, None)


def test_gpu_without_cuda_is_a_clear_error(paths, radiograph):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(ValueError, match="no CUDA device; choose Auto or CPU"):
        measure_radiograph(radiograph, paths, device="cuda")


def test_importing_the_workflow_does_not_import_torch():
    code = "import sys, KneeAlignmentLib.workflow, KneeAlignmentLib.case_view, KneeAlignmentLib.dependencies, " \
           "KneeAlignmentLib.bundle.resolve; print('torch' in sys.modules)"  # resolve: the Slicer module's settings
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
