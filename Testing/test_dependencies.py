"""Tests of KneeAlignmentLib.dependencies: which inference packages are missing, without importing them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import numpy
import pytest

from KneeAlignmentLib.dependencies import (
    INFERENCE_REQUIREMENTS,
    Requirement,
    Unmet,
    ensure_requirements,
    installed_version,
    unmet_requirements,
)

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


TORCH, MONAI = INFERENCE_REQUIREMENTS[0], INFERENCE_REQUIREMENTS[1]


class Installer:
    """Slicer's side of the first-use install: the user's answer, the PyTorch extension, pip; records the calls.

    ``fixes``: whether installing meets the requirement (else it stays unmet, as after a failed pip run).
    """

    def __init__(self, missing, *, agree=True, torch_installs=True, fixes=True):
        self.missing, self.agree, self.torch_installs, self.fixes = list(missing), agree, torch_installs, fixes
        self.calls = []

    def _installed(self, requirement):
        if self.fixes:
            self.missing = [u for u in self.missing if u.requirement is not requirement]

    def consent(self, details):
        self.calls.append(("consent", details))
        return self.agree

    def install_torch(self, specifier):
        self.calls.append(("torch", specifier))
        if self.torch_installs:
            self._installed(TORCH)
        return self.torch_installs

    def pip_install(self, requirement):
        self.calls.append(("pip", requirement))
        self._installed(next(r for r in INFERENCE_REQUIREMENTS if r.pip_spec == requirement))

    def run(self, pytorch_extension=True):
        return ensure_requirements(pytorch_extension=pytorch_extension, consent=self.consent,
                                   install_torch=self.install_torch, pip_install=self.pip_install,
                                   unmet=lambda: list(self.missing))


def test_nothing_is_asked_or_installed_when_the_versions_fit():
    installer = Installer([])
    assert installer.run() is True and installer.calls == []


def test_with_consent_torch_comes_from_the_pytorch_extension_and_the_rest_from_pip():
    monai = Unmet(MONAI, "0.9.0")
    installer = Installer([Unmet(TORCH, None), monai])
    assert installer.run() is True
    assert installer.calls == [("consent", f"{Unmet(TORCH, None)}\n{monai}"), ("torch", TORCH.specifier),
                               ("pip", MONAI.pip_spec)]
    installer = Installer([Unmet(TORCH, None), monai], fixes=False)
    with pytest.raises(RuntimeError, match="Still missing after installation") as raised:
        installer.run()
    assert [call[0] for call in installer.calls] == ["consent", "torch", "pip"] and str(monai) in str(raised.value)


def test_a_declined_or_impossible_install_installs_nothing():
    installer = Installer([Unmet(MONAI, None)], agree=False)
    assert installer.run() is False and [call[0] for call in installer.calls] == ["consent"]
    installer = Installer([Unmet(TORCH, None)])
    with pytest.raises(RuntimeError, match="Install the 'PyTorch' extension"):
        installer.run(pytorch_extension=False)
    installer = Installer([Unmet(TORCH, "1.13.0")])  # another extension's torch is not replaced behind its back
    with pytest.raises(RuntimeError, match=r"PyTorch 1\.13\.0 is installed, but this module needs torch>="):
        installer.run()
    assert installer.calls == []
    installer = Installer([Unmet(TORCH, None), Unmet(MONAI, None)], torch_installs=False)
    with pytest.raises(RuntimeError, match="PyTorch was not installed"):
        installer.run()
    assert [call[0] for call in installer.calls] == ["consent", "torch"]  # pip waits for torch
