"""Drawing birds: the pen strokes the offline stand-in (``standin``) and the drawn pretraining
set (``pretraining``) share, and birds of invented species drawn from their field marks
(``FieldMarks``, ``draw_marked_bird``). Birds are drawn facing right on a CANVAS x CANVAS
transparent image, then placed in a scene by ``standin.draw_scene_with_bird``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw

CANVAS = 512  # birds are drawn facing right on a 512x512 transparent canvas, then placed

Colour = tuple[int, int, int]
Point = tuple[float, float]


# --------------------------------------------------------------------------------------------
# Pen strokes
# --------------------------------------------------------------------------------------------


def jitter(colour: Sequence[int], rng: random.Random, amount: int = 25) -> Colour:
    """``colour`` with each channel moved by up to ``amount``, kept in 0..255."""
    return tuple(int(min(255, max(0, c + rng.randint(-amount, amount)))) for c in colour)


def ellipse(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0, n: int = 36) -> list[Point]:
    """Polygon points of an ellipse rotated by ``angle`` degrees (ImageDraw's ellipses cannot rotate)."""
    a = math.radians(angle)
    ca, sa = math.cos(a), math.sin(a)
    points = []
    for k in range(n):
        t = 2 * math.pi * k / n
        x, y = rx * math.cos(t), ry * math.sin(t)
        points.append((cx + x * ca - y * sa, cy + x * sa + y * ca))
    return points


def circle(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill, outline=None, width: int = 0) -> None:
    """A filled circle of radius ``r`` around (cx, cy)."""
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=outline, width=width)


def new_canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """A transparent CANVAS x CANVAS image to draw one bird on, facing right, and its pen."""
    canvas = Image.new("RGBA", (CANVAS, CANVAS), (0, 0, 0, 0))
    return canvas, ImageDraw.Draw(canvas)


def perch(draw: ImageDraw.ImageDraw, y: float, rng: random.Random) -> None:
    """A tilted branch across the canvas at height ``y``."""
    colour = jitter((95, 70, 45), rng, 25) + (255,)
    tilt = rng.uniform(-30, 30)
    draw.line([(0, y - tilt), (CANVAS, y + tilt)], fill=colour, width=rng.randint(10, 18))


def legs(draw: ImageDraw.ImageDraw, x: float, top: float, bottom: float, colour, width: int = 5) -> None:
    """Two legs with feet, from ``top`` down to ``bottom``."""
    for dx in (-12, 10):
        draw.line([(x + dx, top), (x + dx + 4, bottom)], fill=colour, width=width)
        draw.line([(x + dx + 4, bottom), (x + dx + 20, bottom + 2)], fill=colour, width=width - 1)


# --------------------------------------------------------------------------------------------
# Other species, drawn from their field marks (``pretraining`` draws its species with these)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldMarks:
    """What tells a drawn species apart: the colour of each part and the shape of body, tail,
    crest, bill, face and wing marks (each shape one of the keys of ``FIELD_MARK_SHAPES``)."""

    back: Colour
    belly: Colour
    head: Colour
    wing: Colour
    tail: Colour
    bill: Colour
    mark: Colour  # the colour of the wing marks
    face: Colour  # the colour of the face mark (mask, eye ring, cap, throat)
    crest_colour: Colour
    body: str = "round"
    tail_shape: str = "short"
    crest: str = "none"
    bill_shape: str = "short"
    face_mark: str = "plain"
    wing_mark: str = "none"


#: The shapes each field mark can take.
FIELD_MARK_SHAPES = {
    "body": ("round", "slim", "upright"),
    "tail_shape": ("short", "long", "forked", "fan"),
    "crest": ("none", "spiky", "plume", "tuft"),
    "bill_shape": ("short", "conical", "long", "hooked", "decurved"),
    "face_mark": ("plain", "mask", "eyering", "cap", "throat"),
    "wing_mark": ("none", "bars", "patch", "spots", "dark tip"),
}
#: Per body shape: centre and radii of the body, its tilt range (degrees), where head, tail and legs
#: sit in the body's own frame (units of its radii), the head's radius, the tail's direction
#: (degrees, 180 = straight back) and the bird's size in the frame.
BODY_PLANS = {
    "round": {
        "centre": (255, 285),
        "radii": (92, 66),
        "tilt": (-20, 10),
        "head": (0.8, -0.75),
        "head_radius": 44,
        "tail": (-0.85, 0.15),
        "tail_angle": 165,
        "legs": (0.1, 0.95),
        "scale": (0.55, 0.95),
    },
    "slim": {
        "centre": (250, 290),
        "radii": (128, 44),
        "tilt": (-12, 6),
        "head": (0.88, -0.8),
        "head_radius": 38,
        "tail": (-0.92, 0.0),
        "tail_angle": 175,
        "legs": (0.15, 0.95),
        "scale": (0.6, 1.0),
    },
    "upright": {
        "centre": (250, 300),
        "radii": (64, 106),
        "tilt": (8, 28),
        "head": (0.35, -1.0),
        "head_radius": 50,
        "tail": (-0.25, 0.9),
        "tail_angle": 110,
        "legs": (0.2, 0.97),
        "scale": (0.6, 1.0),
    },
}


def _frame(cx: float, cy: float, rx: float, ry: float, tilt: float) -> Callable[[float, float], Point]:
    """Image coordinates of the point (u, v) of an ellipse's own frame (u along its first radius)."""
    a = math.radians(tilt)
    ca, sa = math.cos(a), math.sin(a)
    return lambda u, v: (cx + u * rx * ca - v * ry * sa, cy + u * rx * sa + v * ry * ca)


def _tail_polygon(base: Point, angle: float, shape: str) -> list[Point]:
    a = math.radians(angle)
    d, n = (math.cos(a), math.sin(a)), (-math.sin(a), math.cos(a))

    def at(along: float, across: float) -> Point:
        return base[0] + along * d[0] + across * n[0], base[1] + along * d[1] + across * n[1]

    if shape == "long":
        return [at(0, 16), at(165, 10), at(170, 0), at(165, -10), at(0, -16)]
    if shape == "forked":
        return [at(0, 18), at(135, 30), at(80, 0), at(135, -30), at(0, -18)]
    if shape == "fan":
        return [at(0, 12), at(80, 52), at(92, 0), at(80, -52), at(0, -12)]
    return [at(0, 22), at(55, 16), at(58, 0), at(55, -16), at(0, -22)]  # short


def _draw_wing_mark(draw: ImageDraw.ImageDraw, wing: Callable[[float, float], Point], shape: str, colour) -> None:
    if shape == "bars":
        for u in (-0.1, 0.25):
            draw.line([wing(u, -0.85), wing(u + 0.08, 0.85)], fill=colour, width=8)
    elif shape == "patch":
        draw.polygon([wing(0.2, -0.6), wing(0.75, -0.45), wing(0.75, 0.45), wing(0.2, 0.6)], fill=colour)
    elif shape == "spots":
        for u, v in ((-0.5, -0.3), (-0.2, 0.3), (0.05, -0.35), (0.3, 0.25), (0.55, -0.2)):
            circle(draw, *wing(u, v), 7, colour)
    elif shape == "dark tip":
        draw.polygon([wing(-0.45, -0.9), wing(-1.0, 0.0), wing(-0.45, 0.9)], fill=colour)


def _draw_crest(
    draw: ImageDraw.ImageDraw,
    head: Callable[[float, float], Point],
    radius: float,
    shape: str,
    colour,
    rng: random.Random,
) -> None:
    raised = rng.uniform(0.5, 1.0)
    if shape == "spiky":
        for k in range(4):
            base = head(-0.35 + 0.2 * k, -0.8)
            a = math.radians(-150 + 14 * k * raised)
            tip = (base[0] + 0.95 * radius * raised * math.cos(a), base[1] + 0.95 * radius * raised * math.sin(a))
            draw.polygon([(base[0] - 9, base[1] + 6), tip, (base[0] + 9, base[1] + 6)], fill=colour)
    elif shape == "plume":
        cx, cy = head(-0.95, -0.95)
        draw.polygon(ellipse(cx, cy, 0.95 * radius, 0.2 * radius, -20 - 25 * raised), fill=colour)
    elif shape == "tuft":
        cx, cy = head(-0.15, -0.9)
        draw.polygon(ellipse(cx, cy, 0.6 * radius, 0.38 * radius * (0.6 + raised), -30), fill=colour)


def _draw_face_mark(
    draw: ImageDraw.ImageDraw, head: Callable[[float, float], Point], radius: float, shape: str, colour
) -> None:
    if shape == "mask":
        draw.polygon([head(-0.95, -0.1), head(0.8, -0.35), head(0.85, 0.1), head(-0.85, 0.35)], fill=colour)
    elif shape == "eyering":
        circle(draw, *head(0.3, -0.1), 0.3 * radius, colour)
    elif shape == "cap":
        hx, hy = head(0, 0)
        draw.pieslice([hx - radius, hy - radius, hx + radius, hy + radius], 190, 350, fill=colour)
    elif shape == "throat":
        draw.polygon(ellipse(*head(0.35, 0.72), 0.5 * radius, 0.32 * radius, 10), fill=colour)


def _bill_polygon(head: Callable[[float, float], Point], shape: str) -> list[Point]:
    """The bill in the head's frame (units of its radius), starting at the front of the head."""
    outlines = {
        "short": [(0.88, -0.18), (1.45, 0.05), (0.88, 0.22)],
        "conical": [(0.85, -0.32), (1.55, 0.05), (0.85, 0.4)],
        "long": [(0.9, -0.12), (2.9, 0.28), (2.85, 0.36), (0.9, 0.16)],
        "hooked": [(0.85, -0.3), (1.55, -0.15), (1.7, 0.45), (1.45, 0.25), (0.9, 0.35)],
        "decurved": [(0.9, -0.14), (1.5, -0.02), (2.05, 0.4), (1.95, 0.45), (1.45, 0.2), (0.9, 0.2)],
    }
    return [head(u, v) for u, v in outlines[shape]]


def draw_marked_bird(marks: FieldMarks, rng: random.Random, flying: bool = False) -> Image.Image:
    """A bird of another species, drawn from its ``FieldMarks`` facing right on the canvas (perched
    or standing, like the stand-in's birds); the colours vary a little from bird to bird."""
    canvas, draw = new_canvas()
    plan = BODY_PLANS[marks.body]

    def paint(colour: Colour, amount: int = 14) -> tuple[int, int, int, int]:
        return jitter(colour, rng, amount) + (255,)

    tilt = rng.uniform(*plan["tilt"])
    body = _frame(*plan["centre"], *plan["radii"], tilt)
    legs_x, legs_top = body(*plan["legs"])
    if rng.random() < 0.65:
        perch(draw, legs_top + 30, rng)
    legs(draw, legs_x, legs_top - 10, legs_top + 30, (70, 62, 58, 255))
    tail_angle = plan["tail_angle"] + tilt + rng.uniform(-12, 12)
    draw.polygon(_tail_polygon(body(*plan["tail"]), tail_angle, marks.tail_shape), fill=paint(marks.tail))
    draw.polygon(ellipse(*plan["centre"], *plan["radii"], tilt), fill=paint(marks.back))
    rx, ry = plan["radii"]
    draw.polygon(ellipse(*body(0.3, 0.42), 0.62 * rx, 0.55 * ry, tilt - 10), fill=paint(marks.belly))
    wing = _frame(*body(-0.15, -0.15), 0.72 * rx, 0.45 * ry, tilt + 5)
    draw.polygon(ellipse(*wing(0, 0), 0.72 * rx, 0.45 * ry, tilt + 5), fill=paint(marks.wing))
    _draw_wing_mark(draw, wing, marks.wing_mark, paint(marks.mark, 10))
    radius = plan["head_radius"]
    hx, hy = body(*plan["head"])
    head = _frame(hx, hy, radius, radius, 0.0)
    _draw_crest(draw, head, radius, marks.crest, paint(marks.crest_colour), rng)
    circle(draw, hx, hy, radius, paint(marks.head))
    _draw_face_mark(draw, head, radius, marks.face_mark, paint(marks.face, 10))
    circle(draw, *head(0.3, -0.1), 0.14 * radius, (8, 8, 8, 255))  # eye
    draw.polygon(_bill_polygon(head, marks.bill_shape), fill=paint(marks.bill, 10))
    return canvas
