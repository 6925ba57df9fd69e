"""A synthetic stand-in for the Stirling children's drawings (NOT the real data set).

``python -m jigcnn.data.synth --out DIR [--n 338] [--seed 0]`` writes JPEG drawings (about
600x800) of child-like human figures, named in the paper's convention. The labels shape the
picture the way they do in real drawings, as tendencies with noise rather than codes:

* age (skill): tadpole figures and thick wobbly crayon lines for the youngest; body, neck,
  hands, fingers, feet, clothes, hair and face details, thinner steadier lines and smaller
  heads relative to the body as age grows;
* who is drawn: dress or skirt and long hair for female figures, trousers and short hair for
  male ones; adults (woman, man) larger and with adult proportions than children (girl, boy,
  self); self-portraits are a child of the author's sex, sometimes with the name scrawled;
* who drew: colour preferences and decorations (flowers and hearts vs sun, ball and grass);
* individual variation: position, size, tilt, pose, stroke jitter, paper texture, JPEG quality.

Deterministic for a seed (the same seed gives byte-identical files on one machine).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import sys
import time
import warnings

import numpy as np
from PIL import Image, ImageDraw

from jigcnn.atomic import write_bytes_atomic
from jigcnn.data.images import DataError
from jigcnn.errors import UserError
from jigcnn.data.names import format_name

# Age ranges (months) per category, from Scottish school years: a class spans about a year and
# a half of ages across the school year, so neighbouring categories overlap a little.
AGE_RANGE = {"nu": (42, 59), "p1": (58, 72), "p2": (70, 85), "p3": (78, 97)}
CATEGORY_WEIGHTS = {"nu": 0.25, "p1": 0.25, "p2": 0.25, "p3": 0.25}
WHO_WEIGHTS = {"s": 0.44, "w": 0.16, "m": 0.14, "g": 0.13, "b": 0.13}
_WHO_SEX = {"w": "female", "m": "male", "g": "female", "b": "male"}
_ADULT = {"w", "m"}

_COLOURS = {
    "black": (30, 30, 35), "blue": (40, 70, 190), "red": (200, 40, 40), "green": (40, 140, 60),
    "brown": (120, 75, 40), "pink": (230, 110, 170), "purple": (130, 60, 170), "orange": (240, 140, 30),
}
# Tendencies, not rules: girls more often pink/purple/red, boys more often blue/black/green.
_PALETTE_PREF = {
    "girl": {"pink": 3, "purple": 2.5, "red": 2, "black": 1.5, "blue": 1, "brown": 1, "green": 0.7, "orange": 1},
    "boy": {"blue": 3, "black": 2.5, "green": 2, "brown": 1.5, "red": 1.2, "orange": 1, "purple": 0.5, "pink": 0.3},
}


@dataclasses.dataclass(frozen=True)
class DrawingSpec:
    """The labels of one synthetic drawing."""

    age_category: str
    number: int
    who_letter: str  # s, w, m, g, b
    age_months: int
    author: str  # "boy" or "girl"

    @property
    def file_name(self) -> str:
        """The file name in the paper's convention."""
        y, m = divmod(self.age_months, 12)
        return format_name(self.age_category, self.number, self.who_letter, y, m, self.author)

    @property
    def figure_sex(self) -> str:
        """Sex of the drawn figure (a self-portrait draws the author's sex)."""
        return _WHO_SEX.get(self.who_letter, "female" if self.author == "girl" else "male")


def sample_specs(n: int = 338, seed: int = 0) -> list[DrawingSpec]:
    """Labels for ``n`` drawings: categories nursery..p3, ages inside each category's range, both sexes."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng([seed, 0])
    cats = list(CATEGORY_WEIGHTS)
    cat_idx = np.arange(n) % len(cats)  # balanced categories, in shuffled order
    rng.shuffle(cat_idx)
    who = list(WHO_WEIGHTS)
    pw = np.array(list(WHO_WEIGHTS.values()))
    specs, counters = [], {c: 0 for c in cats}
    for k in range(n):
        cat = cats[cat_idx[k]]
        counters[cat] += 1
        lo, hi = AGE_RANGE[cat]
        specs.append(DrawingSpec(
            cat, counters[cat], str(rng.choice(who, p=pw / pw.sum())),
            int(rng.integers(lo, hi + 1)), "girl" if rng.random() < 0.5 else "boy",
        ))
    return specs


# ---------------------------------------------------------------- drawing primitives


class _Pen:
    """Draws polylines through a figure transform with a child's stroke jitter."""

    def __init__(self, draw, rng, width, wobble, angle, pivot):
        self.draw, self.rng, self.width, self.wobble = draw, rng, width, wobble
        self.c, self.s = math.cos(angle), math.sin(angle)
        self.pivot = pivot

    def _tf(self, pts):
        px, py = self.pivot
        p = np.asarray(pts, dtype=np.float64) - (px, py)
        return np.stack([p[:, 0] * self.c - p[:, 1] * self.s + px, p[:, 0] * self.s + p[:, 1] * self.c + py], 1)

    def _jitter(self, pts):
        seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
        t = np.concatenate([[0], np.cumsum(seg)])
        if t[-1] <= 0:
            return pts
        n = max(int(t[-1] / 6), 2)
        u = np.linspace(0, t[-1], n)
        dense = np.stack([np.interp(u, t, pts[:, 0]), np.interp(u, t, pts[:, 1])], 1)
        # Smoothed random walk: a slow wander, not pixel noise.
        walk = np.cumsum(self.rng.normal(0, 1, (n, 2)), axis=0)
        walk -= np.linspace(walk[0], walk[-1], n) * 0.7
        scale = self.wobble / max(np.abs(walk).max(), 1e-6)
        return dense + walk * scale

    def line(self, pts, colour, width=None, fill=None):
        """Stroke a polyline (and fill it as a polygon when ``fill`` is a colour)."""
        pts = self._tf(pts)
        if fill is not None and len(pts) >= 3:
            self.draw.polygon([tuple(p) for p in pts], fill=fill)
        w = max(1, int(round((width or self.width) * self.rng.uniform(0.8, 1.2))))
        self.draw.line([tuple(p) for p in self._jitter(pts)], fill=colour, width=w, joint="curve")

    def ellipse(self, cx, cy, rx, ry, colour, closure=0.0, fill=None, width=None):
        """An ellipse drawn as one stroke; ``closure`` > 0 leaves a gap or an overshoot, as young children do."""
        end = 2 * math.pi * (1 + self.rng.uniform(-closure, closure))
        a = np.linspace(0, end, 40) + self.rng.uniform(0, 2 * math.pi)
        self.line(np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], 1), colour, width, fill)


def _lerp(a, b, t):
    return a + (b - a) * t


def _paper(rng, w, h) -> Image.Image:
    base = np.array([246, 243, 236], np.float32) + rng.normal(0, 4, 3)
    low = np.asarray(Image.fromarray(rng.normal(0, 1, (6, 5)).astype(np.float32), "F").resize((w, h), Image.BILINEAR))
    grain = rng.normal(0, 3.0, (h, w)).astype(np.float32)
    px = base[None, None, :] + (low * 5 + grain)[..., None]
    return Image.fromarray(np.clip(px, 0, 255).astype(np.uint8), "RGB")


def _tint(colour, amount):
    return tuple(int(c + (255 - c) * amount) for c in colour)


# ---------------------------------------------------------------- the figure


def render(spec: DrawingSpec, seed: int = 0, size: tuple[int, int] | None = None) -> Image.Image:
    """Render one drawing (an RGB PIL image about 600x800) for ``spec``; deterministic in (spec, seed)."""
    rng = np.random.default_rng([seed, 1, spec.number, spec.age_months, ord(spec.who_letter),
                                 ord(spec.author[0]), ord(spec.age_category[-1])])
    w, h = size or (int(rng.integers(585, 616)), int(rng.integers(785, 816)))
    img = _paper(rng, w, h)
    draw = ImageDraw.Draw(img)
    # Skill: a child's drawing development, about 3.5 to 8 years, with individual spread.
    skill = float(np.clip((spec.age_months - 42) / 54 + rng.normal(0, 0.12), 0, 1))
    female, adult = spec.figure_sex == "female", spec.who_letter in _ADULT
    pref = _PALETTE_PREF[spec.author]
    names = list(pref)
    p = np.array([pref[c] for c in names])
    colours = [_COLOURS[c] for c in rng.choice(names, size=4, p=p / p.sum())]
    ink = colours[0] if rng.random() < _lerp(0.9, 0.5, skill) else _COLOURS["black"]

    frac = (rng.uniform(0.66, 0.86) if adult else rng.uniform(0.45, 0.66)) * _lerp(1.1, 0.95, skill)
    fh = frac * h
    cx = w / 2 + rng.normal(0, 0.08 * w)
    top = rng.uniform(0.04 * h, max(0.05 * h, h - fh - 0.06 * h))
    tilt = rng.normal(0, _lerp(0.12, 0.05, skill))
    pen = _Pen(draw, rng, _lerp(11, 3.5, skill) * rng.uniform(0.75, 1.3), _lerp(7, 1.2, skill) * rng.uniform(0.6, 1.4),
               tilt, (cx, top + fh / 2))
    closure = _lerp(0.18, 0.02, skill)

    tadpole = rng.random() < np.clip(1.4 - 3.2 * skill, 0, 0.95)
    head_ratio = (rng.uniform(0.4, 0.55) if tadpole else _lerp(0.32, 0.16, skill) * rng.uniform(0.85, 1.15))
    if adult:
        head_ratio *= 0.85
    hr = head_ratio * fh / 2  # head radius
    hy = top + hr
    width_k = rng.uniform(0.8, 1.2)

    # Hair first, so the head outline sits on top of it.
    long_hair = rng.random() < (0.8 if female else 0.12)
    if rng.random() < _lerp(0.35, 0.95, skill):
        _hair(pen, rng, cx, hy, hr, long_hair, colours[1] if rng.random() < skill else ink, skill)
    pen.ellipse(cx, hy, hr * width_k, hr, ink, closure, fill=_tint(colours[3], 0.75) if rng.random() < skill * 0.6 else None)
    _face(pen, rng, cx, hy, hr, ink, skill, female and spec.author == "girl")

    if tadpole:
        _tadpole_limbs(pen, rng, cx, hy, hr, top + fh, ink)
    else:
        _body(pen, rng, spec, cx, hy, hr, top + fh, ink, colours, skill, female, adult)

    if spec.who_letter == "s" and rng.random() < 0.55 * skill:
        _scrawl_name(pen, rng, w, h, top, ink, skill)
    _decorations(pen, rng, spec.author, w, h, colours, skill)
    return img


def _hair(pen, rng, cx, hy, hr, long_hair, colour, skill):
    n = int(_lerp(4, 14, skill) * rng.uniform(0.7, 1.3))
    for i in range(n):
        a = math.pi * (1.1 + 0.8 * i / max(n - 1, 1)) + rng.normal(0, 0.05)
        x0, y0 = cx + hr * math.cos(a), hy + hr * math.sin(a)
        if long_hair:
            side = -1 if math.cos(a) < 0 else 1
            length = hr * rng.uniform(1.4, 2.4)
            pen.line([(x0, y0), (x0 + side * hr * 0.35, y0 + length * 0.5), (x0 + side * hr * 0.45, y0 + length)],
                     colour, pen.width * 0.7)
        else:
            pen.line([(x0, y0), (x0 + math.cos(a) * hr * 0.35, y0 + math.sin(a) * hr * 0.35)], colour, pen.width * 0.7)


def _face(pen, rng, cx, hy, hr, ink, skill, lashes):
    ex, ey = hr * rng.uniform(0.3, 0.45), hy - hr * rng.uniform(0.05, 0.25)
    er = hr * _lerp(0.07, 0.16, skill)
    for sx in (-1, 1):
        if skill > 0.35 and rng.random() < skill:
            pen.ellipse(cx + sx * ex, ey, er * 1.3, er, ink, 0.05, width=pen.width * 0.6)
            pen.draw.ellipse([cx + sx * ex - er * 0.4, ey - er * 0.4, cx + sx * ex + er * 0.4, ey + er * 0.4], fill=ink)
            if lashes and rng.random() < 0.6:
                for k in (-1, 0, 1):
                    pen.line([(cx + sx * ex + k * er, ey - er), (cx + sx * ex + k * er * 1.5, ey - er * 2)], ink, 2)
        else:
            pen.draw.ellipse([cx + sx * ex - er, ey - er, cx + sx * ex + er, ey + er], fill=ink)
    if rng.random() < _lerp(0.1, 0.9, skill):
        pen.line([(cx, hy - hr * 0.05), (cx - hr * 0.08, hy + hr * 0.2), (cx + hr * 0.05, hy + hr * 0.22)], ink, pen.width * 0.6)
    mw, my = hr * rng.uniform(0.25, 0.5), hy + hr * rng.uniform(0.4, 0.6)
    a = np.linspace(0.15 * math.pi, 0.85 * math.pi, 12)
    pen.line(np.stack([cx + mw * np.cos(a), my - mw * 0.4 + mw * 0.5 * np.sin(a)], 1), ink, pen.width * 0.7)
    if skill > 0.7 and rng.random() < 0.5:  # ears
        for sx in (-1, 1):
            pen.ellipse(cx + sx * hr * 1.05, hy, hr * 0.15, hr * 0.25, ink, 0.1, width=pen.width * 0.6)


def _tadpole_limbs(pen, rng, cx, hy, hr, bottom, ink):
    for sx in (-1, 1):  # legs straight out of the head
        x0 = cx + sx * hr * rng.uniform(0.2, 0.5)
        pen.line([(x0, hy + hr * 0.9), (x0 + sx * hr * rng.uniform(0, 0.5), bottom)], ink)
    for sx in (-1, 1):  # arms out of the sides of the head
        a = rng.uniform(-0.6, 0.5)
        length = hr * rng.uniform(0.8, 1.6)
        pen.line([(cx + sx * hr, hy), (cx + sx * (hr + length * math.cos(a)), hy + length * math.sin(a))], ink)


def _body(pen, rng, spec, cx, hy, hr, bottom, ink, colours, skill, female, adult):
    neck = skill > 0.45 and rng.random() < skill
    y_sh = hy + hr * (1.3 if neck else 0.95)
    if neck:
        pen.line([(cx - hr * 0.2, hy + hr * 0.95), (cx - hr * 0.2, y_sh)], ink)
        pen.line([(cx + hr * 0.2, hy + hr * 0.95), (cx + hr * 0.2, y_sh)], ink)
    total = bottom - y_sh
    leg_len = total * (rng.uniform(0.4, 0.5) if adult else rng.uniform(0.35, 0.48))
    y_hip = bottom - leg_len
    shw = hr * _lerp(0.9, 1.25, skill) * (1.2 if adult else 1.0) * rng.uniform(0.85, 1.15)
    cloth = colours[2] if rng.random() < _lerp(0.2, 0.9, skill) else ink
    fill = _tint(cloth, rng.uniform(0.1, 0.5)) if rng.random() < _lerp(0.1, 0.8, skill) else None
    dress = female and rng.random() < 0.8
    if dress:
        hem = y_hip + leg_len * rng.uniform(0.15, 0.45)
        flare = shw * rng.uniform(1.4, 2.1)
        pts = [(cx - shw * 0.7, y_sh), (cx + shw * 0.7, y_sh), (cx + flare, hem), (cx - flare, hem), (cx - shw * 0.7, y_sh)]
        pen.line(pts, cloth, fill=fill)
        if skill > 0.5 and rng.random() < 0.6:  # pattern on the dress
            for _ in range(int(rng.integers(3, 9))):
                px, py = cx + rng.uniform(-0.8, 0.8) * shw, rng.uniform(y_sh + hr * 0.3, hem - hr * 0.2)
                pen.ellipse(px, py, hr * 0.08, hr * 0.08, colours[3], 0.1, width=3)
        leg_top = hem
    else:
        if skill < 0.35 and rng.random() < 0.6:
            pen.ellipse(cx, (y_sh + y_hip) / 2, shw * 0.8, (y_hip - y_sh) / 2, cloth, 0.12, fill=fill)
        else:
            pts = [(cx - shw, y_sh), (cx + shw, y_sh), (cx + shw * 0.9, y_hip), (cx - shw * 0.9, y_hip), (cx - shw, y_sh)]
            pen.line(pts, cloth, fill=fill)
            if skill > 0.55 and rng.random() < 0.6:  # buttons or a belt
                if rng.random() < 0.5:
                    for k in range(3):
                        y = _lerp(y_sh, y_hip, (k + 1) / 4)
                        pen.ellipse(cx, y, hr * 0.06, hr * 0.06, ink, 0.1, width=3)
                else:
                    pen.line([(cx - shw * 0.9, y_hip - hr * 0.2), (cx + shw * 0.9, y_hip - hr * 0.2)], colours[3])
        leg_top = y_hip
    _legs(pen, rng, cx, leg_top, bottom, shw, ink, cloth, skill, trousers=not dress and skill > 0.35)
    _arms(pen, rng, cx, y_sh, shw, total, ink, skill)


def _legs(pen, rng, cx, y0, bottom, shw, ink, cloth, skill, trousers):
    spread = rng.uniform(0.0, 0.6) * shw
    for sx in (-1, 1):
        x0 = cx + sx * shw * rng.uniform(0.3, 0.55)
        x1 = x0 + sx * spread
        if trousers and rng.random() < skill:
            lw = shw * rng.uniform(0.25, 0.38)
            pen.line([(x0 - lw, y0), (x1 - lw, bottom), (x1 + lw, bottom), (x0 + lw, y0)], cloth)
        else:
            pen.line([(x0, y0), (x1, bottom)], ink)
        if rng.random() < _lerp(0.15, 0.95, skill):  # feet
            pen.ellipse(x1 + sx * shw * 0.2, bottom, shw * 0.3, shw * 0.12, ink, 0.1, fill=ink if rng.random() < 0.4 else None)


def _arms(pen, rng, cx, y_sh, shw, total, ink, skill):
    length = total * rng.uniform(0.26, 0.4)
    for sx in (-1, 1):
        a = rng.uniform(-0.5, 0.3) if skill < 0.4 else rng.uniform(0.2, 1.3) if rng.random() < 0.75 else rng.uniform(-1.0, -0.2)
        x0, y0 = cx + sx * shw, y_sh + shw * 0.15
        x1, y1 = x0 + sx * length * math.cos(a), y0 + length * math.sin(a)
        if skill > 0.5 and rng.random() < skill:  # double-line arms
            nx, ny = -math.sin(a) * shw * 0.12, math.cos(a) * shw * 0.12
            pen.line([(x0 - nx, y0 - ny), (x1 - nx, y1 - ny)], ink)
            pen.line([(x0 + nx, y0 + ny), (x1 + nx, y1 + ny)], ink)
        else:
            pen.line([(x0, y0), (x1, y1)], ink)
        if rng.random() < _lerp(0.1, 0.95, skill):  # hands, and fingers for the older
            hand = shw * 0.18
            if skill > 0.45 and rng.random() < skill:
                nf = int(np.clip(round(rng.normal(5, _lerp(1.5, 0.3, skill))), 3, 7))
                for f in range(nf):
                    fa = a + sx * 0 + (f - (nf - 1) / 2) * 0.35
                    pen.line([(x1, y1), (x1 + sx * hand * 1.8 * math.cos(fa), y1 + hand * 1.8 * math.sin(fa))], ink,
                             pen.width * 0.5)
            else:
                pen.ellipse(x1, y1, hand, hand, ink, 0.15)


def _scrawl_name(pen, rng, w, h, top, ink, skill):
    x = rng.uniform(0.08, 0.35) * w
    y = max(0.05 * h, top - rng.uniform(0.03, 0.08) * h)
    for k in range(int(rng.integers(3, 7))):  # letter-like squiggles
        lx = x + k * w * 0.06
        pts = [(lx + rng.uniform(0, 0.04) * w, y + rng.uniform(-0.03, 0.03) * h) for _ in range(int(rng.integers(2, 5)))]
        pen.line(pts, ink, pen.width * 0.6)


def _decorations(pen, rng, author, w, h, colours, skill):
    if rng.random() < 0.45:  # sun, any author
        sx, sy, r = rng.uniform(0.75, 0.92) * w, rng.uniform(0.05, 0.14) * h, rng.uniform(0.04, 0.07) * w
        pen.ellipse(sx, sy, r, r, _COLOURS["orange"], 0.1, fill=_COLOURS["orange"] if rng.random() < 0.5 else None)
        for k in range(int(rng.integers(5, 11))):
            a = 2 * math.pi * k / 8
            pen.line([(sx + 1.3 * r * math.cos(a), sy + 1.3 * r * math.sin(a)),
                      (sx + 2 * r * math.cos(a), sy + 2 * r * math.sin(a))], _COLOURS["orange"], 4)
    girlish = rng.random() < (0.55 if author == "girl" else 0.15)
    boyish = rng.random() < (0.5 if author == "boy" else 0.15)
    if girlish:  # flowers and hearts
        for _ in range(int(rng.integers(1, 4))):
            fx, fy = rng.uniform(0.05, 0.95) * w, rng.uniform(0.8, 0.95) * h
            pen.line([(fx, fy), (fx, fy + 0.05 * h)], _COLOURS["green"], 4)
            for k in range(5):
                a = 2 * math.pi * k / 5
                pen.ellipse(fx + 12 * math.cos(a), fy + 12 * math.sin(a), 9, 9, colours[1], 0.1, width=3)
        if rng.random() < 0.5:
            hx, hy, r = rng.uniform(0.05, 0.3) * w, rng.uniform(0.1, 0.3) * h, 0.03 * w
            pen.line([(hx, hy + r), (hx - r, hy - r * 0.2), (hx - r * 0.5, hy - r), (hx, hy - r * 0.4),
                      (hx + r * 0.5, hy - r), (hx + r, hy - r * 0.2), (hx, hy + r)], _COLOURS["red"], 4, fill=_COLOURS["red"])
    if boyish:  # a ball and a line of grass
        bx, by, r = rng.uniform(0.1, 0.9) * w, rng.uniform(0.85, 0.93) * h, rng.uniform(0.03, 0.05) * w
        pen.ellipse(bx, by, r, r, colours[0], 0.1)
        if rng.random() < 0.6:
            ys = h * rng.uniform(0.95, 0.98)
            xs = np.linspace(0.02 * w, 0.98 * w, 30)
            pen.line(np.stack([xs, ys - np.abs(np.sin(xs / 9)) * 12], 1), _COLOURS["green"], 4)


# ---------------------------------------------------------------- writing the set


SET_RECORD = ".jigcnn_synth.json"  # in the output folder: the drawings this command wrote (so --overwrite can remove them)


def _prepare_out_dir(out_dir: str, overwrite: bool) -> None:
    """Create ``out_dir``, or refuse a non-empty one unless ``overwrite`` (then remove the set recorded there)."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise DataError(f"{out_dir}: exists and is not a folder")
    try:
        os.makedirs(out_dir, exist_ok=True)
        entries = sorted(e for e in os.listdir(out_dir) if not e.startswith("."))
    except OSError as e:
        raise DataError(f"{out_dir}: cannot create or list the output folder ({e.strerror or e})") from None
    if not entries:
        return
    if not overwrite:
        raise DataError(
            f"{out_dir}: output folder is not empty ({len(entries)} entries, e.g. {entries[0]!r}); writing into it "
            "would mix two sets. Use an empty folder, or --overwrite (overwrite=True) to replace the set written there before"
        )
    previous = []
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        with open(os.path.join(out_dir, SET_RECORD), encoding="utf-8") as f:
            previous = [str(x) for x in json.load(f)["files"]]
    for name in previous:  # only files this command wrote; anything else is never deleted
        if os.path.basename(name) == name and not name.startswith("."):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(out_dir, name))


def generate(out_dir: str | os.PathLike, n: int = 338, seed: int = 0, *, overwrite: bool = False) -> list[str]:
    """Write ``n`` synthetic drawings as JPEGs into ``out_dir`` (atomically); return the file names.

    A non-empty ``out_dir`` is refused (DataError) unless ``overwrite``: then the set written there
    before (recorded in ``.jigcnn_synth.json``) is removed first and same-named files are replaced;
    files this function did not write are left alone (and reported by a warning).
    """
    out_dir = os.fspath(out_dir)
    specs = sample_specs(n, seed)
    _prepare_out_dir(out_dir, overwrite)
    names = [spec.file_name for spec in specs]
    try:
        write_bytes_atomic(os.path.join(out_dir, SET_RECORD),
                           json.dumps({"n": n, "seed": seed, "files": names}).encode())
        for spec in specs:
            img = render(spec, seed)
            q = int(np.random.default_rng([seed, 2, spec.number, spec.age_months]).integers(78, 93))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=q)
            write_bytes_atomic(os.path.join(out_dir, spec.file_name), buf.getvalue())
    except OSError as e:
        raise DataError(f"{e.filename or out_dir}: cannot write ({e.strerror or e})") from None
    others = sorted(set(e for e in os.listdir(out_dir) if not e.startswith(".")) - set(names))
    if others:
        warnings.warn(f"{out_dir}: also holds {len(others)} file(s) not written by this set, e.g. {others[0]!r}")
    return names


def main(argv=None) -> int:
    """Command line: ``python -m jigcnn.data.synth --out DIR [--n 338] [--seed 0] [--overwrite]``."""
    ap = argparse.ArgumentParser(prog="python -m jigcnn.data.synth", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output folder (created if missing; must be empty unless --overwrite)")
    ap.add_argument("--n", type=int, default=338, help="number of drawings (default 338, as the real set)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ap.add_argument("--overwrite", action="store_true",
                    help="write into a non-empty folder: remove the set this command wrote there before, replace "
                         "same-named files (files it did not write are kept)")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error(f"--n must be >= 1, got {args.n}")
    t0 = time.perf_counter()
    try:
        names = generate(args.out, args.n, args.seed, overwrite=args.overwrite)
    except UserError as e:  # a user error: one line, no traceback (a bug still shows its traceback)
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(names)} synthetic drawings (a stand-in, not the Stirling set) to {args.out} "
          f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
