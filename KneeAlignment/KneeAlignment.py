"""Knee Alignment: 3D Slicer module measuring the anatomical tibiofemoral angle on AP knee radiographs.

A thin layer between MRML nodes and the Slicer-free core ``KneeAlignmentLib``, which decides what
to compute and to show (``case_record``, ``case_view``, ``case_results``). The core is imported inside
methods only: Slicer's generic tests import this file before torch exists, and ``onReload`` reloads
the core. A *case* is a landmark point list whose attributes hold its ``case_record.CaseRecord`` and
whose node references lead to its radiograph and derived nodes, so a saved scene restores every case.
"""

import logging
import sys
from pathlib import Path
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

# The GUI's choices map onto core values in KneeAlignmentLib.workflow (SCHEMA_KINDS, SIDE_CODES, DEVICES).
# DICOM laterality attributes as Slicer's DICOM database names them (tags).
LATERALITY_TAGS = {"ImageLaterality": "0020,0062", "Laterality": "0020,0060"}
INVERTED_GREY = "vtkMRMLColorTableNodeInvertedGrey"
# MRML class of each markups type of KneeAlignmentLib.markups.
MARKUPS_CLASSES = {"Fiducial": "vtkMRMLMarkupsFiducialNode", "Line": "vtkMRMLMarkupsLineNode",
                   "Angle": "vtkMRMLMarkupsAngleNode", "Curve": "vtkMRMLMarkupsCurveNode"}
# Namespace of a case's attributes (KneeAlignmentLib.case_record.ATTRIBUTES) and node references.
PREFIX = "KneeAlignment."
VOLUME_ROLE = PREFIX + "Volume"
# Application settings (qt.QSettings), shared by every scene.
MODELS_FOLDER_KEY = "KneeAlignment/ModelsFolder"
TRAINING_FOLDER_KEY = "KneeAlignment/TrainingFolder"
EXPORT_FOLDER_KEY = "KneeAlignment/ExportFolder"
LIVE_UPDATE_MS = 80  # redraw at most this often while a landmark is dragged


class KneeAlignment(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Knee Alignment")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.dependencies = []
        self.parent.contributors = ["KneeAlignment contributors"]
        from KneeAlignmentLib import DISCLAIMER  # a constant: the package's __init__ imports nothing
        self.parent.helpText = _("""
<p>Measures knee alignment on an AP knee radiograph: the anatomical tibiofemoral angle (aTFA,
valgus positive) by two axis definitions, FTS (lines fitted through the femoral and tibial
shaft centres) and FNTS (femoral shaft centre to the intercondylar notch, tibial spine centre to
the tibial shaft centre), with pre-op joint-line angles and post-op component angles.</p>
<p><b>How:</b> a two-stage stacked hourglass network
(<a href="https://arxiv.org/abs/2506.18209">arXiv 2506.18209</a>) finds 134 pre-op or 181
post-op landmarks; the angles are computed from them in millimetres. Drag any landmark to
correct it: axes, angles and the table follow at once. Without a model, measure your own
labelled point list, or place the six defining points by hand (manual mode). The radiograph is
read from its file as the command line reads it: window/level does not change the result.</p>
<p><b>Models:</b> the shipped models were trained on synthetic radiographs from the project's
phantom only, not on patient images; their accuracy on real radiographs is unknown until they are
validated on clinical data. Import other model bundles in Settings. <b>Load example
radiographs</b> loads two phantoms (a pre-op and a post-op knee) to try the module on.</p>
<p>See the <a href="https://github.com/kneealignment/SlicerKneeAlignment">extension documentation</a>.</p>
""") + f"<p><b>{DISCLAIMER}</b></p>\n"
        self.parent.acknowledgementText = _("The landmark scheme and the two-stage landmark detector follow arXiv "
                                            "2506.18209; the module layout, the 3D Slicer scripted module template.")


@parameterNodeWrapper
class KneeAlignmentParameterNode:
    """The module's state, saved with the scene: inputVolume (the AP radiograph, one slice), landmarks (the case
    shown: the model's, the user's or manual points), model (Auto: the model tells whether implants are present),
    side (Auto: DICOM laterality, else detected), device, liveUpdate (recompute while dragging), resultsTable."""

    inputVolume: vtkMRMLScalarVolumeNode
    landmarks: vtkMRMLMarkupsFiducialNode
    model: Annotated[str, Choice(["Auto", "Pre-op", "Post-op"])] = "Auto"
    side: Annotated[str, Choice(["Auto", "Left", "Right"])] = "Auto"
    device: Annotated[str, Choice(["Auto", "CPU", "GPU"])] = "Auto"
    liveUpdate: bool = True
    resultsTable: vtkMRMLTableNode


class KneeAlignmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """GUI: binds the .ui to the parameter node, asks the user, shows progress; the logic does the rest."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._running = False
        self._cancelRequested = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/KneeAlignment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)  # the .ui connects it to every MRML widget
        self.ui.summaryLabel.font = qt.QFontDatabase.systemFont(qt.QFontDatabase.FixedFont)
        self.ui.progressBar.hide()
        self.ui.cancelButton.hide()
        # The default folder is shown as a placeholder: resolving it would import the models code (torch).
        self.ui.modelsFolderPathLineEdit.currentPath = slicer.util.settingsValue(MODELS_FOLDER_KEY, "")

        self.logic = KneeAlignmentLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        for button, handler in (
            (self.ui.applyButton, self.onApply), (self.ui.cancelButton, self.onCancel),
            (self.ui.measurePointListButton, self.onMeasurePointList), (self.ui.manualButton, self.onManual),
            (self.ui.exportCsvButton, self.onExportCsv), (self.ui.exportJsonButton, self.onExportJson),
            (self.ui.exportSrButton, self.onExportSr),
            (self.ui.saveLandmarksButton, self.onSaveLandmarks),
            (self.ui.saveTrainingCaseButton, self.onSaveTrainingCase),
            (self.ui.importModelFolderButton, self.onImportModelFolder),
            (self.ui.importModelZipButton, self.onImportModelZip),
            (self.ui.loadExamplesButton, self.onLoadExamples),
        ):
            button.connect("clicked(bool)", handler)
        self.ui.modelsFolderPathLineEdit.connect("currentPathChanged(QString)", self.onModelsFolderChanged)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()
        if self.logic:
            self.logic.unwatch()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        self.logic.unwatch()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onReload(self) -> None:
        """Reload the core and the self-test too: Slicer's reload re-executes only this file."""
        if self.logic:
            self.logic.unwatch()
        for name in [n for n in sys.modules if n.split(".")[0] in ("KneeAlignmentLib", "KneeAlignmentSelfTest")]:
            del sys.modules[name]
        super().onReload()

    # --- parameter node ------------------------------------------------------------------

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Widgets carry a "SlicerParameterName" property in the .ui.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        p = self._parameterNode
        case = p.landmarks if p and p.landmarks and self.logic.isCase(p.landmarks) else None
        if p and p.liveUpdate and case is not None:
            self.logic.watch(case, self._showUpdate)
        else:
            self.logic.unwatch()
        idle = not self._running
        self.ui.applyButton.enabled = self.ui.manualButton.enabled = idle and bool(p and p.inputVolume)
        self.ui.measurePointListButton.enabled = idle and bool(p and p.inputVolume and p.landmarks)
        for button in (self.ui.exportJsonButton, self.ui.saveLandmarksButton, self.ui.saveTrainingCaseButton):
            button.enabled = idle and case is not None
        self.ui.exportCsvButton.enabled = idle and bool(p and p.resultsTable)
        srProblem = self.logic.dicomSrProblem(case) if case is not None else _("Select a measured case.")
        self.ui.exportSrButton.enabled = idle and not srProblem
        self.ui.exportSrButton.toolTip = srProblem or _("The model's result as a DICOM Structured Report (TID 1500) "
                                                        "in the radiograph's study.")

    def _showUpdate(self, update, error) -> None:
        """Called by the logic after each recompute: the new values, or why there are none."""
        from KneeAlignmentLib.case_view import format_alignment

        self.ui.summaryLabel.text = format_alignment(update.alignment) if update else ""
        self.ui.statusLabel.text = str(error) if error else ""

    # --- running -------------------------------------------------------------------------

    def _table(self):
        p = self._parameterNode
        p.resultsTable = p.resultsTable or self.logic.newResultsTable()
        return p.resultsTable

    def _setRunning(self, running: bool) -> None:
        self._running, self._cancelRequested = running, False
        self.ui.progressBar.visible = self.ui.cancelButton.visible = running
        self.ui.progressBar.value = 0
        self._onParameterNodeModified()

    def _onProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = message
        slicer.app.processEvents()  # repaint, and let the Cancel button be clicked

    def onCancel(self) -> None:
        self._cancelRequested = True
        self.ui.statusLabel.text = _("Cancelling...")

    def onApply(self) -> None:
        from KneeAlignmentLib.workflow import Cancelled

        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Failed to measure the knee."), waitCursor=False):
            if not self.ensureDependencies():
                self.ui.statusLabel.text = _("Python packages needed for inference were not installed.")
                return
            self._setRunning(True)
            try:
                p.landmarks = self.logic.measure(p.inputVolume, model=p.model, side=p.side, device=p.device,
                                                 resultsTable=self._table(), progress=self._onProgress,
                                                 cancelled=lambda: self._cancelRequested)
                self.ui.statusLabel.text = _("Done. Drag any landmark to correct it.")
            except Cancelled:
                self.ui.statusLabel.text = _("Cancelled: nothing was changed.")
            finally:
                self._setRunning(False)

    def onMeasurePointList(self) -> None:
        """Measure the selected point list: a model's or manual case again as it is, any other list anew."""
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Failed to measure the point list."), waitCursor=True):
            if self.logic.isCase(p.landmarks) and self.logic.caseRecord(p.landmarks).source in ("model", "manual"):
                self._showUpdate(self.logic.update(p.landmarks, self._table()), None)
            else:
                self.logic.adoptLandmarks(p.inputVolume, p.landmarks, side=p.side, schema=p.model,
                                          resultsTable=self._table())
            self._onParameterNodeModified()

    def onManual(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Failed to start manual placement."), waitCursor=True):
            p.landmarks = self.logic.createManualPoints(p.inputVolume, side=p.side, resultsTable=self._table())
            markupsLogic = slicer.modules.markups.logic()
            markupsLogic.SetActiveList(p.landmarks)
            markupsLogic.StartPlaceMode(True)  # fills the unplaced points one after the other
            self.ui.statusLabel.text = self.logic.nextManualInstruction(p.landmarks)

    def ensureDependencies(self) -> bool:
        """First-use install, with consent: torch by the PyTorch extension (it knows the GPU), the rest by pip;
        nothing is fetched when the versions fit (KneeAlignmentLib.dependencies). False when the user declined."""
        import importlib.util

        from KneeAlignmentLib.dependencies import ensure_requirements

        def installTorch(specifier: str) -> bool:
            import PyTorchUtils  # the PyTorch extension's module

            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
            return torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=specifier) is not None

        return ensure_requirements(
            pytorch_extension=importlib.util.find_spec("PyTorchUtils") is not None,
            consent=lambda details: slicer.util.confirmOkCancelDisplay(
                _("Knee Alignment needs additional Python packages for inference. Installing them needs a network "
                  "connection and may take several minutes. Install now?"),
                _("Install Python packages"), detailedText=details),
            install_torch=installTorch, pip_install=slicer.util.pip_install)

    # --- exports -------------------------------------------------------------------------

    def _saveAs(self, title: str, name: str, fileFilter: str, write) -> None:
        """Ask for a file (starting in the last export folder), then ``write(path)``; errors go to a message box."""
        folder = slicer.util.settingsValue(EXPORT_FOLDER_KEY, str(Path.home()))
        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), title, str(Path(folder) / name), fileFilter)
        if not path:
            return
        qt.QSettings().setValue(EXPORT_FOLDER_KEY, str(Path(path).parent))
        with slicer.util.tryWithErrorDisplay(_("Failed to write {path}.").format(path=path), waitCursor=True):
            write(path)
            self.ui.statusLabel.text = _("Written: {path}").format(path=path)

    def onExportCsv(self) -> None:
        self._saveAs(_("Export results as CSV"), "knee-alignment.csv", "CSV (*.csv)",
                     lambda path: self.logic.exportCsv(self._parameterNode.resultsTable, path))

    def onExportJson(self) -> None:
        self._saveAs(_("Export case as JSON"), "knee-alignment.json", "JSON (*.json)",
                     lambda path: self.logic.exportJson(self._parameterNode.landmarks, path))

    def onExportSr(self) -> None:
        self._saveAs(_("Export DICOM Structured Report"), "knee-alignment-sr.dcm", "DICOM (*.dcm)",
                     lambda path: self.logic.exportDicomSr(self._parameterNode.landmarks, path))

    def onSaveLandmarks(self) -> None:
        self._saveAs(_("Save landmarks"), "landmarks.mrk.json", "Markups (*.mrk.json)",
                     lambda path: self.logic.saveLandmarks(self._parameterNode.landmarks, path))

    def onSaveTrainingCase(self) -> None:
        start = slicer.util.settingsValue(TRAINING_FOLDER_KEY, str(Path.home()))
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Training dataset folder"), start)
        if folder:
            qt.QSettings().setValue(TRAINING_FOLDER_KEY, folder)
            with slicer.util.tryWithErrorDisplay(_("Failed to save the training case."), waitCursor=True):
                saved = self.logic.saveTrainingCase(self._parameterNode.landmarks, folder)
                self.ui.statusLabel.text = _("Saved {image} and {markups}").format(
                    image=saved.image.name, markups=saved.markups.name)

    # --- models --------------------------------------------------------------------------

    def onModelsFolderChanged(self, path: str) -> None:
        if path:
            qt.QSettings().setValue(MODELS_FOLDER_KEY, path)
            self.logic.clearModelCache()

    def onLoadExamples(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to load the example radiographs."), waitCursor=True):
            volumes = self.logic.loadExamples(self.resourcePath("Examples"))
            if volumes and self._parameterNode:
                self._parameterNode.inputVolume = volumes[0]

    def onImportModelFolder(self) -> None:
        self._importModels(qt.QFileDialog.getExistingDirectory(
            slicer.util.mainWindow(), _("Model bundle or models folder"), str(Path.home())))

    def onImportModelZip(self) -> None:
        self._importModels(qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), _("Model bundle archive"), str(Path.home()), "Zip (*.zip)"))

    def _importModels(self, source: str) -> None:
        if not source:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to import the model."), waitCursor=True):
            if not self.ensureDependencies():  # verifying a bundle loads its network
                return
            from KneeAlignmentLib.bundle.store import BundleConflict

            try:
                imported = self.logic.importModels(source)
            except BundleConflict as conflict:
                if not slicer.util.confirmOkCancelDisplay(
                        _("{conflict}\n\nReplace the installed model?").format(conflict=conflict),
                        _("Replace model")):
                    return
                imported = self.logic.importModels(source, replace=True)
            lines = [f"{entry.role}: {entry.model_id} ({entry.status})" for entry in imported]
            slicer.util.infoDisplay(_("Models folder {folder}:\n{lines}").format(
                folder=KneeAlignmentLogic.modelsFolder(), lines="\n".join(lines)))


class KneeAlignmentLogic(ScriptedLoadableModuleLogic, VTKObservationMixin):
    """MRML nodes <-> KneeAlignmentLib. Opens no dialogs: bad input raises."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        VTKObservationMixin.__init__(self)
        self._modelCache = None
        self._watched = None
        self._onUpdate = None
        self._timer = qt.QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(LIVE_UPDATE_MS)
        self._timer.connect("timeout()", self._updateWatched)

    def getParameterNode(self):
        return KneeAlignmentParameterNode(super().getParameterNode())

    # --- settings ------------------------------------------------------------------------

    @staticmethod
    def modelsFolder() -> Path:
        """The user's models folder: the application setting, else ``default_user_models_dir()``."""
        from KneeAlignmentLib.bundle.resolve import default_user_models_dir

        return Path(slicer.util.settingsValue(MODELS_FOLDER_KEY, str(default_user_models_dir())))

    def modelPaths(self) -> dict:
        """Bundle folder per role by the one rule of ``bundle.resolve``, with this module's models folder."""
        from KneeAlignmentLib.bundle.resolve import resolve_models

        return resolve_models(user_dir=self.modelsFolder())

    def importModels(self, source, replace: bool = False) -> list:
        from KneeAlignmentLib.bundle.store import import_models

        imported = import_models(source, self.modelsFolder(), replace=replace)
        self.clearModelCache()
        return imported

    def clearModelCache(self) -> None:
        self._modelCache = None

    # --- images --------------------------------------------------------------------------

    @staticmethod
    def loadExamples(folder) -> list:
        """Load the example radiographs (the DICOM files in ``folder``) as volumes."""
        paths = sorted(Path(folder).glob("*.dcm"))
        if not paths:
            raise ValueError(f"no example radiographs in {folder}")
        return [slicer.util.loadVolume(str(p), {"singleFile": True, "name": f"Example {p.stem}"}) for p in paths]

    @staticmethod
    def _ijkToRas(volumeNode):
        """(4, 4) IJK-to-RAS of a radiograph volume that holds an image and is not transformed."""
        if volumeNode is None or volumeNode.GetImageData() is None:
            raise ValueError("select a radiograph volume that holds an image")
        if volumeNode.GetParentTransformNode() is not None:
            raise ValueError("the radiograph is transformed: harden or remove its transform first")
        ijkToRas = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(ijkToRas)
        return slicer.util.arrayFromVTKMatrix(ijkToRas)

    @staticmethod
    def volumeImage(volumeNode):
        """KneeAlignmentLib.volume.VolumeImage of a single-slice, untransformed volume: its file as the
        command line reads it, whatever the display window (see radiograph_from_volume)."""
        from KneeAlignmentLib.imageio import side_from_laterality
        from KneeAlignmentLib.volume import radiograph_from_volume

        ijkToRas = KneeAlignmentLogic._ijkToRas(volumeNode)
        display = volumeNode.GetDisplayNode()
        invert = bool(display and display.GetColorNodeID() == INVERTED_GREY)  # only for volumes without a file
        side, source = side_from_laterality(KneeAlignmentLogic.dicomLaterality(volumeNode))
        return radiograph_from_volume(slicer.util.arrayFromVolume(volumeNode), ijkToRas,
                                      source_file=KneeAlignmentLogic.sourceFile(volumeNode), invert=invert,
                                      side=side, side_source=f"DICOM {source}" if side else None)

    @staticmethod
    def _dicomUids(volumeNode) -> list:
        """The DICOM database instances a volume was loaded from (none without the DICOM module's database)."""
        uids = (volumeNode.GetAttribute("DICOM.instanceUIDs") or "").split()
        return uids if getattr(slicer, "dicomDatabase", None) is not None else []

    @staticmethod
    def sourceFile(volumeNode):
        """The file a volume was loaded from (a single DICOM instance, or its storage node's file), or None
        when it has none or was modified since."""
        uids = KneeAlignmentLogic._dicomUids(volumeNode)
        if len(uids) == 1:
            return slicer.dicomDatabase.fileForInstance(uids[0]) or None
        storage = volumeNode.GetStorageNode()
        if storage is None or not storage.GetFileName() or volumeNode.GetModifiedSinceRead():
            return None
        return storage.GetFileName()

    @staticmethod
    def dicomLaterality(volumeNode) -> dict:
        """{keyword: value} of the DICOM laterality attributes of a volume loaded by the DICOM module."""
        uids = KneeAlignmentLogic._dicomUids(volumeNode)
        if not uids:
            return {}
        return {keyword: slicer.dicomDatabase.instanceValue(uids[0], tag) for keyword, tag in LATERALITY_TAGS.items()}

    @staticmethod
    def markupsNode(node):
        """KneeAlignmentLib.markups.MarkupsNode of a point list: world positions in LPS, NaN where unplaced."""
        import numpy as np

        from KneeAlignmentLib.markups import MarkupsNode
        from KneeAlignmentLib.markups import flip_ras_lps

        count = node.GetNumberOfControlPoints()
        positionsLps = flip_ras_lps(slicer.util.arrayFromMarkupsControlPoints(node, world=True).reshape(count, 3))
        for i in range(count):
            if node.GetNthControlPointPositionStatus(i) != slicer.vtkMRMLMarkupsNode.PositionDefined:
                positionsLps[i] = np.nan
        labels = tuple(node.GetNthControlPointLabel(i) for i in range(count))
        return MarkupsNode("Fiducial", node.GetName(), labels, positionsLps)

    # --- creating cases ------------------------------------------------------------------

    def measure(self, volumeNode, model="Auto", side="Auto", device="Auto", resultsTable=None,
                progress=None, cancelled=None):
        """Find the landmarks with the models and create a case; returns its point list.

        ``progress(fraction, message)`` and ``cancelled()`` are called between stages; a
        True from ``cancelled`` raises KneeAlignmentLib.workflow.Cancelled and adds nothing.
        """
        from KneeAlignmentLib.bundle.modelset import ModelCache
        from KneeAlignmentLib.case_view import landmark_node
        from KneeAlignmentLib.errors import KneeAlignmentError
        from KneeAlignmentLib.schema import load_schema
        from KneeAlignmentLib.workflow import checkpoint, gui_choices, measure_radiograph

        kind, sideCode, deviceName = gui_choices(model, side, device)
        checkpoint(0.0, "Reading the radiograph", progress, cancelled)
        image = self.volumeImage(volumeNode)
        self._modelCache = self._modelCache or ModelCache()
        result = measure_radiograph(image.radiograph, self.modelPaths(), kind=kind or "auto", side=sideCode,
                                    device=deviceName, cache=self._modelCache, progress=progress,
                                    cancelled=cancelled, span=(0.05, 0.9))
        if result.landmarks is None:
            raise ValueError(f"no landmarks found: {result.reason}")
        checkpoint(0.9, "Creating markups", progress, cancelled)
        name = slicer.mrmlScene.GenerateUniqueName(f"{volumeNode.GetName()} landmarks")
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
        self._writeMarkup(node, landmark_node(name, load_schema(result.kind), result.landmarks.points_px, image.plane))
        self._setCase(node, volumeNode, result.kind, result.side, result.side_source, "model",
                      result.to_json(indent=None))  # one line: stored as a node attribute in the scene file
        try:
            self.update(node, resultsTable)
        except KneeAlignmentError as exc:  # keep the landmarks: correcting them is how the user fixes this
            logging.warning(f"{name}: no angles from the model's landmarks yet: {exc}")
        checkpoint(1.0, "Done", progress, None)
        return node

    def adoptLandmarks(self, volumeNode, landmarksNode, side="Auto", schema="Auto", resultsTable=None):
        """Make a labelled point list (the user's, or loaded from a file) a case; returns its alignment."""
        from KneeAlignmentLib.case_view import read_points
        from KneeAlignmentLib.measurement import measure_points
        from KneeAlignmentLib.schema import kind_for_labels, load_schema
        from KneeAlignmentLib.workflow import gui_choices

        if landmarksNode is None:
            raise ValueError("select a landmark point list")
        kind, sideCode, _device = gui_choices(schema, side, "Auto")
        node, image = self.markupsNode(landmarksNode), self.volumeImage(volumeNode)
        kind = kind or kind_for_labels(node.labels)
        _names, points = read_points(node, kind, image.plane)
        # measured before the node becomes a case: points that cannot be measured leave it untouched
        decision = measure_points(points, load_schema(kind), side=sideCode, radiograph=image.radiograph).side
        for flag in decision.flags:  # a chosen side against the image's tag is used, but said
            logging.warning(f"{landmarksNode.GetName()}: {flag.code}: {flag.message}")
        self._setCase(landmarksNode, volumeNode, kind, decision.side, decision.source, "landmarks", "")
        return self.update(landmarksNode, resultsTable).alignment

    def createManualPoints(self, volumeNode, side="Auto", resultsTable=None):
        """A point list of the six defining points, unplaced, for guided placement; returns it."""
        from KneeAlignmentLib.case_view import MANUAL_DISPLAY
        from KneeAlignmentLib.manual_points import KIND, MANUAL_POINTS
        from KneeAlignmentLib.measurement import decide_side
        from KneeAlignmentLib.workflow import gui_choices

        _kind, sideCode, _device = gui_choices("Auto", side, "Auto")
        decision = decide_side(sideCode, self.volumeImage(volumeNode).radiograph)
        for flag in decision.flags:
            logging.warning(f"{volumeNode.GetName()}: {flag.code}: {flag.message}")
        if decision.side is None:
            raise ValueError("manual mode cannot detect the side (no fibula is placed): choose Left or Right")
        name = slicer.mrmlScene.GenerateUniqueName(f"{volumeNode.GetName()} manual points")
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
        node.CreateDefaultDisplayNodes()
        for i, point in enumerate(MANUAL_POINTS):
            node.AddControlPoint([0.0, 0.0, 0.0], point.label)
            node.SetNthControlPointDescription(i, point.description)
            node.UnsetNthControlPointPosition(i)
        node.SetFixedNumberOfControlPoints(True)
        self._applyDisplay(node.GetDisplayNode(), MANUAL_DISPLAY)
        self._setCase(node, volumeNode, KIND, decision.side, decision.source, "manual", "")
        if resultsTable is not None:
            node.SetNodeReferenceID(PREFIX + "Table", resultsTable.GetID())
        return node

    @staticmethod
    def nextManualInstruction(node) -> str:
        """What to place next in manual mode ("" when every point is placed; KneeAlignmentLib.manual_points)."""
        from KneeAlignmentLib.manual_points import next_instruction

        markups = KneeAlignmentLogic.markupsNode(node)
        return next_instruction(markups.labels, markups.positions_lps)

    @staticmethod
    def _setCase(node, volumeNode, kind, side, sideSource, source, measurementJson) -> None:
        from KneeAlignmentLib.case_record import CaseRecord

        record = CaseRecord(kind, side, sideSource, source, measurementJson)
        for key, value in record.to_attributes().items():
            node.SetAttribute(PREFIX + key, value)
        node.SetNodeReferenceID(VOLUME_ROLE, volumeNode.GetID())

    @staticmethod
    def isCase(node) -> bool:
        from KneeAlignmentLib.case_record import is_case

        return is_case(lambda key: node.GetAttribute(PREFIX + key)) and node.GetNodeReference(VOLUME_ROLE) is not None

    @staticmethod
    def caseRecord(node):
        """The KneeAlignmentLib.case_record.CaseRecord a point list holds; raises when it is not a case."""
        from KneeAlignmentLib.case_record import CaseRecord

        if not KneeAlignmentLogic.isCase(node):
            raise ValueError(f"{node.GetName()!r} is not a Knee Alignment case: measure it first")
        return CaseRecord.from_attributes(lambda key: node.GetAttribute(PREFIX + key))

    # --- recomputing (live correction) ---------------------------------------------------

    def evaluate(self, landmarksNode):
        """(CaseRecord, ImagePlane, KneeAlignmentLib.case_view.CaseUpdate) from current positions.

        Only the volume's geometry is read, not its pixels, so a drag stays smooth on large films.
        """
        from KneeAlignmentLib.case_view import recompute
        from KneeAlignmentLib.markups import ImagePlane

        case = self.caseRecord(landmarksNode)
        plane = ImagePlane.from_ijk_to_ras(self._ijkToRas(landmarksNode.GetNodeReference(VOLUME_ROLE)))
        return case, plane, recompute(self.markupsNode(landmarksNode), case.kind, case.side, plane)

    def update(self, landmarksNode, resultsTable=None):
        """Recompute a case from its point list and redraw its nodes and table row; returns the CaseUpdate."""
        if resultsTable is not None:
            landmarksNode.SetNodeReferenceID(PREFIX + "Table", resultsTable.GetID())
        from KneeAlignmentLib.case_results import results_row

        case, _plane, update = self.evaluate(landmarksNode)
        for view in update.view:
            self._showViewNode(landmarksNode, view)
        table = landmarksNode.GetNodeReference(PREFIX + "Table")
        if table is not None:
            self.writeTableRow(table, results_row(case, update, **self._names(landmarksNode)))
        return update

    @staticmethod
    def _names(landmarksNode) -> dict:
        """The names a case's results show: its radiograph's and its point list's."""
        return {"radiograph": landmarksNode.GetNodeReference(VOLUME_ROLE).GetName(),
                "landmarks": landmarksNode.GetName()}

    def watch(self, landmarksNode, onUpdate=None) -> None:
        """Recompute ``landmarksNode`` while it is edited: throttled during a drag, at once when it ends.

        ``onUpdate(update, error)`` receives each CaseUpdate, or the KneeAlignmentError that
        prevented one (the previous drawing then stays).
        """
        if self._watched is landmarksNode:
            self._onUpdate = onUpdate
            return
        self.unwatch()
        self._watched, self._onUpdate = landmarksNode, onUpdate
        for event in (slicer.vtkMRMLMarkupsNode.PointModifiedEvent, slicer.vtkMRMLMarkupsNode.PointAddedEvent,
                      slicer.vtkMRMLMarkupsNode.PointRemovedEvent):
            self.addObserver(landmarksNode, event, self._onPointModified)
        self.addObserver(landmarksNode, slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent, self._onInteractionEnd)
        self._updateWatched()

    def unwatch(self) -> None:
        self._timer.stop()
        if self._watched is not None:
            self.removeObservers(self._onPointModified)
            self.removeObservers(self._onInteractionEnd)
        self._watched, self._onUpdate = None, None

    def _onPointModified(self, caller, event) -> None:
        if not self._timer.isActive():  # throttle: at most one redraw per interval while dragging
            self._timer.start()

    def _onInteractionEnd(self, caller, event) -> None:
        self._timer.stop()
        self._updateWatched()  # the final position, without waiting

    def _updateWatched(self) -> None:
        from KneeAlignmentLib.errors import KneeAlignmentError

        if self._watched is None:
            return
        update, error = None, None
        try:
            update = self.update(self._watched)
        except KneeAlignmentError as exc:  # e.g. a point dragged off the plane or deleted: keep the last drawing
            error = exc
            if self.caseRecord(self._watched).kind == "manual":
                error = self.nextManualInstruction(self._watched) or exc
        if self._onUpdate is not None:
            self._onUpdate(update, error)

    # --- drawing -------------------------------------------------------------------------

    def _showViewNode(self, caseNode, view) -> None:
        """Create or update the node of ``view.role`` for this case, under the case in the data tree."""
        role = PREFIX + view.role
        className = MARKUPS_CLASSES[view.node.type]
        node = caseNode.GetNodeReference(role)
        if node is None or not node.IsA(className):
            node = slicer.mrmlScene.AddNewNodeByClass(className, view.node.name)
            caseNode.SetNodeReferenceID(role, node.GetID())
            shNode = slicer.mrmlScene.GetSubjectHierarchyNode()
            shNode.SetItemParent(shNode.GetItemByDataNode(node), shNode.GetItemByDataNode(caseNode))
            if view.node.type == "Curve":
                node.SetCurveTypeToLinear()
        wasModifying = node.StartModify()
        self._writeMarkup(node, view.node)
        for i in range(node.GetNumberOfControlPoints()):
            node.SetNthControlPointVisibility(i, view.points_visible)
        if view.signed_axis_ras is not None:
            node.SetAngleMeasurementModeToOrientedSigned()
            node.SetOrientationRotationAxis(*view.signed_axis_ras)
        node.EndModify(wasModifying)

    def _writeMarkup(self, node, markup) -> None:
        """Name, positions (LPS -> RAS), labels, descriptions, lock state and display of a core MarkupsNode."""
        from KneeAlignmentLib.markups import flip_ras_lps

        node.SetName(markup.name)
        slicer.util.updateMarkupsControlPointsFromArray(node, flip_ras_lps(markup.positions_lps))
        for i, (label, description) in enumerate(zip(markup.labels, markup.descriptions)):
            if node.GetNthControlPointLabel(i) != label:
                node.SetNthControlPointLabel(i, label)
            if node.GetNthControlPointDescription(i) != description:
                node.SetNthControlPointDescription(i, description)
        node.SetLocked(markup.locked)
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
        self._applyDisplay(node.GetDisplayNode(), markup.display)

    @staticmethod
    def _applyDisplay(displayNode, display) -> None:
        displayNode.SetColor(*display.color)
        displayNode.SetSelectedColor(*display.color)  # points are drawn in the selected colour
        displayNode.SetGlyphScale(display.glyph_scale)
        displayNode.SetTextScale(display.text_scale)
        displayNode.SetPointLabelsVisibility(display.point_labels_visible)
        displayNode.SetPropertiesLabelVisibility(display.properties_label_visible)
        displayNode.SetOpacity(display.opacity)

    # --- results table -------------------------------------------------------------------

    @staticmethod
    def newResultsTable():
        return slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", "KneeAlignment results")

    @staticmethod
    def writeTableRow(tableNode, row) -> int:
        """Write a row of KneeAlignmentLib.case_results.results_row into the case's row (added when new)."""
        from KneeAlignmentLib.case_results import COLUMNS

        if tableNode.GetNumberOfColumns() == 0:
            for column in COLUMNS:
                array = vtk.vtkDoubleArray() if column.unit else vtk.vtkStringArray()
                array.SetName(column.name)
                tableNode.AddColumn(array)
                tableNode.SetColumnDescription(column.name, column.description)
                if column.unit:
                    tableNode.SetColumnUnitLabel(column.name, column.unit)
        missing = [c.name for c in COLUMNS if tableNode.GetColumnIndex(c.name) < 0]
        if missing:
            raise ValueError(f"table {tableNode.GetName()!r} is not a KneeAlignment results table "
                             f"(no {missing[0]!r} column)")
        table = tableNode.GetTable()
        names = table.GetColumnByName("landmarks")
        rows = [r for r in range(table.GetNumberOfRows()) if names.GetValue(r) == row["landmarks"]]
        index = rows[0] if rows else tableNode.AddEmptyRow()
        for column in COLUMNS:
            table.GetColumnByName(column.name).SetValue(index, row[column.name])
        table.Modified()
        tableNode.Modified()
        return index

    # --- exports -------------------------------------------------------------------------

    @staticmethod
    def exportCsv(tableNode, path):
        """Every row of a results table, as the table shows it (KneeAlignmentLib.case_results.COLUMNS)."""
        from KneeAlignmentLib.case_results import COLUMNS, write_results_csv

        table = tableNode.GetTable()
        columns = [(c.name, table.GetColumnByName(c.name)) for c in COLUMNS]
        if any(array is None for _name, array in columns):
            raise ValueError(f"table {tableNode.GetName()!r} is not a KneeAlignment results table")
        return write_results_csv(path, [{name: array.GetValue(r) for name, array in columns}
                                        for r in range(table.GetNumberOfRows())])

    def exportJson(self, landmarksNode, path):
        """The case's current result beside the model's original measurement (KneeAlignmentLib.case_results)."""
        from KneeAlignmentLib.case_results import case_document, write_case_json

        case, plane, update = self.evaluate(landmarksNode)
        document = case_document(case, update, **self._names(landmarksNode), spacing_mm=plane.spacing_mm)
        return write_case_json(path, document)

    @staticmethod
    def dicomSrProblem(landmarksNode) -> str:
        """Why a case cannot be exported as DICOM SR ("" when it can, unless its landmarks were corrected;
        KneeAlignmentLib.case_record)."""
        from KneeAlignmentLib.case_record import dicom_sr_problem

        instances = len(KneeAlignmentLogic._dicomUids(landmarksNode.GetNodeReference(VOLUME_ROLE)))
        return dicom_sr_problem(KneeAlignmentLogic.caseRecord(landmarksNode), instances)

    def exportDicomSr(self, landmarksNode, path):
        """The model's unedited result as a Comprehensive SR in the radiograph's study (case_record, dicom_results)."""
        from KneeAlignmentLib.case_record import sr_measurement
        from KneeAlignmentLib.dicom_results import source_reference, write_measurement_sr
        from KneeAlignmentLib.markups import ImagePlane

        volume = landmarksNode.GetNodeReference(VOLUME_ROLE)
        plane = ImagePlane.from_ijk_to_ras(self._ijkToRas(volume))
        uids = self._dicomUids(volume)
        measurement = sr_measurement(self.caseRecord(landmarksNode), len(uids), self.markupsNode(landmarksNode), plane)
        return write_measurement_sr(path, measurement, source_reference(slicer.dicomDatabase.fileForInstance(uids[0])))

    @staticmethod
    def saveLandmarks(landmarksNode, path) -> None:
        """The point list as Slicer writes it (``.mrk.json``, positions in LPS)."""
        if not slicer.util.saveNode(landmarksNode, str(path)):
            raise OSError(f"Slicer could not write {path}")

    def saveTrainingCase(self, landmarksNode, folder):
        """Image + current landmarks as the next case of a training dataset folder (neutral file names)."""
        from KneeAlignmentLib.datasets import save_training_case, training_schema

        case, _plane, update = self.evaluate(landmarksNode)
        schema = training_schema(case.kind)
        image = self.volumeImage(landmarksNode.GetNodeReference(VOLUME_ROLE))
        return save_training_case(folder, image.radiograph, schema, update.points_px)


from KneeAlignmentSelfTest import SelfTest  # a package, so that Slicer does not take it for a module


class KneeAlignmentTest(SelfTest):
    """The module's self-test (``KneeAlignmentSelfTest``), run by Reload and Test and by CTest."""

    Logic = KneeAlignmentLogic
    prefix = PREFIX
