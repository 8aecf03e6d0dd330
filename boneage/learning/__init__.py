"""Learning: networks (models, efficientnet_lite, weights, torch_checkpoint), the training
recipe and loop (recipe, training, replicas, datasets, precision, distributed), calibration,
evaluation, cross-validation summaries (crossval), the export with its model card, and the
runtimes that run an exported file (runtimes: Keras, SavedModel, TFLite through LiteRT; it
imports TensorFlow only for the formats that need it).

May import: boneage.data, boneage.imaging, boneage.kernel; Keras and TensorFlow.
"""
