"""Data in: RSNA copies in every layout and the synthetic hand radiographs into one canonical
form (sources, phantom), the packed store of prepared films (store), and the
train/validation/test split (splits).

May import: boneage.imaging, boneage.kernel. Never TensorFlow or Keras (checked by
import-linter).
"""
