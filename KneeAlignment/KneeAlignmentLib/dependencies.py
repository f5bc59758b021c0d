"""Python packages that inference needs beyond what 3D Slicer ships, and which of them are missing.

Slicer 5.10 ships numpy, pydicom 3, SimpleITK and packaging, so the core's image,
schema, markups and geometry code runs as is; the networks need torch (installed by the
PyTorch extension, which picks the build for the computer's GPU), monai and safetensors.
The version ranges are those of ``pyproject.toml`` (a test keeps them equal).

Checking reads installed package metadata only (``importlib.metadata``): nothing is
imported and nothing is fetched, so an up-to-date installation needs no network.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

__all__ = ["INFERENCE_REQUIREMENTS", "InstallPlan", "Requirement", "Unmet", "ensure_requirements", "install_plan",
           "installed_version", "unmet_requirements"]


@dataclass(frozen=True)
class Requirement:
    """A distribution and the versions that work (a PEP 440 specifier such as ">=1.4,<2")."""

    distribution: str
    specifier: str
    purpose: str
    via_pytorch_extension: bool = False

    @property
    def pip_spec(self) -> str:
        """What ``pip install`` takes, e.g. "monai>=1.4,<2"."""
        return f"{self.distribution}{self.specifier}"


@dataclass(frozen=True)
class Unmet:
    """A requirement that is not met: ``installed`` is None when the package is absent."""

    requirement: Requirement
    installed: str | None

    def __str__(self) -> str:
        found = "not installed" if self.installed is None else f"version {self.installed} installed"
        return f"{self.requirement.pip_spec} ({self.requirement.purpose}): {found}"


INFERENCE_REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("torch", ">=2.3", "neural networks", via_pytorch_extension=True),
    Requirement("monai", ">=1.4,<2", "network building blocks and model bundles"),
    Requirement("safetensors", ">=0.4,<1", "model weights"),
)


def installed_version(distribution: str) -> str | None:
    """The installed version of a distribution, from its metadata; None when absent."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def unmet_requirements(requirements: Sequence[Requirement] = INFERENCE_REQUIREMENTS, *,
                       version_of: Callable[[str], str | None] = installed_version) -> list[Unmet]:
    """The requirements that are absent or installed in a version outside their range.

    Local version labels (``2.13.0+cu128``) and pre-releases are accepted when their
    release is in range. An unparsable installed version counts as unmet.
    """
    unmet = []
    for requirement in requirements:
        found = version_of(requirement.distribution)
        if found is None:
            unmet.append(Unmet(requirement, None))
            continue
        try:
            ok = SpecifierSet(requirement.specifier).contains(Version(found), prereleases=True)
        except InvalidVersion:
            ok = False
        if not ok:
            unmet.append(Unmet(requirement, found))
    return unmet


@dataclass(frozen=True)
class InstallPlan:
    """How to meet the unmet requirements, or why the module cannot do it itself.

    Attributes:
        torch_specifier: version range to ask the PyTorch extension for, or None.
        pip: requirement strings for ``pip install``, one package each.
        problem: set when the user must act first (install the PyTorch extension, or
            replace an unfitting torch); nothing should be installed then.
        details: one line per unmet requirement, for the consent dialog.
    """

    torch_specifier: str | None
    pip: tuple[str, ...]
    problem: str | None
    details: str


def install_plan(unmet: Sequence[Unmet], *, pytorch_extension: bool) -> InstallPlan:
    """Decide how to install ``unmet`` in Slicer: torch by the PyTorch extension, the rest by pip.

    A torch of an unfitting version is not replaced behind the user's back (other
    extensions may rely on it): the plan names the problem and how to solve it.
    """
    torch = [u for u in unmet if u.requirement.via_pytorch_extension]
    problem = None
    if torch and not pytorch_extension:
        problem = ("Inference needs PyTorch. Install the 'PyTorch' extension from the Extensions Manager, "
                   "restart Slicer, and try again.")
    elif torch and torch[0].installed is not None:
        problem = (f"PyTorch {torch[0].installed} is installed, but this module needs torch"
                   f"{torch[0].requirement.specifier}. Install a fitting version with the 'PyTorch Utils' module "
                   f"(version requirement {torch[0].requirement.specifier}), then restart Slicer.")
    return InstallPlan(
        torch_specifier=torch[0].requirement.specifier if torch else None,
        pip=tuple(u.requirement.pip_spec for u in unmet if not u.requirement.via_pytorch_extension),
        problem=problem,
        details="\n".join(str(u) for u in unmet),
    )


def ensure_requirements(*, pytorch_extension: bool, consent: Callable[[str], bool],
                        install_torch: Callable[[str], bool], pip_install: Callable[[str], object],
                        unmet: Callable[[], Sequence[Unmet]] = unmet_requirements) -> bool:
    """The first-use install in Slicer: nothing when the versions fit; else, with consent, :func:`install_plan`.

    Args:
        pytorch_extension: whether Slicer's PyTorch extension is installed.
        consent: ``consent(details)`` asks the user (one line per unmet requirement); True installs.
        install_torch: ``install_torch(specifier)`` by the PyTorch extension; False when it installed nothing.
        pip_install: ``pip_install(requirement)``, one requirement string.
        unmet: the check, run before and after installing.

    Returns:
        True when every requirement is met, False when the user declined.

    Raises:
        RuntimeError: the plan's problem (nothing is installed then), PyTorch not installed,
            or requirements still unmet afterwards.
    """
    missing = unmet()
    if not missing:
        return True
    plan = install_plan(missing, pytorch_extension=pytorch_extension)
    if plan.problem:
        raise RuntimeError(plan.problem)
    if not consent(plan.details):
        return False
    if plan.torch_specifier is not None and not install_torch(plan.torch_specifier):
        raise RuntimeError("PyTorch was not installed.")
    for requirement in plan.pip:
        pip_install(requirement)
    remaining = unmet()
    if remaining:
        raise RuntimeError("Still missing after installation (restart Slicer and try again):\n"
                           + "\n".join(str(u) for u in remaining))
    return True
