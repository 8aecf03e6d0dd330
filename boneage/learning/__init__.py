"""Learning: networks (models, efficientnet_lite, weights, torch_checkpoint), the training
recipe and loop (recipe, training, replicas, datasets, precision, distributed), calibration,
evaluation, cross-validation summaries (crossval) and the export with its model card.

May import: boneage.data, boneage.imaging, boneage.kernel; Keras and TensorFlow.
"""
