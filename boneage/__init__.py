"""boneage: bone age from hand radiographs, as a reproducible DVC + Keras 3 pipeline."""

__version__ = "0.1.0"

import os as _os

# OpenCV's own ceiling on decoded image size, read once when cv2 loads: a backstop behind
# the header checks of boneage.imaging.decoding (a 10,000 x 10,000 film, 16,384 px a side). Only
# effective when boneage is imported before cv2, as every boneage entry point does.
_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", "100000000")
_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_WIDTH", "16384")
_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_HEIGHT", "16384")
