"""kneetrain: training and export of KneeAlignment's landmark networks.

The networks, heatmap codec, reference frame, input standardisation, schema, dataset
reader and bundle format come from ``KneeAlignmentLib``; this package adds what only
training needs: configs (:mod:`.config`), data sources and splits (:mod:`.data`), stage
views and jitter (:mod:`.views`), augmentation (:mod:`.augment`), losses
(:mod:`.losses`), checkpoints (:mod:`.checkpoint`), process groups on the core's torchrun
context (:mod:`.distributed`), the training loop (:mod:`.trainer`), export to a model
bundle (:mod:`.export`) and the ``kneealign-train`` command (:mod:`.cli`).
"""

__version__ = "0.1.0"
