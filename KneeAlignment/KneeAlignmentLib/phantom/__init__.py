"""The phantom: physics-based synthetic AP knee radiographs with exact ground truth.

Bones are projected 3D solids built from the landmark schema's template (cortical shell
and cancellous or marrow core), soft tissue wraps them, X-rays are attenuated along the
rays (Beer-Lambert), scattered, detected with quantum noise and processed like a DR
image; post-op knees carry metal components, cement and a polyethylene insert. The
landmarks are the very outlines the solids are built from, placed by the schema's rule,
so they and the alignment angles are exact.

Modules: ``outline`` (curves and the placement rule), ``anatomy`` (bones), ``postop``
(implants), ``joint`` (the knee assembled, truth), ``imaging`` (acquisition),
``raster`` (polygon distances), ``xray`` (physics and detector), ``annotate`` (text),
``dataset`` (cases, files, manifest).

Entry points: :func:`render_case` (one case in memory) and :func:`generate_dataset`
(DICOM, PNG, ``.mrk.json`` and ``manifest.csv`` on disk).
"""

from .dataset import DEFAULT_SIZE, MANIFEST_COLUMNS, Case, case_id, generate_dataset, render_case

__all__ = ["Case", "render_case", "generate_dataset", "case_id", "MANIFEST_COLUMNS", "DEFAULT_SIZE"]
