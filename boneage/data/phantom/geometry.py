"""Plane geometry in hand mm: rotations, axis directions and their normals, and the
outlines bones are built from (superellipses for carpals and epiphyses, flared tubes for
the shafts of the long bones).
"""

from __future__ import annotations

import math

import numpy as np


def _rotation(deg: float) -> np.ndarray:
    """(2, 2) counter-clockwise rotation by ``deg`` degrees."""
    rad = math.radians(deg)
    return np.array([[math.cos(rad), -math.sin(rad)], [math.sin(rad), math.cos(rad)]])


def _unit(deg: float) -> np.ndarray:
    """(2,) unit axis ``deg`` degrees from +y, positive towards +x (the thumb)."""
    rad = math.radians(deg)
    return np.array([math.sin(rad), math.cos(rad)])


def _normal(axis: np.ndarray) -> np.ndarray:
    """Unit normal of ``axis`` pointing to the thumb side when ``axis`` points up."""
    return np.array([axis[1], -axis[0]])


def _superellipse(radius_x: float, radius_y: float, power: float,
                  points: int = 20) -> np.ndarray:
    """(points, 2) outline |x/rx|^p + |y/ry|^p = 1, centred on the origin.

    ``power`` 2 is an ellipse; larger is squarer.
    """
    angle = np.linspace(0.0, 2 * np.pi, points, endpoint=False)
    cos, sin = np.cos(angle), np.sin(angle)
    exponent = 2.0 / power
    return np.stack([radius_x * np.sign(cos) * np.abs(cos) ** exponent,
                     radius_y * np.sign(sin) * np.abs(sin) ** exponent], 1)


def _tube_outline(length: float, *, widths: tuple[float, float, float], power: float,
                  caps: tuple[float, float], samples: int = 9) -> np.ndarray:
    """(2 * samples + 10, 2) outline of a tubular bone in local (along, across) mm.

    The shaft runs from along = 0 (proximal) to ``length`` (distal), centred on
    across = 0. ``widths`` (proximal end, waist, distal end; mm): the width flares from
    the waist to the ends (metaphyses, heads) as ``s ** power`` of the fraction ``s`` of
    the length. ``caps`` (proximal, distal; mm): the ends are half-ellipses bulging out
    by that much (negative: concave); a bulging end stays within ``length``.
    """
    proximal_w, waist_w, distal_w = widths
    proximal_cap, distal_cap = caps
    s = np.linspace(0.0, 1.0, samples)  # (samples,) fraction of the length
    width = (waist_w + (proximal_w - waist_w) * (1.0 - s) ** power
             + (distal_w - waist_w) * s**power)  # (samples,) mm
    start, end = max(proximal_cap, 0.0), length - max(distal_cap, 0.0)  # mm, along
    along = start + s * (end - start)  # (samples,) mm
    cap_angle = np.linspace(np.pi / 2, -np.pi / 2, 7)[1:-1]  # (5,) rad, ends excluded
    thumb_side = np.stack([along, width / 2], 1)
    distal_end = np.stack([end + distal_cap * np.cos(cap_angle),
                           distal_w / 2 * np.sin(cap_angle)], 1)
    other_side = np.stack([along[::-1], -width[::-1] / 2], 1)
    proximal_end = np.stack([start - proximal_cap * np.cos(cap_angle),
                             -proximal_w / 2 * np.sin(cap_angle)], 1)
    return np.concatenate([thumb_side, distal_end, other_side, proximal_end])
