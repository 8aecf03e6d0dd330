"""Synthetic hand radiographs whose skeletal maturity follows bone age and sex.

This is the offline default data set: ``dvc repro`` and the tests train a CNN on it, so
the only reliable way to tell the age of a film must be its bones. Each film is drawn
with OpenCV in a hand coordinate frame (millimetres, wrist at the origin, fingers
towards +y, thumb towards +x: a left hand seen postero-anteriorly, as in RSNA):

* forearm (radius, ulna), eight carpal bones, five metacarpals, fourteen phalanges,
  the adductor sesamoid of the thumb, and a blurred soft-tissue silhouette;
* maturity follows :data:`TIMELINE` (Greulich & Pyle style appearance and fusion ages,
  girls on their own, earlier timeline): carpals appear as dots and grow into packed
  polygons, epiphyses appear, widen to the shaft, cap it and fuse (the growth-plate
  gap narrows, then leaves a fading scar), the hand grows and the bones thicken;
* every film gets biological jitter (timing of each structure, proportions) so the
  maturity is not a lookup table of the label;
* nuisances that must not carry age: magnification (as strong as growth itself, and
  "cropped" films are scaled to the hand whatever its size), rotation, translation,
  finger spread, exposure, gamma, background, plate borders, an "L" marker, noise, blur.

All randomness comes from the ``rng`` handed in, drawn in a fixed order and count
that does not depend on the age or sex, so two films rendered from equal rng states
share every nuisance and biological draw (cropped films are still framed to their own
hand). :func:`bone_map` renders the bones alone in a fixed, size-normalised frame, so
tests can see what maturity changes; :func:`structure_states` exposes the timeline.

How a film is made (:func:`render_film`, in :mod:`boneage.data.phantom.film`):

1. ``draws._draw_film``: every random number, in a fixed order (biology, pose,
   nuisances);
2. ``layout._layout_hand``: every structure as outlines in hand mm (forearm, carpals,
   one ray per digit, sesamoid, soft tissue), for this age, sex, biology and pose, from
   the adult tables of ``anatomy`` and the timeline of ``maturation``;
3. ``film._film_affine`` + ``painting._paint_hand``: the outlines rasterised onto uint8
   layers (px);
4. ``film._densities``, ``_expose``, ``_collimate``, ``_burn_marker``, ``_detect``:
   layers to tissue/bone density, film curve, plate, marker, blur, gamma and noise.

:func:`generate` (``dataset``) numbers and labels the films. Modules, each importing only
those listed before it: ``maturation``, ``anatomy``, ``geometry``, ``draws``, ``layout``,
``painting``, ``film``, ``dataset``; this package re-exports the public names.

Changing any arithmetic or the order of the rng draws changes the films, hence the
default pipeline's data: tests/test_phantom.py and a bit-for-bit comparison guard it.
"""

from boneage.data.phantom.dataset import SyntheticFilm, generate
from boneage.data.phantom.film import bone_map, render_film, wrist_box
from boneage.data.phantom.maturation import (
    CARPALS,
    EPIPHYSES,
    TIMELINE,
    StructureState,
    Timing,
    hand_growth,
    structure_states,
)

__all__ = [
    "SyntheticFilm",
    "Timing",
    "StructureState",
    "TIMELINE",
    "CARPALS",
    "EPIPHYSES",
    "structure_states",
    "hand_growth",
    "bone_map",
    "wrist_box",
    "render_film",
    "generate",
]
