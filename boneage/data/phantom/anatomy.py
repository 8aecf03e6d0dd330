"""Adult hand anatomy: the geometry tables that the layout scales to each film.

Adult male values in hand-frame mm (wrist at the origin, +y to the fingers, +x to the
thumb): each ray's metacarpal base, angles, bone lengths and width (``_RAYS``), the width
profiles of the tubular bones (``_TUBE_PROFILES``), each carpal's centre, radii, shape,
density and layer (``_CARPAL_SHAPES``), and the ray/carpal counts and hand length.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class _Ray:
    """Adult male geometry of one ray: a metacarpal and the phalanges of its digit."""

    base: tuple[float, float]  # (x, y) mm, base of the metacarpal
    metacarpal_deg: float      # axis angle from +y, + = towards the thumb
    abduction_deg: float       # extra angle of the digit at full finger spread
    lengths: tuple[float, float, float, float]  # mm: mc, pp, mp, dp (mp 0 for the thumb)
    width: float               # width factor of all its bones


# ray number (1 thumb .. 5 little finger) -> geometry
_RAYS = {
    1: _Ray(base=(25.0, 26.0), metacarpal_deg=36.0, abduction_deg=6.0,
            lengths=(44.0, 31.0, 0.0, 23.0), width=1.12),
    2: _Ray(base=(12.5, 40.0), metacarpal_deg=10.0, abduction_deg=5.0,
            lengths=(67.0, 40.0, 23.0, 17.0), width=1.0),
    3: _Ray(base=(2.0, 41.0), metacarpal_deg=0.0, abduction_deg=0.0,
            lengths=(64.0, 45.0, 28.0, 19.0), width=1.02),
    4: _Ray(base=(-8.5, 39.0), metacarpal_deg=-9.0, abduction_deg=-5.0,
            lengths=(57.0, 42.0, 27.0, 18.0), width=0.95),
    5: _Ray(base=(-18.0, 35.0), metacarpal_deg=-19.0, abduction_deg=-9.0,
            lengths=(51.0, 33.0, 19.0, 16.0), width=0.85),
}


@dataclass(frozen=True)
class _TubeProfile:
    """Adult widths of one kind of tubular bone (before the ray's width factor)."""

    proximal: float  # mm, width of the proximal end
    waist: float     # mm, width of the narrowest part of the shaft
    distal: float    # mm, width of the distal end
    power: float     # how sharply the ends flare out of the waist
    cap: float       # bulge of the end without epiphysis / its width

    def widths(self, scale: float) -> tuple[float, float, float]:
        """(proximal, waist, distal) mm, each times ``scale``."""
        return (self.proximal * scale, self.waist * scale, self.distal * scale)


# bone kind -> profile: "mc1" is the thumb metacarpal, "mc" the others
_TUBE_PROFILES = {
    "mc": _TubeProfile(proximal=11.5, waist=8.6, distal=11.5, power=3.0, cap=0.12),
    "mc1": _TubeProfile(proximal=13.0, waist=9.8, distal=12.6, power=3.0, cap=0.35),
    "pp": _TubeProfile(proximal=12.6, waist=8.3, distal=10.6, power=3.0, cap=0.3),
    "mp": _TubeProfile(proximal=10.6, waist=7.2, distal=9.0, power=3.0, cap=0.3),
    "dp": _TubeProfile(proximal=9.5, waist=4.1, distal=6.0, power=3.0, cap=0.45),
}


@dataclass(frozen=True)
class _CarpalShape:
    """Adult male geometry of one carpal bone: a rotated superellipse."""

    centre: tuple[float, float]  # (x, y) mm
    radii: tuple[float, float]   # (x, y) mm, before rotation
    rotation_deg: float
    squareness: float            # superellipse power of the adult form (2: ellipse)
    density: float               # relative to the film's bone density
    # which of the three bone layers it goes to: neighbours on different layers add up
    # where they overlap, like the packed adult carpus does on a real film
    layer: int


# in the order of the per-carpal jitter draws
_CARPAL_SHAPES = {
    "scaphoid": _CarpalShape(centre=(15.5, 10.5), radii=(11.5, 6.3), rotation_deg=55.0,
                             squareness=2.6, density=0.95, layer=0),
    "lunate": _CarpalShape(centre=(2.0, 9.0), radii=(7.8, 7.2), rotation_deg=0.0,
                           squareness=3.0, density=0.95, layer=1),
    "triquetrum": _CarpalShape(centre=(-11.0, 14.0), radii=(6.8, 5.6), rotation_deg=-30.0,
                               squareness=3.0, density=0.9, layer=0),
    "pisiform": _CarpalShape(centre=(-14.0, 11.0), radii=(4.6, 4.4), rotation_deg=0.0,
                             squareness=2.2, density=0.4, layer=2),
    "trapezium": _CarpalShape(centre=(23.5, 25.5), radii=(8.0, 7.2), rotation_deg=35.0,
                              squareness=3.2, density=0.95, layer=1),
    "trapezoid": _CarpalShape(centre=(13.5, 29.0), radii=(5.6, 6.8), rotation_deg=10.0,
                              squareness=3.4, density=0.95, layer=0),
    "capitate": _CarpalShape(centre=(2.5, 26.5), radii=(7.0, 11.5), rotation_deg=0.0,
                             squareness=3.0, density=1.0, layer=1),
    "hamate": _CarpalShape(centre=(-9.5, 26.0), radii=(7.2, 10.0), rotation_deg=-12.0,
                           squareness=3.0, density=0.95, layer=0),
}

_N_RAY = 5
_N_CARPAL = len(_CARPAL_SHAPES)
_ADULT_LEN_MM = 215.0  # distal radius metaphysis to middle fingertip, adult male layout
