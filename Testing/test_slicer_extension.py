"""Static checks of the 3D Slicer extension: CMake lists, resources, icons, the module file, the .ui.

Slicer is not installed here, so nothing below imports ``slicer``: the CMake files are
parsed as text, the module file and the core package as Python ASTs, the .ui as XML.
What a Slicer build would only reveal late (a script missing from the install, a widget
name typo, torch imported when Slicer's generic tests import every module) fails here.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import re
import struct
import sys
import types
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "KneeAlignment"
LIB_DIR = MODULE_DIR / "KneeAlignmentLib"
MODULE_PY = MODULE_DIR / "KneeAlignment.py"
SELF_TEST_PY = MODULE_DIR / "KneeAlignmentSelfTest" / "__init__.py"
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


def test_icon_and_screenshot_urls_name_files_in_the_repository():
    sets = _cmake_sets(_cmake_text(ROOT / "CMakeLists.txt"))
    raw = sets["EXTENSION_HOMEPAGE"][0].replace("https://github.com/", "https://raw.githubusercontent.com/")
    urls = [sets["EXTENSION_ICONURL"][0], *" ".join(sets["EXTENSION_SCREENSHOTURLS"]).split()]
    assert len(urls) >= 2
    for url in urls:
        branch, _, relative = url[len(raw):].lstrip("/").partition("/")
        assert branch == "main" and (ROOT / relative).is_file(), f"{url}: no {relative} in the repository"


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
        "KneeAlignmentTest": "SelfTest",
    }
    for name, base in expected.items():
        assert name in classes, f"KneeAlignment.py defines no class {name}"
        assert base in _base_names(classes[name]), f"{name} must derive from {base}"
    # Slicer finds the test as KneeAlignment.KneeAlignmentTest; its body is the self-test package's
    self_test = _classes(ast.parse(SELF_TEST_PY.read_text()))["SelfTest"]
    assert "ScriptedLoadableModuleTest" in _base_names(self_test)
    test_methods = {n.name for n in self_test.body if isinstance(n, ast.FunctionDef)}
    assert "runTest" in test_methods and any(m.startswith("test_") for m in test_methods)


@pytest.mark.parametrize("path", [MODULE_PY, SELF_TEST_PY], ids=lambda p: p.relative_to(MODULE_DIR).as_posix())
def test_module_files_import_torch_monai_and_the_core_lazily(path):
    imports = _imported_roots(_import_time_nodes(ast.parse(path.read_text(), filename=str(path))))
    early = [(root, line) for root, line in imports if root in LAZY_ONLY_MODULES]
    assert not early, f"{path.name} imports at import time (must be inside methods): {early}"


def test_module_file_stays_thin():
    assert len(MODULE_PY.read_text().splitlines()) < 1000  # everything but MRML and Qt lives in the core


def test_gui_choices_map_onto_core_values():
    from KneeAlignmentLib import schema, workflow
    from KneeAlignmentLib.bundle.modelset import resolve_device

    constants = {name: dict(getattr(workflow, name)) for name in ("SCHEMA_KINDS", "SIDE_CODES", "DEVICES")}
    assert sorted(constants["SCHEMA_KINDS"].values()) == sorted(schema.KINDS)
    assert sorted(constants["SIDE_CODES"].values()) == ["L", "R"]
    for device in constants["DEVICES"].values():
        assert device == "auto" or resolve_device(device).type in ("cpu", "cuda")
    choices = _parameter_node_fields()
    for field, table in (("model", "SCHEMA_KINDS"), ("side", "SIDE_CODES"), ("device", "DEVICES")):
        listed = [n.value for n in ast.walk(choices[field]) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        assert set(listed) - {"Auto"} == set(constants[table]) - {"Auto"}, f"{field} choices differ from {table}"
        assert listed[0] == "Auto"


def test_help_text_says_what_how_on_what_data_and_not_for_clinical_use():
    module = _classes(_module_ast())["KneeAlignment"]
    texts = [n.value for n in ast.walk(module) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    help_text = max(texts, key=len)
    for phrase in ("anatomical tibiofemoral angle", "FTS", "FNTS", "stacked hourglass", "synthetic radiographs",
                   "phantom", "Drag any landmark", "manual mode"):
        assert phrase in help_text, phrase
    [assignment] = [n for n in ast.walk(module) if isinstance(n, ast.Assign)
                    and ast.unparse(n.targets[0]) == "self.parent.helpText"]
    assert "DISCLAIMER" in {n.id for n in ast.walk(assignment.value) if isinstance(n, ast.Name)}  # the core's wording


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
    assert {"Inputs", "Landmarks", "Results", "Settings"} <= sections
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
# The stand-ins model just the MRML and Qt calls KneeAlignment.py makes, with the names and
# behaviour of Slicer's classes (vtkMRMLMarkupsNode: control points with label, description,
# position status and visibility; Point* events; vtkMRMLTableNode columns; subject
# hierarchy parents). An unknown call fails with AttributeError. The numbers come from
# KneeAlignmentLib and are checked against the IJK-to-RAS matrix directly.

POSITION_UNDEFINED, POSITION_DEFINED = 0, 2  # vtkMRMLMarkupsNode::PositionUndefined, PositionDefined
EVENTS = {name: 19000 + i for i, name in enumerate((
    "LockModifiedEvent", "LabelFormatModifiedEvent", "PointAddedEvent", "PointRemovedEvent",
    "PointPositionDefinedEvent", "PointPositionUndefinedEvent", "PointPositionMissingEvent", "PointPositionNonMissingEvent", "PointModifiedEvent",
    "PointStartInteractionEvent", "PointEndInteractionEvent"))}  # vtkMRMLMarkupsNode's enum, in order


class _Node:
    """Common vtkMRMLNode behaviour: name, ID, attributes, node references, observers."""

    def __init__(self, scene, class_name, name):
        self.scene, self.class_name, self.name = scene, class_name, name
        self.attributes, self.references, self.observers = {}, {}, []

    def GetName(self):
        return self.name

    def SetName(self, name):
        self.name = name

    def GetID(self):
        return self.id

    def GetClassName(self):
        return self.class_name

    def IsA(self, class_name):
        return class_name in (self.class_name, "vtkMRMLNode", "vtkMRMLMarkupsNode")

    def SetAttribute(self, key, value):
        self.attributes[key] = value

    def GetAttribute(self, key):
        return self.attributes.get(key)

    def SetNodeReferenceID(self, role, node_id):
        self.references[role] = node_id

    def GetNodeReference(self, role):
        return self.scene.nodes.get(self.references.get(role))

    def InvokeEvent(self, event):
        for observed_event, callback in list(self.observers):
            if observed_event == event:
                callback(self, event)

    def Modified(self):
        pass


class _Display:
    """vtkMRMLMarkupsDisplayNode setters (values kept for the tests)."""

    def __init__(self):
        self.values = {}

    def __getattr__(self, name):
        if name.startswith("Set") and name[3:] in ("Color", "SelectedColor", "GlyphScale", "TextScale", "Opacity",
                                                    "PointLabelsVisibility", "PropertiesLabelVisibility"):
            return lambda *value: self.values.__setitem__(name[3:], value if len(value) > 1 else value[0])
        raise AttributeError(name)


class _Markups(_Node):
    """A vtkMRMLMarkups*Node: control points in RAS, Point* events as Slicer invokes them."""

    def __init__(self, scene, class_name, name):
        super().__init__(scene, class_name, name)
        self.points, self.display, self.locked, self.fixed = [], None, False, False
        self.angle_mode, self.rotation_axis, self.curve_type = "Minimal", (0.0, 0.0, 1.0), "CardinalSpline"

    def _point(self, position, label, status=POSITION_DEFINED):
        return {"position": np.array(position, float), "label": label, "description": "", "status": status,
                "visible": True}

    def GetNumberOfControlPoints(self):
        return len(self.points)

    def AddControlPoint(self, position, label=""):
        if self.fixed:
            raise RuntimeError("fixed number of control points")
        self.points.append(self._point(position, label or f"{self.name}-{len(self.points) + 1}"))
        self.InvokeEvent(EVENTS["PointAddedEvent"])
        return len(self.points) - 1

    def RemoveNthControlPoint(self, i):
        del self.points[i]
        self.InvokeEvent(EVENTS["PointRemovedEvent"])

    def SetNthControlPointPosition(self, i, x, y, z):
        self.points[i].update(position=np.array([x, y, z], float), status=POSITION_DEFINED)
        self.InvokeEvent(EVENTS["PointModifiedEvent"])

    def UnsetNthControlPointPosition(self, i):
        self.points[i]["status"] = POSITION_UNDEFINED

    def GetNthControlPointPositionStatus(self, i):
        return self.points[i]["status"]

    def GetNthControlPointLabel(self, i):
        return self.points[i]["label"]

    def SetNthControlPointLabel(self, i, label):
        self.points[i]["label"] = label

    def GetNthControlPointDescription(self, i):
        return self.points[i]["description"]

    def SetNthControlPointDescription(self, i, description):
        self.points[i]["description"] = description

    def SetNthControlPointVisibility(self, i, visible):
        self.points[i]["visible"] = bool(visible)

    def SetFixedNumberOfControlPoints(self, fixed):
        self.fixed = bool(fixed)

    def SetLocked(self, locked):
        self.locked = bool(locked)

    def StartModify(self):
        return 0

    def EndModify(self, was_modifying):
        pass

    def CreateDefaultDisplayNodes(self):
        self.display = self.display or _Display()

    def GetDisplayNode(self):
        return self.display

    def SetCurveTypeToLinear(self):
        self.curve_type = "Linear"

    def SetAngleMeasurementModeToOrientedSigned(self):
        self.angle_mode = "OrientedSigned"

    def SetOrientationRotationAxis(self, r, a, s):
        self.rotation_axis = (r, a, s)

    def GetAngleDegrees(self):
        """vtkMRMLMarkupsAngleNode::GetAngleDegrees."""
        p1, c, p2 = (p["position"] for p in self.points)
        v1, v2 = (p1 - c) / np.linalg.norm(p1 - c), (p2 - c) / np.linalg.norm(p2 - c)
        angle = np.degrees(np.arccos(np.clip(v1 @ v2, -1, 1)))
        return angle if self.angle_mode == "Minimal" or np.cross(v1, v2) @ self.rotation_axis >= 0 else -angle

    # helpers for the tests
    def positions_ras(self):
        return np.array([p["position"] for p in self.points]).reshape(-1, 3)

    def labels(self):
        return [p["label"] for p in self.points]


class _Array:
    """vtkDoubleArray / vtkStringArray: a named column of values."""

    def __init__(self, numeric):
        self.numeric, self.name, self.values = numeric, "", []

    def SetName(self, name):
        self.name = name

    def GetName(self):
        return self.name

    def SetValue(self, i, value):
        if not isinstance(value, float if self.numeric else str):
            raise TypeError(f"column {self.name}: {value!r}")
        self.values += [float("nan") if self.numeric else ""] * (i + 1 - len(self.values))
        self.values[i] = value

    def GetValue(self, i):
        return self.values[i]


class _Table(_Node):
    """vtkMRMLTableNode with its vtkTable (GetTable returns the node itself here)."""

    def __init__(self, scene, class_name, name):
        super().__init__(scene, class_name, name)
        self.columns, self.units, self.descriptions, self.rows = [], {}, {}, 0

    def AddColumn(self, array):
        self.columns.append(array)

    def GetNumberOfColumns(self):
        return len(self.columns)

    def GetColumnIndex(self, name):
        return next((i for i, c in enumerate(self.columns) if c.name == name), -1)

    def SetColumnUnitLabel(self, name, unit):
        self.units[name] = unit

    def GetColumnUnitLabel(self, name):
        return self.units.get(name, "")

    def SetColumnDescription(self, name, description):
        self.descriptions[name] = description

    def GetTable(self):
        return self

    def GetColumnByName(self, name):
        index = self.GetColumnIndex(name)
        return self.columns[index] if index >= 0 else None

    def GetNumberOfRows(self):
        return self.rows

    def AddEmptyRow(self):
        self.rows += 1
        for column in self.columns:
            column.SetValue(self.rows - 1, float("nan") if column.numeric else "")
        return self.rows - 1


class _Volume(_Node):
    """A scalar volume: voxel array (K, J, I), IJK-to-RAS matrix, display window/level and colour."""

    def __init__(self, scene, array, ijk_to_ras, window=None, colour="vtkMRMLColorTableNodeGrey", file=None):
        super().__init__(scene, "vtkMRMLScalarVolumeNode", "Knee")
        self.array, self.matrix, self.window, self.colour = array, np.asarray(ijk_to_ras, float), window, colour
        self.file, self.modified = file, False

    def GetStorageNode(self):  # vtkMRMLStorableNode: the file it was read from, if any
        if self.file is None:
            return None
        return type("Storage", (), {"GetFileName": lambda storage: str(self.file)})()

    def GetModifiedSinceRead(self):
        return self.modified

    def GetImageData(self):
        return self.array

    def GetParentTransformNode(self):
        return None

    def GetIJKToRASMatrix(self, matrix):
        matrix.array = self.matrix.copy()

    def GetDisplayNode(self):
        volume = self

        class Display:
            def GetWindow(self):
                return volume.window[1] if volume.window else 0.0

            def GetLevel(self):
                return volume.window[0] if volume.window else 0.0

            def GetColorNodeID(self):
                return volume.colour

        return Display()


class _Scene:
    """vtkMRMLScene: nodes by ID, unique names, and a subject hierarchy recording parents."""

    def __init__(self):
        self.nodes, self.parents, self.files = {}, {}, {}

    def add(self, node):
        node.id = f"vtkMRMLNode{len(self.nodes) + 1}"
        self.nodes[node.id] = node
        return node

    def AddNewNodeByClass(self, class_name, name=""):
        factory = _Table if class_name == "vtkMRMLTableNode" else _Markups
        return self.add(factory(self, class_name, name))

    def GenerateUniqueName(self, name):
        taken = {n.name for n in self.nodes.values()}
        return name if name not in taken else next(f"{name}_{i}" for i in range(1, 999) if f"{name}_{i}" not in taken)

    def GetSubjectHierarchyNode(self):
        scene = self

        class SubjectHierarchy:
            def GetItemByDataNode(self, node):
                return node.id

            def SetItemParent(self, item, parent):
                scene.parents[item] = parent

        return SubjectHierarchy()

    def Clear(self):
        self.nodes.clear(), self.parents.clear()

    def of_class(self, class_name):
        return [n for n in self.nodes.values() if n.class_name == class_name]


class _Timer:
    """qt.QTimer: the tests fire the timeout themselves."""

    def __init__(self):
        self.active, self.callbacks = False, []

    def setSingleShot(self, single):
        pass

    def setInterval(self, ms):
        self.interval = ms

    def connect(self, signal, callback):
        assert signal == "timeout()"
        self.callbacks.append(callback)

    def start(self):
        self.active = True

    def stop(self):
        self.active = False

    def isActive(self):
        return self.active

    def fire(self):
        self.active = False
        for callback in self.callbacks:
            callback()


class _ObservationMixin:
    """slicer.util.VTKObservationMixin over the stand-in nodes' observer lists."""

    def __init__(self):
        self.Observations = []

    def addObserver(self, obj, event, method):
        obj.observers.append((event, method))
        self.Observations.append((obj, event, method))

    def removeObservers(self, method=None):
        for obj, event, m in [o for o in self.Observations if method is None or o[2] == method]:
            obj.observers.remove((event, m))
            self.Observations.remove((obj, event, m))


def _update_from_array(node, array, world=False):
    """slicer.util.updateMarkupsControlPointsFromArray: positions set, points added or removed."""
    for i, position in enumerate(array):
        if i < len(node.points):
            node.points[i].update(position=np.array(position, float), status=POSITION_DEFINED)
        else:
            node.points.append(node._point(position, f"{node.name}-{i + 1}"))
    del node.points[len(array):]
    node.InvokeEvent(EVENTS["PointModifiedEvent"])


def _copy_nodes(nodes, scene):
    """Deep copies of nodes (their observers, which belong to the running logic, left out) in ``scene``."""
    copies = {}
    for node_id, node in nodes.items():
        observers, node.observers = node.observers, []
        try:
            copies[node_id] = copy.deepcopy(node, memo={id(scene): scene})
        finally:
            node.observers = observers
    return copies


def _save_scene(scene, path):
    """slicer.util.saveScene: every node with its attributes, references and data, as a .mrb keeps them."""
    scene.files[str(path)] = (_copy_nodes(scene.nodes, scene), dict(scene.parents))
    Path(path).write_bytes(b"stand-in scene bundle")
    return True


def _load_scene(scene, path):
    """slicer.util.loadScene into the (cleared) scene: the saved nodes, IDs kept."""
    nodes, parents = scene.files[str(path)]
    scene.nodes.update(_copy_nodes(nodes, scene))
    scene.parents.update(parents)


def _parameter_node_wrapper(cls):
    """slicer.parameterNodeWrapper: typed fields stored in a scripted module node (MRML nodes as references)."""
    fields = set(cls.__annotations__)
    defaults = {name: getattr(cls, name) for name in fields if hasattr(cls, name)}

    class Wrapped:
        def __init__(self, node):
            object.__setattr__(self, "_node", node)

        def __getattr__(self, name):
            if name not in fields:
                raise AttributeError(name)
            if name in self._node.references:
                return self._node.GetNodeReference(name)
            return self._node.attributes.get(name, defaults.get(name))

        def __setattr__(self, name, value):
            if name not in fields:
                raise AttributeError(name)
            if isinstance(value, _Node):
                self._node.SetNodeReferenceID(name, value.GetID())
            else:
                self._node.SetAttribute(name, value)

    Wrapped.__name__ = cls.__name__
    return Wrapped


def _save_node(node, path):
    """slicer.util.saveNode of a point list: a markups file with its labels and RAS positions; True when written."""
    import json

    points = [{"label": p["label"], "position": list(p["position"])} for p in node.points]
    Path(path).write_text(json.dumps({"markups": [{"type": "Fiducial", "coordinateSystem": "RAS",
                                                   "controlPoints": points}]}))
    return True


def _stored_values(path: Path) -> np.ndarray:
    """The voxels Slicer's readers give: stored values (DICOM: after the modality LUT), no VOI, no inversion."""
    import pydicom
    import SimpleITK as sitk
    from pydicom.pixels import apply_modality_lut

    if pydicom.misc.is_dicom(path):
        ds = pydicom.dcmread(path)
        return apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)


def _load_volume(scene, path):
    """slicer.util.loadVolume of a 2D image: one slice, i along L, j along P, spacing from the file, stored
    values as voxels, an automatic display window (Slicer's default)."""
    from KneeAlignmentLib.imageio import read_radiograph

    radiograph = read_radiograph(path)
    row_mm, col_mm = radiograph.spacing_mm or (1.0, 1.0)
    ijk_to_ras = np.diag([-col_mm, -row_mm, 1.0, 1.0])
    voxels = _stored_values(Path(path))
    low, high = np.percentile(voxels, [0.5, 99.5])
    return scene.add(_Volume(scene, voxels[None], ijk_to_ras, window=((low + high) / 2, max(high - low, 1.0)),
                             file=path))


def _stand_in_modules(scene: _Scene) -> dict[str, types.ModuleType]:
    class Base:
        def __init__(self, *args, **kwargs):
            pass

        def getParameterNode(self):  # the module's singleton parameter node in the scene
            found = scene.of_class("vtkMRMLScriptedModuleNode")
            return found[0] if found else scene.add(_Node(scene, "vtkMRMLScriptedModuleNode", "KneeAlignment"))

    modules = {name: types.ModuleType(name) for name in (
        "qt", "vtk", "slicer", "slicer.i18n", "slicer.parameterNodeWrapper", "slicer.ScriptedLoadableModule",
        "slicer.util")}
    slicer, util, qt, vtk = (modules[n] for n in ("slicer", "slicer.util", "qt", "vtk"))
    for name in ("vtkMRMLMarkupsFiducialNode", "vtkMRMLScalarVolumeNode", "vtkMRMLTableNode"):
        setattr(slicer, name, type(name, (), {}))
    slicer.vtkMRMLMarkupsNode = type("vtkMRMLMarkupsNode", (), {"PositionDefined": POSITION_DEFINED, **EVENTS})
    slicer.mrmlScene = scene
    modules["slicer.i18n"].tr = lambda text: text
    modules["slicer.i18n"].translate = lambda context, text: text
    modules["slicer.parameterNodeWrapper"].parameterNodeWrapper = _parameter_node_wrapper
    modules["slicer.parameterNodeWrapper"].Choice = lambda choices: tuple(choices)
    scripted = modules["slicer.ScriptedLoadableModule"]
    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic"):
        setattr(scripted, name, type(name, (Base,), {}))
    scripted.ScriptedLoadableModuleTest = type("ScriptedLoadableModuleTest", (unittest.TestCase,),
                                               {"delayDisplay": lambda self, message, msec=None: None})
    util.VTKObservationMixin = _ObservationMixin
    util.arrayFromMarkupsControlPoints = lambda node, world=False: node.positions_ras()
    util.updateMarkupsControlPointsFromArray = _update_from_array
    util.arrayFromVolume = lambda volume: volume.array
    util.arrayFromVTKMatrix = lambda matrix: matrix.array
    util.settingsValue = lambda key, default, converter=lambda v: v, settings=None: default
    util.addVolumeFromArray = lambda array, ijk_to_ras, name: scene.add(_Volume(scene, np.array(array), ijk_to_ras))
    util.getNodesByClass = scene.of_class
    util.loadVolume = lambda path, properties: _load_volume(scene, path)
    util.saveNode = _save_node
    util.saveScene = lambda path, properties={}: _save_scene(scene, path)
    util.loadScene = lambda path, properties={}: _load_scene(scene, path)
    vtk.vtkMatrix4x4 = type("vtkMatrix4x4", (), {})
    vtk.vtkDoubleArray = lambda: _Array(numeric=True)
    vtk.vtkStringArray = lambda: _Array(numeric=False)
    qt.QTimer = _Timer
    slicer.util = util
    return modules


@pytest.fixture
def scene():
    return _Scene()


@pytest.fixture
def module(monkeypatch, scene):
    """KneeAlignment.py imported against the stand-ins (also proves it imports without torch)."""
    for name, stand_in in _stand_in_modules(scene).items():
        monkeypatch.setitem(sys.modules, name, stand_in)
    monkeypatch.syspath_prepend(str(MODULE_DIR))  # as Slicer puts a scripted module's folder on the path
    monkeypatch.delitem(sys.modules, "KneeAlignmentSelfTest", raising=False)  # imported again with these stand-ins
    spec = importlib.util.spec_from_file_location("KneeAlignmentUnderTest", MODULE_PY)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


# An anisotropic plane as Slicer loads a 2D image (i along L, j along P), origin offset.
IJK_TO_RAS = np.array([[-0.9, 0, 0, 20.0], [0, -1.1, 0, -35.0], [0, 0, 1, 0], [0, 0, 0, 1]])
SPACING = (1.1, 0.9)  # (row_mm, col_mm) of IJK_TO_RAS


def _ras(points_px):
    """(N, 3) RAS of pixels (x, y) = voxels (i, j, 0), straight from IJK_TO_RAS."""
    points_px = np.atleast_2d(points_px)
    return (np.c_[points_px, np.zeros(len(points_px)), np.ones(len(points_px))] @ IJK_TO_RAS.T)[:, :3]


def _case(scene, kind, *, valgus=5.0, order=None):
    """(volume, labelled point list, (K, 2) true px) of the schema's example on a 300 x 240 radiograph."""
    from KneeAlignmentLib.schema import example_landmarks_px, load_schema

    points_px = example_landmarks_px(kind, atfa_valgus_deg=valgus, spacing_mm=1.0, image_size=(300, 240))
    pixels = np.random.default_rng(0).integers(0, 4096, size=(1, 300, 240)).astype(np.int16)
    volume = scene.add(_Volume(scene, pixels, IJK_TO_RAS, window=(2048.0, 4096.0)))
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Landmarks")
    names = load_schema(kind).names
    order = np.arange(len(names)) if order is None else order
    for i in order:
        node.AddControlPoint(_ras(points_px[i])[0], names[i])
    return volume, node, points_px


def _by_role(node, role):
    return node.GetNodeReference(f"KneeAlignment.{role}")


@pytest.mark.parametrize("kind", ["preop", "postop"])
def test_point_list_becomes_a_case_with_axes_angles_and_a_table_row(module, scene, kind):
    from KneeAlignmentLib.case_results import COLUMNS
    from KneeAlignmentLib.geometry import compute_alignment
    from KneeAlignmentLib.schema import load_schema

    order = np.random.default_rng(1).permutation(len(load_schema(kind)))  # a point list in any order
    volume, node, points_px = _case(scene, kind, order=order)
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", "Results")
    logic = module.KneeAlignmentLogic()
    alignment = logic.adoptLandmarks(volume, node, side="Auto", schema="Auto", resultsTable=table)

    expected = compute_alignment(points_px, load_schema(kind), "R", SPACING)
    assert alignment.side == "R"  # no DICOM laterality: detected from the fibula
    assert alignment.atfa_fts_deg == pytest.approx(expected.atfa_fts_deg, abs=1e-9)
    assert node.GetAttribute("KneeAlignment.Kind") == kind
    assert node.GetAttribute("KneeAlignment.SideSource") == "anatomy (fibula is lateral)"
    for method in ("FTS", "FNTS"):
        angle = _by_role(node, f"Angle.{method}")
        assert angle.class_name == "vtkMRMLMarkupsAngleNode" and angle.angle_mode == "OrientedSigned"
        assert angle.GetAngleDegrees() == pytest.approx(getattr(expected, f"atfa_{method.lower()}_deg"), abs=1e-9)
        for bone in ("femoral", "tibial"):
            line = _by_role(node, f"Axis.{bone}.{method}")
            expected_px = getattr(expected, f"{bone}_axis_{method.lower()}_px")
            np.testing.assert_allclose(line.positions_ras(), _ras(expected_px), atol=1e-9)
            assert line.locked and scene.parents[line.id] == node.id  # under the case in the data tree
    outlines = [n for n in scene.of_class("vtkMRMLMarkupsCurveNode")]
    assert len(outlines) == len(load_schema(kind).contours)
    assert all(n.curve_type == "Linear" and not any(p["visible"] for p in n.points) for n in outlines)
    assert _by_role(node, "DefiningPoints").labels()[:2] == ["FSC1", "FSC2"]

    assert [c.name for c in table.columns] == [c.name for c in COLUMNS]
    assert table.GetNumberOfRows() == 1 and table.GetColumnUnitLabel("atfa_fts_deg") == "deg"
    value = lambda name: table.GetColumnByName(name).GetValue(0)  # noqa: E731
    assert [value(n) for n in ("landmarks", "source", "schema", "side")] == ["Landmarks", "landmarks", kind, "R"]
    assert value("atfa_fnts_deg") == pytest.approx(expected.atfa_fnts_deg, abs=1e-9)

    # Measuring again updates the nodes and the row instead of adding new ones.
    logic.adoptLandmarks(volume, node, side="Right", schema={"preop": "Pre-op", "postop": "Post-op"}[kind])
    assert table.GetNumberOfRows() == 1
    assert len(scene.of_class("vtkMRMLMarkupsLineNode")) == 4 and len(scene.of_class("vtkMRMLMarkupsAngleNode")) == 2


def test_dragging_a_landmark_recomputes_throttled_and_at_the_end(module, scene, monkeypatch):
    from KneeAlignmentLib.geometry import compute_alignment
    from KneeAlignmentLib.schema import load_schema

    volume, node, points_px = _case(scene, "preop")
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", "Results")
    logic = module.KneeAlignmentLogic()
    logic.adoptLandmarks(volume, node, resultsTable=table)

    def no_pixels(volume):
        raise AssertionError("a live update must not read the radiograph's pixels (too slow on a large film)")

    monkeypatch.setattr(sys.modules["slicer.util"], "arrayFromVolume", no_pixels)
    updates = []
    logic.watch(node, lambda update, error: updates.append((update, error)))
    schema, index = load_schema("preop"), load_schema("preop").index("TLC06")
    angle = _by_role(node, "Angle.FTS")
    before = angle.GetAngleDegrees()

    moved = points_px.copy()
    for step in (3.0, 6.0):  # a drag: several PointModifiedEvents, one redraw per timer interval
        moved[index] = points_px[index] + (step, 0.0)
        node.SetNthControlPointPosition(index, *_ras(moved[index])[0])
    assert logic._timer.isActive() and angle.GetAngleDegrees() == before  # throttled: nothing redrawn yet
    logic._timer.fire()
    expected = compute_alignment(moved, schema, "R", SPACING)
    assert angle.GetAngleDegrees() == pytest.approx(expected.atfa_fts_deg, abs=1e-9) != pytest.approx(before)

    moved[index] = points_px[index] + (9.0, 0.0)
    node.points[index]["position"] = _ras(moved[index])[0]
    node.InvokeEvent(EVENTS["PointEndInteractionEvent"])  # the final position, at once
    final = compute_alignment(moved, schema, "R", SPACING)
    assert angle.GetAngleDegrees() == pytest.approx(final.atfa_fts_deg, abs=1e-9)
    assert table.GetColumnByName("atfa_fts_deg").GetValue(0) == pytest.approx(final.atfa_fts_deg, abs=1e-9)
    assert updates[-1][0].alignment.atfa_fts_deg == pytest.approx(final.atfa_fts_deg) and updates[-1][1] is None

    node.points[index]["position"] = node.points[index]["position"] + [0.0, 0.0, 5.0]  # dragged off the plane
    node.InvokeEvent(EVENTS["PointEndInteractionEvent"])
    assert updates[-1][0] is None and "not in the image plane" in str(updates[-1][1])
    assert angle.GetAngleDegrees() == pytest.approx(final.atfa_fts_deg, abs=1e-9)  # the last good drawing stays

    logic.unwatch()
    node.SetNthControlPointPosition(index, *_ras(points_px[index])[0])
    assert not node.observers and not logic._timer.isActive()


def test_manual_points_are_placed_in_order_and_give_the_same_angles(module, scene, tmp_path):
    from KneeAlignmentLib.geometry import compute_alignment
    from KneeAlignmentLib.manual_points import MANUAL_POINTS
    from KneeAlignmentLib.schema import load_schema

    volume, _node, points_px = _case(scene, "preop")
    expected = compute_alignment(points_px, load_schema("preop"), "R", SPACING)
    logic = module.KneeAlignmentLogic()
    with pytest.raises(ValueError, match="choose Left or Right"):
        logic.createManualPoints(volume, side="Auto")
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", "Results")
    manual = logic.createManualPoints(volume, side="Right", resultsTable=table)
    assert manual.labels() == [p.label for p in MANUAL_POINTS] and manual.fixed
    assert manual.display.values["PointLabelsVisibility"] is True  # placed by label
    assert all(p["status"] == POSITION_UNDEFINED for p in manual.points)
    updates = []
    logic.watch(manual, lambda update, error: updates.append((update, error)))
    assert logic.nextManualInstruction(manual).startswith("Place femoral_shaft_centre_1: Femoral shaft centre")
    femur, tibia = expected.femoral_shaft_centres_px, expected.tibial_shaft_centres_px
    targets = [femur[0], femur[-1], expected.femoral_axis_fnts_px[1], expected.tibial_axis_fnts_px[0], tibia[0],
               tibia[-1]]
    for i, target in enumerate(targets[:3]):
        manual.SetNthControlPointPosition(i, *_ras(target)[0])
        manual.InvokeEvent(EVENTS["PointEndInteractionEvent"])
    assert updates[-1] == (None, "Place tibial_spine_centre: " + MANUAL_POINTS[3].description)
    for i, target in enumerate(targets[3:], start=3):
        manual.SetNthControlPointPosition(i, *_ras(target)[0])
    manual.InvokeEvent(EVENTS["PointEndInteractionEvent"])
    update, error = updates[-1]
    assert error is None and logic.nextManualInstruction(manual) == ""
    assert update.alignment.atfa_fnts_deg == pytest.approx(expected.atfa_fnts_deg, abs=1e-9)
    assert _by_role(manual, "Angle.FNTS").GetAngleDegrees() == pytest.approx(expected.atfa_fnts_deg, abs=1e-9)
    assert table.GetColumnByName("schema").GetValue(0) == "manual"
    assert _by_role(manual, "DefiningPoints") is None  # the user's points are the defining points
    with pytest.raises(ValueError, match="manual points cannot be saved as one"):
        logic.saveTrainingCase(manual, tmp_path / "dataset")
    assert not (tmp_path / "dataset").exists()


def test_volume_without_a_file_is_measured_whatever_its_display_with_its_dicom_side(module, scene, monkeypatch):
    class Database:
        def instanceValue(self, uid, tag):
            return {("1.2", "0020,0062"): "L ", ("1.2", "0020,0060"): "R"}.get((uid, tag), "")

        def fileForInstance(self, uid):
            return ""  # not in the database: the voxels are measured

    pixels = np.array([[[0, 1000, 2000, 3000]]], dtype=np.int16)
    volume = scene.add(_Volume(scene, pixels, IJK_TO_RAS, window=(1500.0, 2000.0),
                               colour="vtkMRMLColorTableNodeInvertedGrey"))
    image = module.KneeAlignmentLogic.volumeImage(volume)
    np.testing.assert_allclose(image.radiograph.pixels[0], [1.0, 2 / 3, 1 / 3, 0.0], atol=1e-6)  # inverted min-max
    volume.window = (500.0, 100.0)  # the user changes window/level: nothing changes
    np.testing.assert_array_equal(module.KneeAlignmentLogic.volumeImage(volume).radiograph.pixels,
                                  image.radiograph.pixels)
    assert image.radiograph.spacing_mm == pytest.approx(SPACING)
    assert image.radiograph.side is None
    volume.SetAttribute("DICOM.instanceUIDs", "1.2")
    monkeypatch.setattr(sys.modules["slicer"], "dicomDatabase", Database(), raising=False)
    image = module.KneeAlignmentLogic.volumeImage(volume)
    assert (image.radiograph.side, image.radiograph.side_source) == ("L", "DICOM ImageLaterality")


@pytest.mark.parametrize("name", ["phantom_preop.dcm", "phantom_postop.dcm", "png", "windowed dicom"])
def test_slicer_and_the_command_line_give_the_network_the_same_pixels(module, scene, tmp_path, name):
    """The same file, loaded into Slicer (any window/level) or read by `kneealign measure`: identical pixels,
    hence identical landmarks (the pipeline is deterministic)."""
    from dicom_factory import write_dx
    from KneeAlignmentLib.datasets import write_image16
    from KneeAlignmentLib.imageio import read_radiograph
    from KneeAlignmentLib.phantom.dataset import render_case

    case = render_case("preop", 3, 0, (160, 128))
    if name == "png":
        path = write_image16(tmp_path / "knee.png", case.display)
    elif name == "windowed dicom":  # a VOI window that clips: min-max of the voxels would differ
        path = write_dx(tmp_path / "knee.dcm", case.display, bits_stored=case.bits_stored, spacing_mm=(0.3, 0.3),
                        window=(2000.0, 1500.0), photometric="MONOCHROME1")
    else:
        path = MODULE_DIR / "Resources" / "Examples" / name
    if "phantom" in name:  # the bundled examples, as the module's button loads them
        volume = next(v for v in module.KneeAlignmentLogic.loadExamples(path.parent) if Path(v.file) == path)
    else:
        volume = _load_volume(scene, path)
    cli = read_radiograph(path)
    for window in (volume.window, (0.0, 10.0), (1e4, 1.0)):
        volume.window = window
        slicer_pixels = module.KneeAlignmentLogic.volumeImage(volume).radiograph.pixels
        np.testing.assert_array_equal(slicer_pixels, cli.pixels)
    if name == "phantom_preop.dcm":  # and so the shipped models find the same landmarks
        from KneeAlignmentLib.bundle.modelset import ModelSet
        from KneeAlignmentLib.bundle.resolve import SHIPPED_MODELS_DIR
        from KneeAlignmentLib.pipeline import measure

        models = ModelSet.load(SHIPPED_MODELS_DIR, device="cpu")
        in_slicer = measure(module.KneeAlignmentLogic.volumeImage(volume).radiograph, models, kind="preop")
        on_the_command_line = measure(cli, models, kind="preop")
        np.testing.assert_array_equal(in_slicer.landmarks.points_px, on_the_command_line.landmarks.points_px)
    volume.modified = True  # edited in Slicer: the voxels are measured, still whatever the window
    edited = module.KneeAlignmentLogic.volumeImage(volume).radiograph
    assert edited.intensity_mapping == "min-max" and edited.shape == cli.shape


def test_example_radiographs_load_as_volumes(module, scene, tmp_path):
    volumes = module.KneeAlignmentLogic.loadExamples(MODULE_DIR / "Resources" / "Examples")
    assert len(volumes) == 2  # a pre-op and a post-op phantom
    for volume in volumes:
        image = module.KneeAlignmentLogic.volumeImage(volume)
        assert image.radiograph.shape == (1024, 832)
    with pytest.raises(ValueError, match="no example radiographs"):
        module.KneeAlignmentLogic.loadExamples(tmp_path)


def test_point_list_problems_are_named(module, scene):
    from KneeAlignmentLib.errors import MarkupsError

    volume, node, _ = _case(scene, "preop")
    logic = module.KneeAlignmentLogic()
    node.RemoveNthControlPoint(5)
    with pytest.raises(MarkupsError, match="missing landmarks 'FLC05'"):
        logic.adoptLandmarks(volume, node, side="Right", schema="Pre-op")
    node.AddControlPoint(node.positions_ras()[0], "Extra")
    node.UnsetNthControlPointPosition(3)
    with pytest.raises(MarkupsError, match="unknown labels 'Extra'; missing landmarks 'FLC03', 'FLC05'"):
        logic.adoptLandmarks(volume, node, side="Right", schema="Pre-op")
    with pytest.raises(ValueError, match="model must be Auto or one of Pre-op, Post-op"):
        logic.adoptLandmarks(volume, node, schema="Preop")
    with pytest.raises(ValueError, match="is not a Knee Alignment case"):
        logic.evaluate(scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Other"))


def test_a_point_list_that_cannot_be_measured_as_the_chosen_side_does_not_become_a_case(module, scene):
    from KneeAlignmentLib.errors import GeometryError

    volume, node, _ = _case(scene, "preop")  # a right knee: its fibula is lateral on the right
    logic = module.KneeAlignmentLogic()
    with pytest.raises(GeometryError, match="contradicts"):
        logic.adoptLandmarks(volume, node, side="Left", schema="Pre-op")
    assert not logic.isCase(node)


def test_model_inference_creates_a_case_with_progress_and_can_be_cancelled(module, scene, tmp_path, monkeypatch):
    from KneeAlignmentLib.schema import load_schema
    from KneeAlignmentLib.workflow import Cancelled
    from model_factory import save_models

    user = save_models(tmp_path / "models", kinds=("postop",))
    monkeypatch.setattr(module.KneeAlignmentLogic, "modelsFolder", staticmethod(lambda: user))
    volume, _node, _ = _case(scene, "postop")
    logic = module.KneeAlignmentLogic()
    table = logic.newResultsTable()
    before = set(scene.nodes)
    with pytest.raises(Cancelled):
        logic.measure(volume, device="CPU", resultsTable=table, cancelled=lambda: True)
    assert set(scene.nodes) == before  # cancelled: nothing added

    stages = []
    node = logic.measure(volume, model="Post-op", side="Right", device="CPU", resultsTable=table,
                         progress=lambda fraction, message: stages.append((fraction, message)))
    fractions = [f for f, _ in stages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert [m for _, m in stages][:2] == ["Reading the radiograph", "Loading the models"]
    assert node.labels() == list(load_schema("postop").names)
    assert node.GetAttribute("KneeAlignment.Source") == "model" and node.GetAttribute("KneeAlignment.Kind") == "postop"
    assert '"format": "kneealignment-measurement"' in node.GetAttribute("KneeAlignment.Measurement")
    assert node.GetNodeReference("KneeAlignment.Volume") is volume


def test_exports_write_the_current_corrected_values(module, scene, tmp_path):
    import csv
    import json

    from KneeAlignmentLib.datasets import find_cases

    volume, node, points_px = _case(scene, "preop")
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", "Results")
    logic = module.KneeAlignmentLogic()
    alignment = logic.adoptLandmarks(volume, node, resultsTable=table)
    logic.exportCsv(table, tmp_path / "results.csv")
    with (tmp_path / "results.csv").open(newline="") as stream:
        [row] = list(csv.DictReader(stream))
    assert float(row["atfa_fts_deg"]) == pytest.approx(alignment.atfa_fts_deg, abs=5e-4)
    logic.exportJson(node, tmp_path / "case.json")
    document = json.loads((tmp_path / "case.json").read_text())
    assert document["result"]["landmarks"] == "Landmarks" and document["inference"] is None
    np.testing.assert_allclose(document["landmarks"]["points_px"], points_px, atol=1e-9)
    saved = logic.saveTrainingCase(node, tmp_path / "dataset")
    [case] = find_cases(tmp_path / "dataset")
    loaded = case.load("preop")
    np.testing.assert_allclose(loaded.points_px, points_px, atol=1e-9)
    assert loaded.radiograph.spacing_mm == pytest.approx(SPACING) and saved.stem == "case-0001"


def test_dicom_sr_export_of_an_unedited_model_result(module, scene, tmp_path, monkeypatch):
    import pydicom

    from dicom_factory import write_dx
    from model_factory import save_models

    monkeypatch.setattr(module.KneeAlignmentLogic, "modelsFolder",
                        staticmethod(lambda: save_models(tmp_path / "models", kinds=("preop",))))
    volume, own_points, _ = _case(scene, "preop")
    source = write_dx(tmp_path / "knee.dcm", volume.array[0].astype(np.uint16), spacing_mm=SPACING)
    uid = str(pydicom.dcmread(source).SOPInstanceUID)

    class Database:
        def instanceValue(self, uid, tag):
            return ""

        def fileForInstance(self, instance):
            assert instance == uid
            return str(source)

    logic = module.KneeAlignmentLogic()
    monkeypatch.setattr(sys.modules["slicer"], "dicomDatabase", Database(), raising=False)
    logic.adoptLandmarks(volume, own_points, side="Right")
    assert "has none" in logic.dicomSrProblem(own_points)  # not a model result
    node = logic.measure(volume, model="Pre-op", side="Right", device="CPU")
    assert "loaded from the DICOM database" in logic.dicomSrProblem(node)
    volume.SetAttribute("DICOM.instanceUIDs", uid)
    assert logic.dicomSrProblem(node) == ""
    sr = pydicom.dcmread(logic.exportDicomSr(node, tmp_path / "sr.dcm"))
    original = pydicom.dcmread(source)
    assert sr.Modality == "SR" and sr.StudyInstanceUID == original.StudyInstanceUID
    assert sr.CurrentRequestedProcedureEvidenceSequence[0].StudyInstanceUID == original.StudyInstanceUID

    node.SetNthControlPointPosition(0, *(node.positions_ras()[0] + [1.0, 0.0, 0.0]))  # a corrected landmark
    with pytest.raises(ValueError, match="FLC00 were corrected"):
        logic.exportDicomSr(node, tmp_path / "sr2.dcm")
    assert not (tmp_path / "sr2.dcm").exists()


def test_a_self_test_that_cannot_run_fails_naming_what_is_missing_in_both_slicer_runners(module, tmp_path,
                                                                                        monkeypatch):
    """Reload and Test calls runTest() directly (an exception is the failure it shows); CTest's
    slicer.testing.runUnitTest runs each test_ method with unittest and passes when wasSuccessful(), which a
    skip would be. So a part that cannot run fails, never passes or skips."""
    from KneeAlignmentLib.errors import BundleError

    def no_models(self):
        raise BundleError("no models installed")

    shown = []
    monkeypatch.setattr(module.KneeAlignmentLogic, "modelPaths", no_models)
    monkeypatch.setattr(module.KneeAlignmentTest, "delayDisplay", lambda self, message, msec=None: shown.append(message))
    raised = None
    try:
        module.KneeAlignmentTest().runTest()  # as ScriptedLoadableModule.runTest does
    except Exception as exc:  # unittest.SkipTest included: pytest would report that as a skip, not a failure
        raised = exc
    assert type(raised) is AssertionError
    assert str(raised) == "model inference NOT tested: no usable models: no models installed"
    assert shown.count("Test passed") == 3  # the parts that can run ran first

    with open(tmp_path / "log.txt", "w") as log:  # as slicer.testing.runUnitTest does
        suite = unittest.TestLoader().loadTestsFromTestCase(module.KneeAlignmentTest)
        result = unittest.TextTestRunner(stream=log, verbosity=2).run(suite)
    assert not result.wasSuccessful() and not result.skipped and not result.errors
    assert [test.id().rsplit(".", 1)[1] for test, _ in result.failures] == ["test_ModelInference"]
    assert "no models installed" in result.failures[0][1]


def test_a_self_test_without_the_inference_packages_fails_naming_them(module, tmp_path, monkeypatch):
    from KneeAlignmentLib import dependencies

    unmet = [dependencies.Unmet(dependencies.INFERENCE_REQUIREMENTS[0], None)]
    monkeypatch.setattr(dependencies, "unmet_requirements", lambda: unmet)
    with open(tmp_path / "log.txt", "w") as log:
        result = unittest.TextTestRunner(stream=log).run(module.KneeAlignmentTest("test_ModelInference"))
    assert len(result.failures) == 1 and not result.skipped
    assert f"model inference NOT tested: Python packages needed (Apply offers to install them): {unmet[0]}" in \
        result.failures[0][1]


def test_the_slicer_self_test_passes_against_the_stand_ins(module, tmp_path, monkeypatch):
    """Runs KneeAlignmentTest (phantom ground truth, drag, manual mode, the shipped models) as Slicer's runner does."""
    shown = []
    monkeypatch.setattr(module.KneeAlignmentLogic, "modelsFolder", staticmethod(lambda: tmp_path / "no-models"))
    monkeypatch.setattr(module.KneeAlignmentTest, "delayDisplay", lambda self, message, msec=None: shown.append(message))
    with open(tmp_path / "log.txt", "w") as log:
        result = unittest.TextTestRunner(stream=log, verbosity=2).run(module.KneeAlignmentTest("runTest"))
    assert result.wasSuccessful(), "".join(error for _, error in result.errors + result.failures)
    assert shown.count("Test passed") == 4  # with the shipped models: aTFA within 3 degrees of the truth
    assert not any("NOT tested" in message for message in shown)
