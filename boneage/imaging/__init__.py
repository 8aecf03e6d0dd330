"""Film to pixels: a film's header read before decoding (headers), decoding of every
accepted format (decoding, dicom; large films reduced as they are read, headers), the one imaging path from a decoded film to the model's
input (transforms.prepare), and the check that a film is a hand radiograph (film_check,
hand_search).

The preprocess stage, ``boneage predict``, the web app and the DICOM node all read films
through these modules, so training and serving cannot see different pixels.

May import: boneage.kernel. Never TensorFlow or Keras (checked by import-linter).
"""
