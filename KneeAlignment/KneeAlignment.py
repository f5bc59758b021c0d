"""Knee Alignment: 3D Slicer module measuring the anatomical tibiofemoral angle on AP knee radiographs.

A thin layer between MRML nodes and the Slicer-free core package ``KneeAlignmentLib``.
The core is imported inside methods only: Slicer's generic tests import this file
before the PyTorch extension has installed torch, and ``onReload`` must be able to
reload the core with it.
"""

import logging
import sys
from typing import Annotated

import qt
import vtk

import slicer
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode, vtkMRMLTableNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import *
from slicer.util import VTKObservationMixin

# GUI choice -> landmark schema kind of KneeAlignmentLib.schema.
SCHEMA_KINDS = {"Pre-op": "preop", "Post-op": "postop"}
# GUI choice -> side code of KneeAlignmentLib ("Auto" resolves to one of these at run time).
SIDE_CODES = {"Left": "L", "Right": "R"}
# DICOM laterality attributes as Slicer's DICOM database names them (tags).
LATERALITY_TAGS = {"ImageLaterality": "0020,0062", "Laterality": "0020,0060"}
# RAS <-> LPS: negate x and y (its own inverse). Slicer's scene is RAS; the core works in LPS.
RAS_LPS_FLIP = (-1.0, -1.0, 1.0)
# Landmarks farther than this from the radiograph's plane are rejected rather than projected.
PLANE_TOLERANCE_MM = 0.5

# Results table: one row per point list; these columns, then every scalar field of
# KneeAlignmentLib.geometry.Alignment, numeric when the name carries a unit suffix.
ID_COLUMNS = ("Radiograph", "Landmarks", "Schema")
UNIT_SUFFIXES = {"_deg": "deg", "_mm": "mm", "_px": "px"}


#
# KneeAlignment
#


class KneeAlignment(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Knee Alignment")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.dependencies = []
        self.parent.contributors = ["KneeAlignment contributors"]
        self.parent.helpText = _("""
Measures knee alignment on an AP knee radiograph: the anatomical tibiofemoral angle (aTFA)
by two axis definitions, FTS (femoral and tibial axes fitted through the shaft centres)
and FNTS (femoral shaft centre to the intercondylar notch, tibial shaft centre to the
tibial spines), each labelled varus or valgus.
The angles are computed from anatomical landmarks in a point list whose labels are the
landmark names of the pre-op (134 points) or post-op (181 points) schema. The landmarks
will be found automatically by a two-stage stacked hourglass network
(<a href="https://arxiv.org/abs/2506.18209">arXiv 2506.18209</a>) once its models ship.
See the <a href="https://github.com/kneealignment/SlicerKneeAlignment">extension documentation</a>.
<br><b>Research use only. Not for clinical use.</b>
""")
        self.parent.acknowledgementText = _("""
The landmark scheme and the two-stage landmark detector follow arXiv 2506.18209.
The module layout follows the 3D Slicer scripted module template.
""")


#
# KneeAlignmentParameterNode
#


@parameterNodeWrapper
class KneeAlignmentParameterNode:
    """
    inputVolume - the AP knee radiograph (single-slice volume).
    landmarks - point list labelled with the schema's landmark names.
    side - which knee; Auto reads the DICOM laterality, else the fibula's position.
    schema - landmark schema; Auto picks post-op when any implant landmark is present.
    showAxes - create/update line and angle markups for the axes.
    resultsTable - table receiving one row per measured point list.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    landmarks: vtkMRMLMarkupsFiducialNode
    side: Annotated[str, Choice(["Auto", "Left", "Right"])] = "Auto"
    schema: Annotated[str, Choice(["Auto", "Pre-op", "Post-op"])] = "Auto"
    showAxes: bool = True
    resultsTable: vtkMRMLTableNode


#
# KneeAlignmentWidget
#


class KneeAlignmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """GUI: binds the .ui to the parameter node and calls the logic."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/KneeAlignment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        # The .ui connects mrmlSceneChanged to every MRML widget's setMRMLScene.
        uiWidget.setMRMLScene(slicer.mrmlScene)
        # The results summary is a column-aligned plain-text table.
        self.ui.statusLabel.font = qt.QFontDatabase.systemFont(qt.QFontDatabase.FixedFont)

        self.logic = KneeAlignmentLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onReload(self) -> None:
        """Reload the core package too: Slicer's reload re-executes only this file."""
        for name in [n for n in sys.modules if n == "KneeAlignmentLib" or n.startswith("KneeAlignmentLib.")]:
            del sys.modules[name]
        super().onReload()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        # Preselect the first radiograph and point list to save the user a few clicks.
        defaults = (("inputVolume", "vtkMRMLScalarVolumeNode"), ("landmarks", "vtkMRMLMarkupsFiducialNode"))
        for parameter, className in defaults:
            firstNode = slicer.mrmlScene.GetFirstNodeByClass(className)
            if not getattr(self._parameterNode, parameter) and firstNode:
                setattr(self._parameterNode, parameter, firstNode)

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Widgets carry a "SlicerParameterName" property in the .ui.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        ready = bool(self._parameterNode and self._parameterNode.inputVolume and self._parameterNode.landmarks)
        self.ui.applyButton.enabled = ready
        self.ui.applyButton.toolTip = (
            _("Compute the alignment angles") if ready else _("Select a radiograph and a landmark point list")
        )

    def onApplyButton(self) -> None:
        self.ui.statusLabel.text = ""
        with slicer.util.tryWithErrorDisplay(_("Failed to compute knee alignment."), waitCursor=True):
            from KneeAlignmentLib import geometry

            p = self._parameterNode
            if not p.resultsTable:
                p.resultsTable = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", "KneeAlignment results")
            alignment = self.logic.measureFromLandmarks(
                p.inputVolume, p.landmarks, side=p.side, schema=p.schema,
                resultsTable=p.resultsTable, showAxes=p.showAxes,
            )
            self.ui.statusLabel.text = geometry.format_alignment(alignment)


#
# KneeAlignmentLogic
#


class KneeAlignmentLogic(ScriptedLoadableModuleLogic):
    """MRML nodes <-> KneeAlignmentLib. Opens no dialogs: bad input raises."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return KneeAlignmentParameterNode(super().getParameterNode())

    def measureFromLandmarks(self, volumeNode, landmarksNode, side="Auto", schema="Auto",
                             resultsTable=None, showAxes=True):
        """Alignment (KneeAlignmentLib.geometry.Alignment) from a labelled point list on a radiograph.

        side: "Auto" (DICOM laterality, else the fibula's position), "Left" or "Right";
        schema: "Auto", "Pre-op" or "Post-op".
        Adds or updates the point list's row in ``resultsTable`` (if given) and, with
        ``showAxes``, line markups for the four axes and angle markups for both aTFA.
        """
        from KneeAlignmentLib import geometry

        if side != "Auto" and side not in SIDE_CODES:
            raise ValueError(f"side must be Auto, Left or Right, got {side!r}")
        plane = self.imagePlane(volumeNode)
        landmarkSchema, pointsPx = self.landmarksPx(plane, landmarksNode, schema)
        sideCode = SIDE_CODES.get(side) or self.dicomSide(volumeNode) or geometry.infer_side(pointsPx, landmarkSchema)
        alignment = geometry.compute_alignment(pointsPx, landmarkSchema, sideCode, plane.spacing_mm)
        logging.info(geometry.format_alignment(alignment))
        if resultsTable is not None:
            self.updateResultsTable(resultsTable, volumeNode, landmarksNode, landmarkSchema.kind, alignment)
        if showAxes:
            self.showAxes(plane, landmarksNode, alignment)
        return alignment

    @staticmethod
    def imagePlane(volumeNode):
        """KneeAlignmentLib.markups.ImagePlane of a single-slice, untransformed scalar volume."""
        from KneeAlignmentLib.markups import ImagePlane

        if volumeNode is None or volumeNode.GetImageData() is None:
            raise ValueError("select a radiograph volume that holds an image")
        if volumeNode.GetImageData().GetDimensions()[2] != 1:
            raise ValueError("the radiograph must be a single-slice volume")
        if volumeNode.GetParentTransformNode() is not None:
            raise ValueError("the radiograph is transformed: harden or remove its transform first")
        ijkToRas = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(ijkToRas)
        return ImagePlane.from_ijk_to_ras(slicer.util.arrayFromVTKMatrix(ijkToRas))

    @staticmethod
    def landmarksPx(plane, landmarksNode, schema="Auto"):
        """(LandmarkSchema, (K, 2) px as (x, y) in schema order) from a labelled point list."""
        import numpy as np

        from KneeAlignmentLib.markups import MarkupsNode, landmarks_px
        from KneeAlignmentLib.schema import kind_for_labels, load_schema

        if landmarksNode is None:
            raise ValueError("select a landmark point list")
        count = landmarksNode.GetNumberOfControlPoints()
        labels = [landmarksNode.GetNthControlPointLabel(i) for i in range(count)]
        if schema == "Auto":
            kind = kind_for_labels(labels)
        elif schema in SCHEMA_KINDS:
            kind = SCHEMA_KINDS[schema]
        else:
            raise ValueError(f"schema must be Auto, Pre-op or Post-op, got {schema!r}")
        landmarkSchema = load_schema(kind)
        # Undefined positions become NaN rows, which the core reports as missing landmarks.
        positionsLps = slicer.util.arrayFromMarkupsControlPoints(landmarksNode, world=True) * RAS_LPS_FLIP
        for i in range(count):
            if landmarksNode.GetNthControlPointPositionStatus(i) != slicer.vtkMRMLMarkupsNode.PositionDefined:
                positionsLps[i] = np.nan
        node = MarkupsNode("Fiducial", landmarksNode.GetName(), tuple(labels), positionsLps)
        return landmarkSchema, landmarks_px(node, landmarkSchema.names, plane, tolerance_mm=PLANE_TOLERANCE_MM)

    @staticmethod
    def dicomSide(volumeNode):
        """"L"/"R" from the DICOM laterality of a volume loaded by the DICOM module, else None."""
        from KneeAlignmentLib.imageio import side_from_laterality

        uids = (volumeNode.GetAttribute("DICOM.instanceUIDs") or "").split()
        database = getattr(slicer, "dicomDatabase", None)  # set by the DICOM module
        if not uids or database is None:
            return None
        values = {keyword: database.instanceValue(uids[0], tag) for keyword, tag in LATERALITY_TAGS.items()}
        return side_from_laterality(values)[0]

    def updateResultsTable(self, tableNode, volumeNode, landmarksNode, kind, alignment) -> int:
        """Write the results into the point list's row (added when new); returns the row index."""
        values = dict(zip(ID_COLUMNS, (volumeNode.GetName(), landmarksNode.GetName(), kind)))
        values.update((k, v) for k, v in alignment.to_dict().items() if not isinstance(v, list))
        units = {name: next((u for sfx, u in UNIT_SUFFIXES.items() if name.endswith(sfx)), None) for name in values}
        if tableNode.GetNumberOfColumns() == 0:
            for name in values:
                column = vtk.vtkDoubleArray() if units[name] else vtk.vtkStringArray()
                column.SetName(name)
                tableNode.AddColumn(column)
                if units[name]:
                    tableNode.SetColumnUnitLabel(name, units[name])
        missing = [name for name in values if tableNode.GetColumnIndex(name) < 0]
        if missing:
            raise ValueError(f"table {tableNode.GetName()!r} is not a KneeAlignment results table "
                             f"(no {missing[0]!r} column)")

        table = tableNode.GetTable()
        landmarks = table.GetColumnByName("Landmarks")
        rows = [r for r in range(table.GetNumberOfRows()) if landmarks.GetValue(r) == landmarksNode.GetName()]
        row = rows[0] if rows else tableNode.AddEmptyRow()
        for name, value in values.items():
            if units[name]:  # NaN marks a measure this schema does not have
                table.GetColumnByName(name).SetValue(row, float("nan") if value is None else float(value))
            else:
                table.GetColumnByName(name).SetValue(row, "" if value is None else str(value))
        tableNode.Modified()
        return row

    def showAxes(self, plane, landmarksNode, alignment) -> None:
        """Line markups for the four axes and angle markups for both aTFA, referenced from the point list."""
        from KneeAlignmentLib.measurement import atfa_angle_px

        for method, color in (("FTS", (1.0, 0.69, 0.0)), ("FNTS", (0.35, 0.75, 1.0))):
            femoralPx = getattr(alignment, f"femoral_axis_{method.lower()}_px")
            tibialPx = getattr(alignment, f"tibial_axis_{method.lower()}_px")
            for bone, axisPx in (("femoral", femoralPx), ("tibial", tibialPx)):
                line = self._outputNode(landmarksNode, "vtkMRMLMarkupsLineNode", f"{bone} axis {method}", color)
                slicer.util.updateMarkupsControlPointsFromArray(line, plane.to_lps(axisPx) * RAS_LPS_FLIP)
            # Slicer shows 180 - |aTFA| in physical space
            anglePx = atfa_angle_px(femoralPx, tibialPx)
            angle = self._outputNode(landmarksNode, "vtkMRMLMarkupsAngleNode", f"aTFA {method}", color)
            slicer.util.updateMarkupsControlPointsFromArray(angle, plane.to_lps(anglePx) * RAS_LPS_FLIP)

    @staticmethod
    def _outputNode(landmarksNode, className, title, color):
        """The point list's output markup for ``title``, created on first use; locked (it is computed)."""
        role = "KneeAlignment." + title.replace(" ", "")
        node = landmarksNode.GetNodeReference(role)
        if node is None:
            node = slicer.mrmlScene.AddNewNodeByClass(className, f"{landmarksNode.GetName()} {title}")
            node.CreateDefaultDisplayNodes()
            node.GetDisplayNode().SetSelectedColor(*color)
            landmarksNode.SetNodeReferenceID(role, node.GetID())
        node.SetLocked(True)
        return node


#
# KneeAlignmentTest
#


class KneeAlignmentTest(ScriptedLoadableModuleTest):
    """Runs the logic end to end on the schema's example landmarks placed on a small synthetic radiograph."""

    # Anisotropic pixels (row 1.1 mm, column 0.9 mm) so a swapped spacing changes the angles.
    ROW_MM, COL_MM = 1.1, 0.9

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_MeasureExampleLandmarks()
        self.setUp()
        self.test_MissingLandmarkIsReported()

    def _exampleScene(self, kind):
        """(volume, point list, (K, 2) px) holding the example landmarks of ``kind`` on a small radiograph."""
        import numpy as np

        from KneeAlignmentLib.schema import example_landmarks_px, load_schema

        # 1 px per mm of the template keeps the image small (300 x 240 px) yet around the whole knee.
        pointsPx = example_landmarks_px(kind, spacing_mm=1.0, image_size=(300, 240))
        ijkToRas = np.array([[-self.COL_MM, 0, 0, 20.0], [0, -self.ROW_MM, 0, -35.0], [0, 0, 1, 0], [0, 0, 0, 1]])
        volume = slicer.util.addVolumeFromArray(np.zeros((1, 300, 240), dtype=np.uint8), ijkToRas, "ExampleKnee")
        # Pixel (x, y) is voxel (i, j, 0); placed here with the matrix, independently of ImagePlane.
        positionsRas = (np.c_[pointsPx, np.zeros(len(pointsPx)), np.ones(len(pointsPx))] @ ijkToRas.T)[:, :3]
        points = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "ExampleLandmarks")
        slicer.util.updateMarkupsControlPointsFromArray(points, positionsRas)
        for i, name in enumerate(load_schema(kind).names):
            points.SetNthControlPointLabel(i, name)
        return volume, points, pointsPx

    def test_MeasureExampleLandmarks(self):
        import math

        from KneeAlignmentLib import geometry
        from KneeAlignmentLib.schema import load_schema

        self.delayDisplay("Measuring the example post-op landmarks")
        volume, points, pointsPx = self._exampleScene("postop")
        table = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", "Results")
        logic = KneeAlignmentLogic()
        # Auto: no DICOM laterality here, so the side comes from the fibula (a right knee).
        alignment = logic.measureFromLandmarks(volume, points, side="Auto", schema="Auto", resultsTable=table)

        expected = geometry.compute_alignment(pointsPx, load_schema("postop"), "R", (self.ROW_MM, self.COL_MM))
        self.assertEqual(alignment.side, "R")
        self.assertAlmostEqual(alignment.atfa_fts_deg, expected.atfa_fts_deg, delta=0.01)
        self.assertAlmostEqual(alignment.atfa_fnts_deg, expected.atfa_fnts_deg, delta=0.01)
        self.assertEqual((alignment.label_fts, alignment.label_fnts), (expected.label_fts, expected.label_fnts))

        self.assertEqual(table.GetNumberOfRows(), 1)
        column = lambda name: table.GetTable().GetColumnByName(name)
        identity = [column(name).GetValue(0) for name in ("Landmarks", "Schema", "side")]
        self.assertEqual(identity, ["ExampleLandmarks", "postop", "R"])
        self.assertAlmostEqual(column("atfa_fts_deg").GetValue(0), expected.atfa_fts_deg, delta=0.01)
        self.assertTrue(math.isnan(column("aldfa_deg").GetValue(0)))  # a pre-op measure
        self.assertEqual(table.GetColumnUnitLabel("atfa_fnts_deg"), "deg")

        # The angle markup shows the angle between the axes in physical space.
        angle = points.GetNodeReference("KneeAlignment.aTFAFTS")
        self.assertAlmostEqual(angle.GetAngleDegrees(), 180.0 - abs(expected.atfa_fts_deg), delta=0.01)

        # Measuring again updates the row and the markups instead of adding new ones.
        logic.measureFromLandmarks(volume, points, side="Right", schema="Post-op", resultsTable=table)
        self.assertEqual(table.GetNumberOfRows(), 1)
        self.assertEqual(len(slicer.util.getNodesByClass("vtkMRMLMarkupsLineNode")), 4)
        self.assertEqual(len(slicer.util.getNodesByClass("vtkMRMLMarkupsAngleNode")), 2)
        self.delayDisplay("Test passed")

    def test_MissingLandmarkIsReported(self):
        from KneeAlignmentLib.errors import MarkupsError

        volume, points, _pointsPx = self._exampleScene("preop")
        points.RemoveNthControlPoint(0)
        with self.assertRaisesRegex(MarkupsError, "missing landmarks 'FLC00'"):
            KneeAlignmentLogic().measureFromLandmarks(volume, points, side="Right")
        self.delayDisplay("Test passed")
