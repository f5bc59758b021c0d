"""The Knee Alignment module's self-test, for users to run inside Slicer (Reload and Test, CTest).

Kept beside ``KneeAlignment.py`` as a package so that Slicer's module discovery, which takes
every ``.py`` file of the folder for a module, leaves it alone. The core is imported inside the
tests only, as in the module.
"""

import json
import tempfile
from pathlib import Path

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

MODULE_DIR = Path(__file__).resolve().parent.parent


class SelfTest(ScriptedLoadableModuleTest):
    """End to end on a phantom radiograph (KneeAlignmentLib.phantom) with exact ground truth, and the
    bundled example through the models.

    ``KneeAlignment.KneeAlignmentTest`` derives from it and sets ``Logic`` (the module's logic class)
    and ``prefix`` (its node attribute prefix): Slicer finds the test by that name in the module,
    and the module's reload then tests the reloaded logic.
    """

    Logic = None
    prefix = ""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        for test in (self.test_MeasurePointList, self.test_DragRecomputes, self.test_ManualMode,
                     self.test_ModelInference):
            self.setUp()
            test()
            self.delayDisplay("Test passed")

    def _phantomCase(self, kind, withPointList=True):
        """(volume, true-landmark point list, (K, 2) true px, side, truth, IJK-to-RAS) of a small phantom knee."""
        import numpy as np

        from KneeAlignmentLib.phantom import render_case
        from KneeAlignmentLib.schema import load_schema

        case = render_case(kind, 0, 0, (400, 320))
        rowMm, colMm = case.spacing_mm
        # As Slicer loads a 2D image: i along L (columns), j along P (rows); an offset origin.
        ijkToRas = np.array([[-colMm, 0, 0, 20.0], [0, -rowMm, 0, -35.0], [0, 0, 1, 0], [0, 0, 0, 1]])
        volume = slicer.util.addVolumeFromArray(case.image[None], ijkToRas, "PhantomKnee")
        node = None
        if withPointList:  # placed with the matrix directly, independently of KneeAlignmentLib.volume
            homogeneous = np.c_[case.landmarks_px, np.zeros(len(case.landmarks_px)), np.ones(len(case.landmarks_px))]
            node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "TrueLandmarks")
            slicer.util.updateMarkupsControlPointsFromArray(node, (homogeneous @ ijkToRas.T)[:, :3])
            for i, name in enumerate(load_schema(kind).names):
                node.SetNthControlPointLabel(i, name)
        return volume, node, np.array(case.landmarks_px, dtype=float), case.side, case.truth, ijkToRas

    def test_MeasurePointList(self):
        from KneeAlignmentLib.errors import MarkupsError

        self.delayDisplay("Measuring the true landmarks of a post-op phantom knee")
        volume, node, _points, side, truth, _ijkToRas = self._phantomCase("postop")
        table = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", "Results")
        logic = self.Logic()
        alignment = logic.adoptLandmarks(volume, node, side="Auto", schema="Auto", resultsTable=table)
        self.assertEqual(alignment.side, side)  # no DICOM laterality: detected from the fibula
        for method in ("fts", "fnts"):
            self.assertAlmostEqual(getattr(alignment, f"atfa_{method}_deg"), truth[f"atfa_{method}_deg"], delta=0.01)
            angle = node.GetNodeReference(f"{self.prefix}Angle.{method.upper()}")
            self.assertAlmostEqual(angle.GetAngleDegrees(), truth[f"atfa_{method}_deg"], delta=0.01)  # signed aTFA
        self.assertEqual(len(slicer.util.getNodesByClass("vtkMRMLMarkupsLineNode")), 4)
        column = lambda name: table.GetTable().GetColumnByName(name)
        self.assertEqual([column(n).GetValue(0) for n in ("landmarks", "source", "schema", "side")],
                         ["TrueLandmarks", "landmarks", "postop", side])
        self.assertAlmostEqual(column("atfa_fts_deg").GetValue(0), truth["atfa_fts_deg"], delta=0.01)
        logic.adoptLandmarks(volume, node, side="Auto", schema="Post-op")  # again: the same nodes and row
        self.assertEqual(len(slicer.util.getNodesByClass("vtkMRMLMarkupsAngleNode")), 2)
        self.assertEqual(table.GetNumberOfRows(), 1)
        parameters = logic.getParameterNode()  # a saved and reloaded scene keeps the case, state and results
        parameters.inputVolume, parameters.landmarks, parameters.resultsTable = volume, node, table
        with tempfile.TemporaryDirectory(prefix="KneeAlignmentSelfTest") as folder:
            path = str(Path(folder) / "case.mrb")
            self.assertTrue(slicer.util.saveScene(path))
            slicer.mrmlScene.Clear()
            slicer.util.loadScene(path)
        parameters = self.Logic().getParameterNode()
        volume, node, table = parameters.inputVolume, parameters.landmarks, parameters.resultsTable
        self.assertTrue(logic.isCase(node) and table.GetNumberOfRows() == 1)
        self.assertAlmostEqual(logic.update(node).alignment.atfa_fts_deg, truth["atfa_fts_deg"], delta=0.01)
        node.RemoveNthControlPoint(0)
        with self.assertRaisesRegex(MarkupsError, "missing landmarks 'FLC00'"):
            logic.adoptLandmarks(volume, node, schema="Post-op")

    def test_DragRecomputes(self):
        import numpy as np

        from KneeAlignmentLib.geometry import compute_alignment
        from KneeAlignmentLib.schema import load_schema

        self.delayDisplay("Dragging a landmark")
        volume, node, points, side, _truth, ijkToRas = self._phantomCase("preop")
        logic = self.Logic()
        logic.adoptLandmarks(volume, node, resultsTable=logic.newResultsTable())
        logic.watch(node)
        schema = load_schema("preop")
        index = schema.index("TLC06")  # a distal tibial cortex point: moves a shaft centre
        points[index] += (6.0, 0.0)
        node.SetNthControlPointPosition(index, *(np.r_[points[index], 0.0, 1.0] @ ijkToRas.T)[:3])  # as a drag does
        node.InvokeEvent(slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent)
        expected = compute_alignment(points, schema, side, (abs(ijkToRas[1, 1]), abs(ijkToRas[0, 0])))
        angle = node.GetNodeReference(f"{self.prefix}Angle.FTS")
        self.assertAlmostEqual(angle.GetAngleDegrees(), expected.atfa_fts_deg, delta=0.01)
        table = node.GetNodeReference(self.prefix + "Table").GetTable()
        self.assertAlmostEqual(table.GetColumnByName("atfa_fts_deg").GetValue(0), expected.atfa_fts_deg, delta=0.01)
        logic.unwatch()

    def test_ManualMode(self):
        import numpy as np

        from KneeAlignmentLib.geometry import compute_alignment
        from KneeAlignmentLib.schema import load_schema

        self.delayDisplay("Placing the defining points by hand")
        volume, _node, points, side, _truth, ijkToRas = self._phantomCase("preop", withPointList=False)
        expected = compute_alignment(points, load_schema("preop"), side, (abs(ijkToRas[1, 1]), abs(ijkToRas[0, 0])))
        logic = self.Logic()
        node = logic.createManualPoints(volume, side={"R": "Right", "L": "Left"}[side])
        self.assertIn("femoral_shaft_centre_1", logic.nextManualInstruction(node))
        ras = lambda pointPx: (np.r_[pointPx, 0.0, 1.0] @ ijkToRas.T)[:3]
        femur, tibia = expected.femoral_shaft_centres_px, expected.tibial_shaft_centres_px
        guided = [femur[0], femur[1], expected.femoral_axis_fnts_px[1], expected.tibial_axis_fnts_px[0],
                  tibia[0], tibia[1]]
        for i, pointPx in enumerate(guided):  # as guided placement fills them
            node.SetNthControlPointPosition(i, *ras(pointPx))
        self.assertEqual(logic.nextManualInstruction(node), "")
        node.SetFixedNumberOfControlPoints(False)  # the user adds the other shaft centres
        for bone, centres in (("femoral", femur), ("tibial", tibia)):
            for number, pointPx in enumerate(centres[2:], start=3):
                node.AddControlPoint(ras(pointPx), f"{bone}_shaft_centre_{number}")
        update = logic.update(node)
        # The same defining points give the same angles as the full landmark set.
        self.assertAlmostEqual(update.alignment.atfa_fts_deg, expected.atfa_fts_deg, delta=0.01)
        self.assertAlmostEqual(update.alignment.atfa_fnts_deg, expected.atfa_fnts_deg, delta=0.01)
        angle = node.GetNodeReference(f"{self.prefix}Angle.FNTS")
        self.assertAlmostEqual(angle.GetAngleDegrees(), expected.atfa_fnts_deg, delta=0.01)

    def test_ModelInference(self):
        """The bundled pre-op example loaded, Apply with Auto, aTFA within 3 degrees of the truth, every export.

        What it needs but lacks fails it, naming what is missing: Slicer's runners have no skip (Reload and
        Test calls runTest directly, and the CTest runner counts a skipped test as passed).
        """
        from KneeAlignmentLib.dependencies import unmet_requirements
        from KneeAlignmentLib.errors import BundleError

        unmet = unmet_requirements()
        if unmet:
            self.fail("model inference NOT tested: Python packages needed (Apply offers to install them): "
                      + "; ".join(str(u) for u in unmet))
        logic = self.Logic()
        try:
            logic.modelPaths()
        except BundleError as exc:
            self.fail(f"model inference NOT tested: no usable models: {exc}")
        volume = logic.loadExamples(MODULE_DIR / "Resources" / "Examples")[1]  # postop, preop
        stages, table = [], logic.newResultsTable()
        node = logic.measure(volume, model="Auto", device="CPU", resultsTable=table,
                             progress=lambda fraction, message: stages.append(fraction))
        self.assertEqual((stages[-1], node.GetNumberOfControlPoints(), node.GetAttribute(self.prefix + "Source")),
                         (1.0, 134, "model"))  # pre-op decided
        self.assertAlmostEqual(node.GetNodeReference(f"{self.prefix}Angle.FTS").GetAngleDegrees(), 10.0, delta=3.0)
        with tempfile.TemporaryDirectory(prefix="KneeAlignmentSelfTest") as folder:
            out = Path(folder)
            logic.exportCsv(table, out / "results.csv")
            logic.exportJson(node, out / "case.json")
            logic.saveLandmarks(node, out / "case.mrk.json")
            logic.saveTrainingCase(node, out / "dataset")
            self.assertIn("DICOM database", logic.dicomSrProblem(node))  # loaded from a file, not from the database
            self.assertEqual(json.loads((out / "case.json").read_text())["result"]["source"], "model")
            self.assertTrue((out / "results.csv").stat().st_size and (out / "case.mrk.json").stat().st_size)
            self.assertEqual(len(list((out / "dataset").glob("*.mrk.json"))), 1)
