"""Painting: a hand's outlines rasterised onto uint8 density layers.

:class:`_Canvas` holds three bone layers, their medulla layers and a soft-tissue layer,
drawn with anti-aliased fixed-point OpenCV calls from hand mm; :func:`_paint_long_bone`
draws a shaft with its epiphysis, growth plate and physeal scar, and :func:`_paint_hand`
paints a whole :class:`_Hand` in its order.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from boneage.data.phantom.geometry import _normal, _superellipse, _tube_outline
from boneage.data.phantom.layout import _Hand, _LongBone

_SHIFT = 4  # fractional bits handed to cv2 drawing calls
_ONE = float(1 << _SHIFT)  # 1 px in those fixed-point units
_AA = cv2.LINE_AA
_BONE_VALUE = 200.0  # uint8 level of density 1.0 on the bone layers
_MEDULLA = 0.2  # density lost in the medullary canal: the cortex looks brighter


class _Canvas:
    """Bone layers, their medulla layers and a soft-tissue layer, drawn in hand frame mm.

    cv2 anti-aliasing only works on 8-bit images, so every layer is uint8 (height, width)
    and shapes on one layer overwrite (union) each other; the density map is formed from
    the layers afterwards. Three bone layers let neighbouring bones overlap additively.
    """

    def __init__(self, height: int, width: int, mm_to_px: np.ndarray):
        self.height, self.width = height, width
        self.mm_to_px = mm_to_px  # (2, 3) affine, hand mm -> pixels (x right, y down)
        self.px_per_mm = float(math.sqrt(abs(np.linalg.det(mm_to_px[:, :2]))))
        self.bone_layers = [np.zeros((height, width), np.uint8) for _ in range(3)]
        self.medulla_layers = [np.zeros((height, width), np.uint8) for _ in range(3)]
        self.tissue = np.zeros((height, width), np.uint8)

    def _fixed_point(self, points_mm: np.ndarray) -> np.ndarray:
        """(n, 2) hand mm -> (n, 2) int32 pixels with ``_SHIFT`` fractional bits."""
        px = points_mm @ self.mm_to_px[:, :2].T + self.mm_to_px[:, 2]
        return np.round(px * _ONE).astype(np.int32)

    def fill(self, layer: np.ndarray, outline_mm: np.ndarray, value: float) -> None:
        """Fill the polygon ``outline_mm`` (n, 2) on ``layer`` with ``value`` (uint8 level)."""
        cv2.fillPoly(layer, [self._fixed_point(outline_mm)], float(value), _AA, _SHIFT)

    def stroke(self, layer: np.ndarray, points_mm: np.ndarray, value: float,
               width_mm: float) -> None:
        """Draw the open polyline ``points_mm`` (n, 2), ``width_mm`` thick (>= 1 px)."""
        px = self._fixed_point(points_mm)
        thickness = max(1, int(round(width_mm * self.px_per_mm)))  # px
        cv2.polylines(layer, [px], False, float(value), thickness, _AA, _SHIFT)

    def draw_bone(self, layer: int, outline: np.ndarray, *, origin: np.ndarray,
                  axis: np.ndarray, value: float, medulla: np.ndarray | None = None,
                  medulla_value: float = 0.0) -> None:
        """Draw a shape given in local (along, across) mm of the unit ``axis`` at ``origin``.

        +across is the thumb side of the axis (:func:`_normal`). ``value`` (uint8 level)
        goes to bone layer ``layer``; the optional ``medulla`` outline (same local frame)
        to its medulla layer, whose level is later subtracted.
        """
        normal = _normal(axis)
        world = origin + outline[:, :1] * axis + outline[:, 1:] * normal
        self.fill(self.bone_layers[layer], world, value)
        if medulla is not None and medulla_value > 0:
            medulla_world = origin + medulla[:, :1] * axis + medulla[:, 1:] * normal
            self.fill(self.medulla_layers[layer], medulla_world, medulla_value)

    def bone_levels(self) -> np.ndarray:
        """(height, width) float32: bone minus medulla, summed over the layers (uint8 levels)."""
        levels = np.zeros((self.height, self.width), np.float32)
        for bone, medulla in zip(self.bone_layers, self.medulla_layers):
            levels += cv2.subtract(bone, medulla).astype(np.float32)
        return levels


def _epiphysis_outline(width: float, thickness: float, stage: float,
                       squareness: float) -> np.ndarray:
    """(22, 2) epiphysis outline in local (along, across) mm.

    +along points towards the joint; the origin is on its face towards the metaphysis.
    It starts as a round dot, flattens into a disc as wide as the metaphysis, then
    "caps" it: its rim bends over the metaphysis corners (stage 0.62 -> 1).
    """
    power = 2.0 + (squareness - 2.0) * min(1.0, stage * 1.6)  # round -> mature by 0.625
    outline = _superellipse(width / 2, thickness / 2, power, 22)
    outline = outline[:, ::-1].copy()  # (along, across)
    outline[:, 0] += thickness / 2
    cap = max(0.0, (stage - 0.62) / 0.38)  # 0 -> 1: how far the rim bends over
    if cap > 0:
        rim = np.clip(np.abs(outline[:, 1]) / (width / 2), 0, 1) ** 6  # (22,) 0 centre, 1 rim
        low = outline[:, 0] < thickness / 2  # the metaphysis side
        outline[low, 0] -= cap * 0.45 * thickness * rim[low]
    return outline


def _paint_long_bone(canvas: _Canvas, bone: _LongBone) -> None:
    """Shaft (cortex + medulla) and, once ossified, the epiphysis and growth plate.

    The epiphyseal zone (cartilage in the young) is reserved whatever the maturity; the
    ossified epiphysis sits in it, separated by the growth plate, which narrows before
    fusion and then leaves a dense scar line that fades over about two years.
    """
    proximal_w, waist_w, distal_w = bone.widths  # mm
    epiphysis = bone.epiphysis
    at_base = epiphysis is not None and epiphysis.end == "prox"
    metaphysis_w = proximal_w if at_base else distal_w  # mm, the end the epiphysis caps
    zone = epiphysis.thickness * metaphysis_w + bone.plate_gap if epiphysis else 0.0  # mm
    shaft_len = bone.length - zone  # mm
    shaft_origin = bone.origin + bone.axis * zone if at_base else bone.origin
    metaphysis_cap = -0.04 * metaphysis_w  # mm: a slightly concave face to the plate
    if epiphysis is None:
        caps = (0.12 * proximal_w, bone.cap_free * distal_w)
    elif at_base:
        caps = (metaphysis_cap, bone.cap_free * distal_w)
    else:
        caps = (0.12 * proximal_w, metaphysis_cap)
    outline = _tube_outline(shaft_len, widths=bone.widths, power=bone.power, caps=caps)
    if bone.tilt:
        # the distal radius slants: its styloid (thumb side) reaches further
        ramp = np.clip(outline[:, 0] / shaft_len, 0, 1) ** 8
        outline[:, 0] += bone.tilt * outline[:, 1] * ramp
    lumen = 1.0 - 2.0 * bone.cortex  # medulla width / bone width
    medulla_widths = (proximal_w * lumen * 0.9, waist_w * lumen, distal_w * lumen * 0.9)  # mm
    medulla = _tube_outline(shaft_len * 0.8, widths=medulla_widths, power=bone.power,
                            caps=(0.0, 0.0), samples=7)
    medulla[:, 0] += shaft_len * 0.1
    value = _BONE_VALUE * bone.density  # uint8 level
    canvas.draw_bone(bone.layer, outline, origin=shaft_origin, axis=bone.axis, value=value,
                     medulla=medulla, medulla_value=value * _MEDULLA)

    if epiphysis is None or not epiphysis.state.present:
        return
    state = epiphysis.state
    stage = state.stage
    grow = min(1.0, stage / 0.6)  # 0 -> 1: dot to full size over 60% of the stage
    epi_w = metaphysis_w * (0.2 + (epiphysis.width - 0.2) * grow**0.8)  # mm
    epi_t = min(epi_w, epiphysis.thickness * metaphysis_w * (0.35 + 0.65 * grow))  # mm
    if state.fused:  # the plate is bone: a slight overlap
        gap = -0.1 * bone.plate_gap
    elif stage > 0.8:  # the plate narrows before fusion
        gap = bone.plate_gap * (1.0 - stage) / 0.2
    else:  # a small centre floats in the middle of its cartilage
        gap = (bone.plate_gap
               + (1.0 - min(1.0, stage / 0.5)) * 0.5 * max(0.0, zone - epi_t - bone.plate_gap))
    shape = _epiphysis_outline(epi_w, epi_t, stage, epiphysis.squareness)
    if at_base:  # face: (2,) mm, middle of the epiphysis face towards the shaft
        face, sign = shaft_origin - bone.axis * gap, -1.0
    else:
        face, sign = shaft_origin + bone.axis * (shaft_len + gap), 1.0
    shape[:, 0] *= sign
    if bone.tilt:
        shape[:, 0] += bone.tilt * shape[:, 1] * (1.0 + 0.8 * shape[:, 1] / max(epi_w, 1e-3))
    epi_medulla = np.stack([shape[:, 0] * 0.6 + sign * epi_t * 0.2, shape[:, 1] * 0.72], 1)
    canvas.draw_bone(bone.layer, shape, origin=face, axis=bone.axis, value=value * 0.92,
                     medulla=epi_medulla, medulla_value=value * 0.8 * _MEDULLA)
    if state.fused and state.months_since_fusion < 36:
        # physeal scar: a thin dense line where the plate was (lift the medulla there)
        fade = math.exp(-state.months_since_fusion / 14.0)
        normal = _normal(bone.axis)
        half = 0.42 * metaphysis_w  # mm
        scar = np.stack([face - normal * half, face + normal * half])
        canvas.stroke(canvas.medulla_layers[bone.layer], scar,
                      value * _MEDULLA * (1.0 - 0.9 * fade), 0.5)


def _paint_hand(canvas: _Canvas, hand: _Hand) -> None:
    """Soft tissue, long bones, then carpals and sesamoid, in the hand's list order."""
    # soft tissue: thicker parts drawn brighter (fingers < palm < forearm)
    for line, width_mm in hand.fingers:
        canvas.stroke(canvas.tissue, line, 190, width_mm)
    canvas.fill(canvas.tissue, hand.palm, 235)
    canvas.fill(canvas.tissue, hand.arm, 240)
    for bone in hand.bones:
        _paint_long_bone(canvas, bone)
    for blob in hand.blobs:
        canvas.fill(canvas.bone_layers[blob.layer], blob.outline, _BONE_VALUE * blob.density)
        if blob.medulla is not None:
            canvas.fill(canvas.medulla_layers[blob.layer], blob.medulla,
                        _BONE_VALUE * blob.density * 0.8 * _MEDULLA)
