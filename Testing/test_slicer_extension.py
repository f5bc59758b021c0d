"""Static checks of the 3D Slicer extension: CMake lists, resources, icons, the module file, the .ui.

Slicer is not installed here, so nothing below imports ``slicer``: the CMake files are
parsed as text, the module file and the core package as Python ASTs, the .ui as XML.
What a Slicer build would only reveal late (a script missing from the install, a widget
name typo, torch imported when Slicer's generic tests import every module) fails here.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import struct
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "KneeAlignment"
LIB_DIR = MODULE_DIR / "KneeAlignmentLib"
MODULE_PY = MODULE_DIR / "KneeAlignment.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "KneeAlignment.ui"
ICONS = (ROOT / "KneeAlignment.png", MODULE_DIR / "Resources" / "Icons" / "KneeAlignment.png")

# Imports the Slicer-free core must never make (anywhere in the file, lazily or not).
SLICER_ONLY_MODULES = {"slicer", "qt", "ctk", "vtk", "vtkmodules", "PythonQt", "SampleData"}
# Imports the module file must not make at import time: Slicer's generic tests import it
# before the PyTorch extension has installed torch, and onReload can only reload the core
# package when the module file holds no reference to it.
LAZY_ONLY_MODULES = {"torch", "monai", "KneeAlignmentLib"}
REQUIRED_METADATA = (
    "EXTENSION_HOMEPAGE",
    "EXTENSION_CATEGORY",
    "EXTENSION_CONTRIBUTORS",
    "EXTENSION_DESCRIPTION",
    "EXTENSION_ICONURL",
    "EXTENSION_SCREENSHOTURLS",
    "EXTENSION_DEPENDS",
)


# ----------------------------------------------------------------------------- helpers


def _cmake_text(path: Path) -> str:
    """CMake source with comments removed (a '#' outside quotes starts a comment)."""
    lines = []
    for line in path.read_text().splitlines():
        out, quoted = [], False
        for char in line:
            if char == '"':
                quoted = not quoted
            elif char == "#" and not quoted:
                break
            out.append(char)
        lines.append("".join(out))
    return "\n".join(lines)


def _cmake_sets(text: str) -> dict[str, list[str]]:
    """Every ``set(NAME args...)`` as NAME -> list of arguments (quotes removed)."""
    sets = {}
    for match in re.finditer(r"\bset\s*\(\s*(\w+)((?:[^()\"]|\"[^\"]*\")*)\)", text, re.IGNORECASE):
        args = re.findall(r"\"([^\"]*)\"|(\S+)", match.group(2))
        sets[match.group(1)] = [quoted or bare for quoted, bare in args]
    return sets


def _expand(value: str, variables: dict[str, list[str]]) -> str:
    def substitute(match: re.Match) -> str:
        name = match.group(1)
        if name not in variables:
            raise AssertionError(f"KneeAlignment/CMakeLists.txt uses undefined variable ${{{name}}}")
        return " ".join(variables[name])

    return re.sub(r"\$\{(\w+)\}", substitute, value)


def _module_cmake() -> tuple[str, dict[str, list[str]]]:
    text = _cmake_text(MODULE_DIR / "CMakeLists.txt")
    sets = _cmake_sets(text)
    own = {"MODULE_NAME"}
    known = {k: sets[k] for k in own if k in sets}
    expanded = {name: [_expand(v, known) for v in values] for name, values in sets.items()}
    return text, expanded


def _listed(variable: str) -> list[str]:
    _, sets = _module_cmake()
    if variable not in sets:
        raise AssertionError(f"KneeAlignment/CMakeLists.txt sets no {variable}")
    return sets[variable]


def _python_files() -> list[str]:
    """Every .py of the module and its core package, relative to KneeAlignment/."""
    files = [MODULE_PY] + sorted(p for p in LIB_DIR.rglob("*.py") if "__pycache__" not in p.parts)
    return [p.relative_to(MODULE_DIR).as_posix() for p in files]


def _report(what: str, items) -> str:
    return f"{what}:\n  " + "\n  ".join(sorted(items))


def _module_ast() -> ast.Module:
    return ast.parse(MODULE_PY.read_text(), filename=str(MODULE_PY))


def _imported_roots(nodes) -> list[tuple[str, int]]:
    """Top-level package names imported by Import/ImportFrom nodes and importlib calls, with line numbers."""
    roots = []
    for node in nodes:
        if isinstance(node, ast.Import):
            roots += [(alias.name.split(".")[0], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.append((node.module.split(".")[0], node.lineno))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                roots.append((node.args[0].value.split(".")[0], node.lineno))
    return roots


def _import_time_nodes(tree: ast.Module):
    """Nodes that run when the module is imported: everything outside function bodies."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            stack.extend(node.decorator_list if not isinstance(node, ast.Lambda) else [])
            continue
        stack.extend(ast.iter_child_nodes(node))


def _classes(tree: ast.Module) -> dict[str, ast.ClassDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def _base_names(cls: ast.ClassDef) -> set[str]:
    return {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in cls.bases}


def _parameter_node_fields() -> dict[str, ast.expr]:
    """Fields (name -> annotation) of the class decorated with @parameterNodeWrapper."""
    for cls in _classes(_module_ast()).values():
        decorators = {d.id if isinstance(d, ast.Name) else getattr(d, "attr", "") for d in cls.decorator_list}
        if "parameterNodeWrapper" in decorators:
            return {n.target.id: n.annotation for n in cls.body if isinstance(n, ast.AnnAssign)}
    raise AssertionError("KneeAlignment.py defines no @parameterNodeWrapper class")


def _ui_tree() -> ET.Element:
    return ET.parse(UI_FILE).getroot()


def _ui_widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in _ui_tree().iter("widget")}


def _ui_property(widget: ET.Element, name: str) -> ET.Element | None:
    return next((p for p in widget.findall("property") if p.get("name") == name), None)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise AssertionError(f"{path.relative_to(ROOT)} is not a PNG file")
    return struct.unpack(">II", data[16:24])


# ------------------------------------------------------------------------- CMake lists


def test_scripts_list_names_every_python_file_and_only_existing_ones():
    listed = _listed("MODULE_PYTHON_SCRIPTS")
    duplicates = {f for f in listed if listed.count(f) > 1}
    unlisted = set(_python_files()) - set(listed)
    absent = {f for f in listed if not (MODULE_DIR / f).is_file()}
    problems = []
    if unlisted:
        problems.append(_report("add to MODULE_PYTHON_SCRIPTS in KneeAlignment/CMakeLists.txt", unlisted))
    if absent:
        problems.append(_report("listed in MODULE_PYTHON_SCRIPTS but missing on disk", absent))
    if duplicates:
        problems.append(_report("listed more than once", duplicates))
    assert not problems, "\n".join(problems)
    assert not any(f.startswith("/") or ".." in f.split("/") for f in listed)


def test_resources_exist_and_every_resource_file_is_listed():
    listed = _listed("MODULE_PYTHON_RESOURCES")
    absent = {f for f in listed if not (MODULE_DIR / f).is_file()}
    shipped = [p for d in (LIB_DIR / "data", MODULE_DIR / "Resources") if d.is_dir() for p in d.rglob("*")]
    on_disk = {
        p.relative_to(MODULE_DIR).as_posix()
        for p in shipped
        if p.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in p.parts)
    }
    unlisted = on_disk - set(listed)
    problems = []
    if unlisted:
        problems.append(_report("add to MODULE_PYTHON_RESOURCES in KneeAlignment/CMakeLists.txt", unlisted))
    if absent:
        problems.append(_report("listed in MODULE_PYTHON_RESOURCES but missing on disk", absent))
    assert not problems, "\n".join(problems)
    for required in ("Resources/Icons/KneeAlignment.png", "Resources/UI/KneeAlignment.ui"):
        assert required in listed


def test_module_cmake_builds_a_scripted_module_with_generic_tests():
    text, sets = _module_cmake()
    assert sets["MODULE_NAME"] == ["KneeAlignment"]
    call = re.search(r"slicerMacroBuildScriptedModule\s*\(([^)]*)\)", text)
    assert call, "no slicerMacroBuildScriptedModule(...) call"
    args = call.group(1).split()
    for keyword, value in (("NAME", "${MODULE_NAME}"), ("SCRIPTS", "${MODULE_PYTHON_SCRIPTS}"),
                           ("RESOURCES", "${MODULE_PYTHON_RESOURCES}")):
        assert keyword in args and args[args.index(keyword) + 1] == value, f"{keyword} {value} missing"
    assert "WITH_GENERIC_TESTS" in args
    assert re.search(r"slicer_add_python_unittest\s*\(\s*SCRIPT\s+\$\{MODULE_NAME\}\.py\s*\)", text)


def test_top_level_cmake_has_extension_metadata_and_slicer_boilerplate():
    text = _cmake_text(ROOT / "CMakeLists.txt")
    sets = _cmake_sets(text)
    missing = [key for key in REQUIRED_METADATA if not "".join(sets.get(key, [])).strip()]
    assert not missing, f"top-level CMakeLists.txt lacks {missing}"
    for pattern in (
        r"cmake_minimum_required\s*\(\s*VERSION",
        r"project\s*\(\s*KneeAlignment\s*\)",
        r"find_package\s*\(\s*Slicer\s+REQUIRED\s*\)",
        r"include\s*\(\s*\$\{Slicer_USE_FILE\}\s*\)",
        r"add_subdirectory\s*\(\s*KneeAlignment\s*\)",
        r"include\s*\(\s*\$\{Slicer_EXTENSION_GENERATE_CONFIG\}\s*\)",
        r"include\s*\(\s*\$\{Slicer_EXTENSION_CPACK\}\s*\)",
    ):
        assert re.search(pattern, text), f"top-level CMakeLists.txt: no match for {pattern}"
    assert "PyTorch" in sets["EXTENSION_DEPENDS"]
    homepage = sets["EXTENSION_HOMEPAGE"][0]
    assert homepage.startswith("https://github.com/")
    raw = homepage.replace("https://github.com/", "https://raw.githubusercontent.com/")
    icon_url = sets["EXTENSION_ICONURL"][0]
    assert icon_url.startswith(raw) and icon_url.endswith("/KneeAlignment.png")
    assert all(url.startswith(raw) for url in " ".join(sets["EXTENSION_SCREENSHOTURLS"]).split())


def test_extension_category_matches_module_categories():
    category = _cmake_sets(_cmake_text(ROOT / "CMakeLists.txt"))["EXTENSION_CATEGORY"]
    module = _classes(_module_ast())["KneeAlignment"]
    assigned = [
        node.value for node in ast.walk(module)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Attribute) and t.attr == "categories" for t in node.targets)
    ]
    assert len(assigned) == 1, "the module class must set self.parent.categories once"
    strings = [n.value for n in ast.walk(assigned[0]) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    assert category[0] in strings


# ------------------------------------------------------------------------------ icons


@pytest.mark.parametrize("icon", ICONS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_icon_is_a_128_pixel_square_png(icon):
    assert _png_size(icon) == (128, 128)


def test_extension_and_module_icons_are_the_same_picture():
    assert ICONS[0].read_bytes() == ICONS[1].read_bytes()


# ------------------------------------------------------------------------ module file


def test_module_file_defines_the_four_scripted_module_classes():
    classes = _classes(_module_ast())
    expected = {
        "KneeAlignment": "ScriptedLoadableModule",
        "KneeAlignmentWidget": "ScriptedLoadableModuleWidget",
        "KneeAlignmentLogic": "ScriptedLoadableModuleLogic",
        "KneeAlignmentTest": "ScriptedLoadableModuleTest",
    }
    for name, base in expected.items():
        assert name in classes, f"KneeAlignment.py defines no class {name}"
        assert base in _base_names(classes[name]), f"{name} must derive from {base}"
    test_methods = {n.name for n in classes["KneeAlignmentTest"].body if isinstance(n, ast.FunctionDef)}
    assert "runTest" in test_methods and any(m.startswith("test_") for m in test_methods)


def test_module_file_imports_torch_monai_and_the_core_lazily():
    imports = _imported_roots(_import_time_nodes(_module_ast()))
    early = [(root, line) for root, line in imports if root in LAZY_ONLY_MODULES]
    assert not early, f"KneeAlignment.py imports at import time (must be inside methods): {early}"


def test_module_file_stays_thin():
    assert len(MODULE_PY.read_text().splitlines()) < 500


def test_schema_choices_map_onto_the_core_schema_kinds():
    from KneeAlignmentLib import schema

    constants = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in _module_ast().body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id in ("SCHEMA_KINDS", "SIDE_CODES")
    }
    assert sorted(constants["SCHEMA_KINDS"].values()) == sorted(schema.KINDS)
    choices = _parameter_node_fields()
    for field, table in (("schema", "SCHEMA_KINDS"), ("side", "SIDE_CODES")):
        listed = [n.value for n in ast.walk(choices[field]) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        assert set(listed) - {"Auto"} == set(constants[table]), f"{field} choices differ from {table}"


# ------------------------------------------------------------------------- core package


def test_core_package_never_imports_slicer_qt_ctk_or_vtk():
    offenders = []
    for path in sorted(LIB_DIR.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        offenders += [
            f"{path.relative_to(ROOT).as_posix()}:{line} imports {root}"
            for root, line in _imported_roots(ast.walk(tree))
            if root in SLICER_ONLY_MODULES
        ]
    assert not offenders, "\n".join(offenders)


# --------------------------------------------------------------------------------- .ui


def test_ui_is_a_qt_designer_file_rooted_at_a_qmrmlwidget():
    root = _ui_tree()
    assert root.tag == "ui" and root.get("version") == "4.0"
    top = root.find("widget")
    assert top is not None and top.get("class") == "qMRMLWidget" and top.get("name") == "KneeAlignment"
    names = [w.get("name") for w in root.iter("widget")]
    assert len(names) == len(set(names)), "widget objectNames must be unique"


def test_every_widget_the_module_uses_exists_in_the_ui():
    used = {
        node.attr
        for node in ast.walk(_module_ast())
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"
        and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"
    }
    assert used, "KneeAlignment.py uses no self.ui.<widget>"
    missing = used - set(_ui_widgets())
    assert not missing, _report("self.ui names not found in KneeAlignment.ui", missing)


def test_ui_sections_and_custom_widgets_are_declared():
    widgets = _ui_widgets()
    sections = {
        _ui_property(w, "text").findtext("string") for w in widgets.values() if w.get("class") == "ctkCollapsibleButton"
    }
    assert {"Inputs", "Results", "Advanced"} <= sections
    declared = {c.findtext("class") for c in _ui_tree().iter("customwidget")}
    custom = {w.get("class") for w in widgets.values() if w.get("class").startswith(("qMRML", "ctk", "qSlicer"))}
    assert custom <= declared, f"undeclared custom widgets {custom - declared}"
    assert any(w.get("class") == "QPushButton" and w.get("name") == "applyButton" for w in widgets.values())


def test_every_mrml_widget_receives_the_scene():
    widgets = _ui_widgets()
    needs_scene = {name for name, w in widgets.items() if w.get("class") in ("qMRMLNodeComboBox", "qMRMLTableView")}
    fed = {
        c.findtext("receiver")
        for c in _ui_tree().iter("connection")
        if c.findtext("sender") == "KneeAlignment" and c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
        and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    assert needs_scene <= fed, f"no mrmlSceneChanged -> setMRMLScene connection for {needs_scene - fed}"


def test_ui_parameter_bindings_match_the_parameter_node():
    fields = _parameter_node_fields()
    for name, widget in _ui_widgets().items():
        prop = _ui_property(widget, "SlicerParameterName")
        if prop is None:
            continue
        parameter = prop.findtext("string")
        assert parameter in fields, f"{name} binds to {parameter!r}, which the parameter node lacks"
        annotation = ast.unparse(fields[parameter])
        if widget.get("class") == "qMRMLNodeComboBox":
            node_types = [s.text for s in _ui_property(widget, "nodeTypes").iter("string")]
            assert node_types == [annotation], f"{name} offers {node_types} for a {annotation} parameter"
        if widget.get("class") == "QComboBox":
            # Slicer's QComboBox connector raises unless the str field carries Choice([...]).
            assert re.fullmatch(r"Annotated\[str, Choice\(.*\)\]", annotation), f"{parameter}: {annotation}"


# ------------------------------------------------- logic, with Slicer replaced by stand-ins
#
# The stand-ins provide only the names KneeAlignment.py touches when imported and the few
# node methods its pixel mapping calls (names as in Slicer's vtkMRMLMarkupsNode); the
# numbers come from KneeAlignmentLib and are checked against the IJK-to-RAS matrix directly.

POSITION_DEFINED, POSITION_MISSING = 2, 3  # vtkMRMLMarkupsNode::PositionDefined, PositionMissing


class _PointList:
    """Stand-in for a vtkMRMLMarkupsFiducialNode: labels, world RAS positions, position statuses."""

    def __init__(self, labels, positions_ras, statuses=None):
        self.labels, self.positions_ras = list(labels), np.asarray(positions_ras, dtype=float)
        self.statuses = list(statuses) if statuses is not None else [POSITION_DEFINED] * len(self.labels)

    def remove(self, i):
        self.labels.pop(i), self.statuses.pop(i)
        self.positions_ras = np.delete(self.positions_ras, i, axis=0)

    def add(self, label, position_ras):
        self.labels.append(label), self.statuses.append(POSITION_DEFINED)
        self.positions_ras = np.vstack([self.positions_ras, position_ras])

    def GetName(self):
        return "Landmarks"

    def GetAttribute(self, name):  # as a volume without DICOM attributes
        return None

    def GetNumberOfControlPoints(self):
        return len(self.labels)

    def GetNthControlPointLabel(self, i):
        return self.labels[i]

    def GetNthControlPointPositionStatus(self, i):
        return self.statuses[i]


def _stand_in_modules() -> dict[str, types.ModuleType]:
    class Base:
        def __init__(self, *args, **kwargs):
            pass

    modules = {name: types.ModuleType(name) for name in (
        "qt", "vtk", "slicer", "slicer.i18n", "slicer.parameterNodeWrapper", "slicer.ScriptedLoadableModule",
        "slicer.util")}
    slicer = modules["slicer"]
    for name in ("vtkMRMLMarkupsFiducialNode", "vtkMRMLScalarVolumeNode", "vtkMRMLTableNode"):
        setattr(slicer, name, type(name, (), {}))
    slicer.vtkMRMLMarkupsNode = type("vtkMRMLMarkupsNode", (), {"PositionDefined": POSITION_DEFINED})
    modules["slicer.i18n"].tr = lambda text: text
    modules["slicer.i18n"].translate = lambda context, text: text
    modules["slicer.parameterNodeWrapper"].parameterNodeWrapper = lambda cls: cls
    modules["slicer.parameterNodeWrapper"].Choice = lambda choices: tuple(choices)
    scripted = modules["slicer.ScriptedLoadableModule"]
    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic"):
        setattr(scripted, name, type(name, (Base,), {}))
    scripted.ScriptedLoadableModuleTest = type("ScriptedLoadableModuleTest", (Base,), {})
    modules["slicer.util"].VTKObservationMixin = type("VTKObservationMixin", (Base,), {})
    modules["slicer.util"].arrayFromMarkupsControlPoints = lambda node, world=False: node.positions_ras.copy()
    modules["slicer.util"].updateMarkupsControlPointsFromArray = (
        lambda node, array: setattr(node, "positions_ras", array))
    slicer.util = modules["slicer.util"]
    return modules


@pytest.fixture
def module(monkeypatch):
    """KneeAlignment.py imported against the stand-ins (also proves it imports without torch)."""
    for name, stand_in in _stand_in_modules().items():
        monkeypatch.setitem(sys.modules, name, stand_in)
    spec = importlib.util.spec_from_file_location("KneeAlignmentUnderTest", MODULE_PY)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


# Anisotropic, oblique-free plane with an offset origin: column 0.9 mm, row 1.1 mm.
IJK_TO_RAS = np.array([[-0.9, 0, 0, 20.0], [0, -1.1, 0, -35.0], [0, 0, 1, 0], [0, 0, 0, 1]])


def _labelled_example(kind):
    """(names, (K, 2) px, (K, 3) RAS) of the schema's example, placed with IJK_TO_RAS directly."""
    from KneeAlignmentLib.schema import example_landmarks_px, load_schema

    points_px = example_landmarks_px(kind, spacing_mm=1.0, image_size=(300, 240))
    homogeneous = np.c_[points_px, np.zeros(len(points_px)), np.ones(len(points_px))]
    return list(load_schema(kind).names), points_px, (homogeneous @ IJK_TO_RAS.T)[:, :3]


@pytest.mark.parametrize("kind", ["preop", "postop"])
def test_logic_maps_labelled_ras_points_to_schema_ordered_pixels(module, kind):
    from KneeAlignmentLib.markups import ImagePlane

    names, points_px, positions_ras = _labelled_example(kind)
    order = np.random.default_rng(0).permutation(len(names))  # a point list in any order
    node = _PointList([names[i] for i in order], positions_ras[order])
    schema, mapped_px = module.KneeAlignmentLogic.landmarksPx(ImagePlane.from_ijk_to_ras(IJK_TO_RAS), node, "Auto")
    assert schema.kind == kind
    np.testing.assert_allclose(mapped_px, points_px, atol=1e-9)
    explicit = {"preop": "Pre-op", "postop": "Post-op"}[kind]
    assert module.KneeAlignmentLogic.landmarksPx(ImagePlane.from_ijk_to_ras(IJK_TO_RAS), node, explicit)[0].kind == kind


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda n: n.remove(5), "missing landmarks 'FLC05'"),
        (lambda n: n.statuses.__setitem__(3, POSITION_MISSING), "missing landmarks 'FLC03'"),
        (lambda n: n.add("FLC00", n.positions_ras[0]), "duplicated labels 'FLC00'"),
        (lambda n: n.add("Extra", n.positions_ras[0]), "unknown labels 'Extra'"),
    ],
)
def test_logic_names_the_landmarks_that_do_not_fit_the_schema(module, edit, message):
    from KneeAlignmentLib.errors import MarkupsError
    from KneeAlignmentLib.markups import ImagePlane

    names, _, positions_ras = _labelled_example("preop")
    node = _PointList(names, positions_ras)
    edit(node)
    with pytest.raises(MarkupsError, match=message):
        module.KneeAlignmentLogic.landmarksPx(ImagePlane.from_ijk_to_ras(IJK_TO_RAS), node, "Pre-op")


def test_logic_rejects_points_off_the_radiograph_plane_and_unknown_choices(module):
    from KneeAlignmentLib.errors import MarkupsError
    from KneeAlignmentLib.markups import ImagePlane

    names, _, positions_ras = _labelled_example("preop")
    plane = ImagePlane.from_ijk_to_ras(IJK_TO_RAS)
    lifted = positions_ras.copy()
    lifted[7, 2] += 2.0  # 2 mm above the slice
    with pytest.raises(MarkupsError, match="points not in the image plane"):
        module.KneeAlignmentLogic.landmarksPx(plane, _PointList(names, lifted), "Pre-op")
    with pytest.raises(ValueError, match="schema must be"):
        module.KneeAlignmentLogic.landmarksPx(plane, _PointList(names, positions_ras), "Preop")


def test_dicom_side_reads_image_laterality_before_laterality(module, monkeypatch):
    class Volume:
        def __init__(self, uids):
            self.uids = uids

        def GetAttribute(self, name):
            return self.uids if name == "DICOM.instanceUIDs" else None

    class Database:
        def __init__(self, values):
            self.values = values

        def instanceValue(self, uid, tag):
            return self.values.get((uid, tag), "")

    slicer = sys.modules["slicer"]
    both = Database({("1.2", "0020,0062"): "L ", ("1.2", "0020,0060"): "R"})
    monkeypatch.setattr(slicer, "dicomDatabase", both, raising=False)
    assert module.KneeAlignmentLogic.dicomSide(Volume("1.2 1.3")) == "L"
    monkeypatch.setattr(slicer, "dicomDatabase", Database({("1.2", "0020,0062"): "U", ("1.2", "0020,0060"): "r"}))
    assert module.KneeAlignmentLogic.dicomSide(Volume("1.2")) == "R"
    assert module.KneeAlignmentLogic.dicomSide(Volume(None)) is None


def test_measure_from_landmarks_matches_geometry_and_draws_the_angle_between_the_axes(module, monkeypatch):
    from KneeAlignmentLib import geometry
    from KneeAlignmentLib.markups import ImagePlane
    from KneeAlignmentLib.schema import load_schema

    names, points_px, positions_ras = _labelled_example("preop")
    drawn = {}

    def output_node(landmarks_node, class_name, title, color):
        return drawn.setdefault(title, _PointList([], np.zeros((0, 3))))

    cls = module.KneeAlignmentLogic
    monkeypatch.setattr(cls, "imagePlane", staticmethod(lambda volume: ImagePlane.from_ijk_to_ras(IJK_TO_RAS)))
    monkeypatch.setattr(cls, "_outputNode", staticmethod(output_node))
    node = _PointList(names, positions_ras)  # serves as the volume too: it has no DICOM attributes
    alignment = cls().measureFromLandmarks(node, node, side="Auto", schema="Auto", resultsTable=None)

    expected = geometry.compute_alignment(points_px, load_schema("preop"), "R", (1.1, 0.9))
    assert alignment.side == "R"  # no DICOM laterality: taken from the fibula
    assert alignment.atfa_fts_deg == pytest.approx(expected.atfa_fts_deg, abs=1e-6)
    assert alignment.atfa_fnts_deg == pytest.approx(expected.atfa_fnts_deg, abs=1e-6)
    titles = [f"{bone} axis {method}" for bone in ("femoral", "tibial") for method in ("FTS", "FNTS")]
    assert sorted(drawn) == sorted(titles + ["aTFA FTS", "aTFA FNTS"])
    for method, atfa in (("FTS", expected.atfa_fts_deg), ("FNTS", expected.atfa_fnts_deg)):
        proximal, vertex, distal = drawn[f"aTFA {method}"].positions_ras  # RAS mm, as Slicer measures
        u, v = proximal - vertex, distal - vertex
        shown = np.degrees(np.arccos(u @ v / np.linalg.norm(u) / np.linalg.norm(v)))
        assert shown == pytest.approx(180.0 - abs(atfa), abs=1e-6)
        femoral_ras = drawn[f"femoral axis {method}"].positions_ras
        np.testing.assert_allclose(femoral_ras[1], vertex)
