"""Tests of KneeAlignmentLib.dependencies: which inference packages are missing, without importing them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import numpy
import pytest

from KneeAlignmentLib.dependencies import INFERENCE_REQUIREMENTS, Requirement, installed_version, unmet_requirements

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_ranges_are_those_of_pyproject():
    declared = {}
    for spec in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]:
        name, specifier = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", spec).groups()
        declared[name.lower()] = specifier.replace(" ", "")
    for requirement in INFERENCE_REQUIREMENTS:
        assert requirement.specifier == declared[requirement.distribution], requirement.distribution
    assert [r.distribution for r in INFERENCE_REQUIREMENTS if r.via_pytorch_extension] == ["torch"]


def versions(**installed):
    return lambda name: installed.get(name)


def test_nothing_is_unmet_when_versions_fit():
    fit = versions(torch="2.13.0+cu128", monai="1.5.1", safetensors="0.6.2")
    assert unmet_requirements(version_of=fit) == []


@pytest.mark.parametrize(
    ("installed", "unmet"),
    [
        ({"monai": "1.5.1", "safetensors": "0.6.2"}, {"torch": None}),
        ({"torch": "2.1.0", "monai": "2.0.0", "safetensors": "0.6.2"}, {"torch": "2.1.0", "monai": "2.0.0"}),
        ({"torch": "2.5.0rc1", "monai": "1.4.0", "safetensors": "not-a-version"}, {"safetensors": "not-a-version"}),
    ],
)
def test_absent_and_out_of_range_packages_are_reported(installed, unmet):
    found = unmet_requirements(version_of=versions(**installed))
    assert {u.requirement.distribution: u.installed for u in found} == unmet
    for u in found:
        assert u.requirement.pip_spec in str(u)
        assert ("not installed" in str(u)) == (u.installed is None)


def test_installed_version_reads_metadata():
    assert installed_version("numpy") == numpy.__version__
    assert installed_version("no-such-distribution-kneealignment") is None


def test_the_real_environment_meets_the_requirements():
    """This test environment has what inference needs (as Slicer will once the module has installed it)."""
    assert unmet_requirements() == []
    assert Requirement("monai", ">=1.4,<2", "x").pip_spec == "monai>=1.4,<2"
