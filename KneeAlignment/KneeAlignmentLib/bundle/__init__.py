"""Model bundles: their format, which ones are used, the model set they load into, the user's store.

- :mod:`.format`: the bundle folder (MONAI layout, metadata, weights, SHA-256), its writer,
  verifying loader and the one atomic folder swap.
- :mod:`.resolve`: the roles of a models folder and the one rule that picks each role's bundle
  (command line, Slicer module and training alike).
- :mod:`.modelset`: a bundle checked against its role (``StageModel``), the set the pipeline
  runs (``ModelSet``) and the cache that keeps it loaded.
- :mod:`.store`: verified import into the user's models folder.
- :mod:`.known`: the pinned releases (``data/known_models.json``) and ``kneealign models verify``.
- :mod:`.thresholds`: the quality-control thresholds a bundle carries.

Nothing is imported here, so that :mod:`.resolve`, :mod:`.known` and :mod:`.thresholds` stay
free of torch (the Slicer module loads before its dependencies are installed).
"""
