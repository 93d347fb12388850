"""Procedural street scenes: the synthetic dataset's default generator (``generator="street"``).

A pinhole camera looks down a street: a horizon and a vanishing point drawn per image, a road
with lane markings between two sidewalks, building facades on the sides as perspective planes
(windows on a grid that shrinks with depth, blocks of different heights, gaps), trees, grass,
a sky with clouds, and the "things" standing on the ground at a random depth: cars on the
road, people on the sidewalks (sometimes crossing), poles along the kerb. An object's size
follows its depth (its base row), so near objects are large and far ones small; objects are
drawn far to near (occlusion). Illumination varies (exposure, colour cast, cast shadows, a
vignette) and sensor noise and a slight blur are added.

The classes follow Cityscapes' names and colours, and differ the way real classes do: by
colour and texture (sky, vegetation, road), by position and context (road below the horizon
between the sidewalks, sky above the buildings), by shape (cars, people, thin poles), with
large "stuff" regions and small "things" (a realistic imbalance: road, building and sky take
most pixels; people and poles a few percent).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

CLASSES = ("road", "sidewalk", "building", "vegetation", "sky", "pole", "person", "car")
# Cityscapes' colours of the same classes.
PALETTE = (
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (107, 142, 35),
    (70, 130, 180),
    (153, 153, 153),
    (220, 20, 60),
    (0, 0, 142),
)
ROAD, SIDEWALK, BUILDING, VEGETATION, SKY, POLE, PERSON, CAR = range(len(CLASSES))

# Real sizes in units of the camera height above the road (1.5 m): an object whose base is
# on image row y_g has a screen height of (its height / camera height) * (y_g - horizon).
CAR_HEIGHT, CAR_WIDTH = 1.0, 1.2
PERSON_HEIGHT = 1.15
POLE_HEIGHT, POLE_WIDTH = 3.2, 0.16


def _noise_field(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth noise in about [-1, 1]: a random ``cells``-wide grid upsampled bilinearly."""
    gh = max(2, int(round(cells * h / max(h, w))) + 1)
    gw = max(2, int(round(cells * w / max(h, w))) + 1)
    grid = rng.normal(0, 1, (gh, gw)).astype(np.float32)
    return np.asarray(Image.fromarray(grid).resize((w, h), Image.Resampling.BILINEAR))


class _Canvas:
    """An image and its label map, painted in order (later paint occludes earlier)."""

    def __init__(self, h: int, w: int):
        self.h, self.w = h, w
        self.img = np.zeros((h, w, 3), np.float32)
        self.label = np.zeros((h, w), np.uint8)

    def paint(self, mask: np.ndarray, colour, cls: int) -> None:
        colour = np.asarray(colour, np.float32)
        if colour.ndim == 1:
            self.img[mask] = colour
        else:
            self.img[mask] = colour[mask]
        self.label[mask] = cls


def render(*, seed: int, split: str, index: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Draws one street scene.

    Arguments:
      seed: dataset seed.
      split: ``"train"`` or ``"val"`` (different random streams).
      index: example index in its split.
      size: ``(h, w)``.

    Returns:
      ``(image uint8 (h, w, 3), label uint8 (h, w))``, labels indexing :data:`CLASSES`.
    """
    rng = np.random.default_rng([int(seed), {"train": 10, "val": 11}.get(split, 12), int(index)])
    scene = _Scene(rng, *size)
    # The layers back to front; each draws from one random stream, in this order.
    scene.sky()
    scene.skyline()
    scene.ground()
    scene.facades()
    scene.things()
    return scene.photograph()


class _Scene:
    """One scene being drawn: its random stream, pixel grids, camera and canvas.

    Camera: ``hor`` is the horizon row and ``vx`` the vanishing column; below the horizon,
    ``below`` is the screen height of one camera height at that row (0 at the horizon) and
    ``dx`` the column offset from the vanishing point. ``k_road`` / ``k_walk`` (set by
    :meth:`ground`) are the road's half-width and the sidewalks' outer edge per row below the
    horizon."""

    def __init__(self, rng: np.random.Generator, h: int, w: int):
        self.rng, self.h, self.w = rng, h, w
        self.yy, self.xx = np.mgrid[0:h, 0:w].astype(np.float32)
        self.c = _Canvas(h, w)
        self.hor = h * rng.uniform(0.36, 0.54)
        self.vx = w * rng.uniform(0.3, 0.7)
        self.below = np.maximum(self.yy - self.hor, 0.0)
        self.dx = self.xx - self.vx

    def sky(self) -> None:
        """A vertical gradient (clear blue or overcast grey) with soft clouds."""
        rng, h, w = self.rng, self.h, self.w
        overcast = rng.random() < 0.3
        top = np.array([150, 160, 170] if overcast else [50, 110, 200], np.float32) + rng.normal(0, 12, 3)
        low = np.array([200, 205, 210] if overcast else [170, 200, 235], np.float32) + rng.normal(0, 10, 3)
        t = np.clip(self.yy / max(self.hor, 1.0), 0, 1)[..., None]
        sky = top * (1 - t) + low * t
        clouds = np.clip(_noise_field(rng, h, w, 6) * 0.8 + rng.uniform(-0.6, 0.2), 0, 1)[..., None]
        sky = sky * (1 - 0.8 * clouds) + 235 * 0.8 * clouds
        self.c.paint(np.ones((h, w), bool), sky, SKY)

    def skyline(self) -> None:
        """Far blocks at the horizon, of random height and grey-brown colour."""
        rng, xx, yy, hor = self.rng, self.xx, self.yy, self.hor
        x = 0.0
        while x < self.w:
            bw = self.w * rng.uniform(0.04, 0.14)
            if rng.random() < 0.75:
                bh = self.h * rng.uniform(0.03, 0.16)
                m = (xx >= x) & (xx < x + bw) & (yy >= hor - bh) & (yy <= hor + 1)
                self.c.paint(m, rng.uniform(90, 150) + rng.normal(0, 8, 3), BUILDING)
            x += bw

    def ground(self) -> None:
        """Grass everywhere below the horizon, then the sidewalks and the road on top."""
        rng, h, w, below, dx = self.rng, self.h, self.w, self.below, self.dx
        self.k_road = k_road = rng.uniform(0.9, 2.2)
        self.k_walk = k_walk = k_road * rng.uniform(1.5, 2.2)
        ground = self.yy >= self.hor
        grass = np.array([70, 120, 40], np.float32) + rng.normal(0, 10, 3)
        grass_tex = grass * (1 + 0.25 * _noise_field(rng, h, w, 24)[..., None] + 0.12 * rng.normal(0, 1, (h, w, 1)))
        self.c.paint(ground, grass_tex, VEGETATION)

        walk = ground & (np.abs(dx) <= k_walk * below)
        walk_col = np.array([175, 160, 165], np.float32) + rng.normal(0, 12, 3)
        # Paving slabs in perspective: joints at equal depth steps and along lines to the vanishing point.
        depth = 1.0 / np.maximum(below, 1e-3)
        joints = (np.abs(((depth * h * 0.6) % 1.0) - 0.5) > 0.42) | (
            np.abs(((dx / np.maximum(below, 1e-3)) * 3.0 % 1.0) - 0.5) > 0.45
        )
        self.c.paint(walk, walk_col * (1 - 0.18 * joints[..., None]), SIDEWALK)

        self.road = road = ground & (np.abs(dx) <= k_road * below)
        road_col = rng.uniform(65, 110) + rng.normal(0, 4, 3)
        road_tex = road_col * (1 + 0.08 * _noise_field(rng, h, w, 32)[..., None] + 0.06 * rng.normal(0, 1, (h, w, 1)))
        # Lane markings: a dashed centre line, solid edge lines (painted on the road: still road).
        u = dx / np.maximum(below, 1e-3)  # lateral road coordinate (camera heights)
        dash = ((depth * h * rng.uniform(0.15, 0.3)) % 1.0) < 0.5
        centre = rng.uniform(-0.2, 0.2) * k_road
        marks = (np.abs(u - centre) < 0.04) & dash
        marks |= np.abs(np.abs(u) - 0.93 * k_road) < 0.03
        self.c.paint(road, np.where(marks[..., None], 225.0, road_tex), ROAD)

    def facades(self) -> None:
        """Building facades on each side: vertical planes along the street beyond the sidewalks,
        cut into blocks by depth with their own height and colour, windows on a perspective grid."""
        rng, dx, k_walk = self.rng, self.dx, self.k_walk
        for side in (-1, 1):
            if rng.random() < 0.2:
                continue  # an open side: grass and trees only
            lateral = np.where(side * dx > 0, np.abs(dx), np.inf)
            # Facade plane at lateral distance k_walk (in camera heights per unit depth): a pixel
            # is on it when |dx| >= k_walk * below; its depth coordinate is k_walk / |dx|.
            on_plane = (side * dx > 0) & (np.abs(dx) >= k_walk * self.below - 0.5)
            zcoord = k_walk / np.maximum(lateral, 1e-3)  # 1 / distance along the street
            height = (self.hor - self.yy) / np.maximum(lateral, 1e-3) * k_walk + 1.0  # camera heights above ground
            edges = np.sort(rng.uniform(0.0, 1.0, int(rng.integers(2, 6))))
            block = np.searchsorted(edges, np.clip(zcoord * rng.uniform(0.6, 1.2), 0, 0.999))
            tops = rng.uniform(3.0, 14.0, len(edges) + 1)
            tops[rng.random(len(tops)) < 0.15] = 0.0  # gaps between buildings
            colours = rng.uniform(70, 200, (len(edges) + 1, 1)) * rng.uniform(0.8, 1.15, (len(edges) + 1, 3))
            facade = on_plane & (height < tops[block]) & (height >= 0.0)
            col = colours[block]
            spacing_z, spacing_h = rng.uniform(0.08, 0.16), rng.uniform(1.4, 2.2)
            wz = ((1.0 / np.maximum(zcoord, 1e-3)) / (spacing_z * 40)) % 1.0
            wh = (height / spacing_h) % 1.0
            window = (wz > 0.3) & (wz < 0.75) & (wh > 0.35) & (wh < 0.8) & (height > 1.0) & (height < tops[block] - 0.5)
            glass = np.array([60, 75, 95], np.float32) * rng.uniform(0.6, 1.3)
            self.c.paint(facade, np.where(window[..., None], glass, col), BUILDING)

    def things(self) -> None:
        """Trees and poles along the kerb, people on the sidewalks, cars on the road, each at a
        random base row (its depth), drawn far to near."""
        rng, hor = self.rng, self.hor
        span = self.h - hor
        things = []
        # kind, how many (integers' range), base row between the horizon (0) and the bottom (1)
        kinds = (
            ("tree", (1, 5), 0.05, 0.7),
            ("pole", (1, 4), 0.3, 1.0),
            ("person", (1, 6), 0.45, 1.0),
            ("car", (0, 5), 0.06, 0.75),
        )
        for kind, count, lo, hi in kinds:
            for _ in range(int(rng.integers(*count))):
                things.append((kind, hor + span * rng.uniform(lo, hi)))
        things.sort(key=lambda item: item[1])
        draw = {"tree": self.tree, "pole": self.pole, "person": self.person, "car": self.car}
        for kind, base in things:
            draw[kind](base, base - hor)  # s: the screen height of one camera height at this depth

    def tree(self, base: float, s: float) -> None:
        rng, xx, yy = self.rng, self.xx, self.yy
        side = rng.choice([-1, 1])
        cx = self.vx + side * rng.uniform(1.0, 1.3) * self.k_walk * s
        r = s * rng.uniform(0.7, 1.4)
        cy = base - s * rng.uniform(1.8, 2.6)
        wobble = 1 + 0.25 * _noise_field(rng, self.h, self.w, 10)
        crown = ((xx - cx) ** 2 + ((yy - cy) * 1.2) ** 2) <= (r * wobble) ** 2
        trunk = (np.abs(xx - cx) <= max(0.07 * s, 0.6)) & (yy >= cy) & (yy <= base)
        leaf = np.array([50, 100, 30], np.float32) + rng.normal(0, 12, 3)
        tex = leaf * (0.7 + 0.6 * (rng.random((self.h, self.w, 1)) < 0.5))
        self.c.paint(trunk, np.array([90, 65, 40], np.float32), VEGETATION)
        self.c.paint(crown, tex, VEGETATION)

    def pole(self, base: float, s: float) -> None:
        rng, xx, yy = self.rng, self.xx, self.yy
        side = rng.choice([-1, 1])
        cx = self.vx + side * rng.uniform(1.02, 1.12) * self.k_road * s
        # At least ~4 pixels wide at 128x128: thin, but a pixel of the networks'
        # 1/4-resolution output, so that they can resolve it at all.
        half = max(POLE_WIDTH * s / 2, 2.0 * self.h / 128)
        top = base - POLE_HEIGHT * s
        m = (np.abs(xx - cx) <= half) & (yy <= base) & (yy >= top)
        arm = (yy >= top) & (yy <= top + 2 * half) & ((xx - cx) * -side >= 0) & (np.abs(xx - cx) <= 0.6 * s)
        grey = rng.uniform(100, 170)
        shade = grey * (1 + 0.25 * np.clip((xx - cx) / max(half, 1e-3), -1, 1))[..., None]
        self.c.paint(m | arm, np.broadcast_to(shade, (self.h, self.w, 3)), POLE)

    def person(self, base: float, s: float) -> None:
        rng, xx, yy, k_road = self.rng, self.xx, self.yy, self.k_road
        crossing = rng.random() < 0.2
        side = rng.choice([-1, 1])
        if crossing:
            lane = rng.uniform(-0.9, 0.9) * k_road
        else:
            lane = side * rng.uniform(1.05, 0.97 * self.k_walk / k_road) * k_road
        cx = self.vx + lane * s
        H = PERSON_HEIGHT * s * rng.uniform(0.85, 1.1)
        top_y = base - H
        head_r = 0.075 * H
        legs_h = 0.47 * H
        body_w = 0.18 * H
        shirt, trousers = rng.uniform(20, 230, 3), rng.uniform(20, 150, 3)
        skin = np.array([225, 180, 150], np.float32) * rng.uniform(0.45, 1.05)
        stride = rng.uniform(0.0, 0.12) * H
        t_leg = np.clip((yy - (base - legs_h)) / max(legs_h, 1e-3), 0, 1)
        left = np.abs(xx - (cx - 0.045 * H - stride * t_leg)) <= 0.045 * H + 0.5
        right = np.abs(xx - (cx + 0.045 * H + stride * t_leg)) <= 0.045 * H + 0.5
        legs = (left | right) & (yy >= base - legs_h) & (yy <= base)
        torso = (
            ((xx - cx) / (body_w / 2 + 0.5)) ** 2 + ((yy - (top_y + 2 * head_r + 0.2 * H)) / (0.2 * H + 0.5)) ** 2
        ) <= 1
        head = (xx - cx) ** 2 + (yy - (top_y + head_r)) ** 2 <= (head_r + 0.5) ** 2
        self.c.paint(legs, trousers, PERSON)
        self.c.paint(torso, shirt, PERSON)
        self.c.paint(head, skin, PERSON)

    def car(self, base: float, s: float) -> None:
        rng, xx, yy = self.rng, self.xx, self.yy
        lane = rng.uniform(-0.75, 0.75) * self.k_road
        cx = self.vx + lane * s
        H, W = CAR_HEIGHT * s * rng.uniform(0.85, 1.15), CAR_WIDTH * s * rng.uniform(0.9, 1.2)
        body_col = rng.choice([rng.uniform(20, 240, 3), np.full(3, rng.uniform(20, 240))])
        # Shadow on the road first (road pixels, darker).
        shadow = (np.abs(xx - cx) <= 0.55 * W) & (yy >= base - 0.06 * H) & (yy <= base + 0.05 * H) & self.road
        self.c.img[shadow] *= 0.45
        body = (np.abs(xx - cx) <= W / 2) & (yy >= base - 0.62 * H) & (yy <= base - 0.1 * H)
        # Cabin: a trapezoid narrowing upwards.
        frac = np.clip((base - 0.62 * H - yy) / max(0.38 * H, 1e-3), 0, 1)
        cabin = (np.abs(xx - cx) <= (0.45 - 0.1 * frac) * W) & (yy >= base - H) & (yy < base - 0.62 * H)
        glass = cabin & (np.abs(xx - cx) <= (0.4 - 0.1 * frac) * W) & (yy >= base - 0.93 * H) & (yy < base - 0.66 * H)
        wheel_r = 0.14 * H
        wheels = np.zeros((self.h, self.w), bool)
        for wxo in (-0.33, 0.33):
            wheels |= (((xx - (cx + wxo * W)) / 1.1) ** 2 + (yy - (base - wheel_r)) ** 2) <= wheel_r**2
        lights = (np.abs(np.abs(xx - cx) - 0.38 * W) <= 0.07 * W) & (np.abs(yy - (base - 0.45 * H)) <= 0.05 * H)
        self.c.paint(body | cabin, body_col, CAR)
        self.c.paint(glass, np.array([40, 50, 65], np.float32) * rng.uniform(0.7, 1.5), CAR)
        self.c.paint(lights & body, np.array([230, 220, 190], np.float32), CAR)
        self.c.paint(wheels, np.full(3, 25.0), CAR)

    def photograph(self) -> tuple[np.ndarray, np.ndarray]:
        """Illumination (a cast shadow over a half-plane, exposure and colour cast, vignette),
        then a slight blur and sensor noise: ``(image uint8, label uint8)``."""
        rng, h, w, xx, yy = self.rng, self.h, self.w, self.xx, self.yy
        img = self.c.img
        if rng.random() < 0.5:
            a = rng.uniform(0, 2 * np.pi)
            off = rng.uniform(-0.3, 0.3) * (h + w)
            shade = ((xx - w / 2) * np.cos(a) + (yy - h / 2) * np.sin(a) > off) & (yy > self.hor)
            img = img * np.where(shade, rng.uniform(0.5, 0.75), 1.0)[..., None]
        img = img * rng.uniform(0.65, 1.3) * (1 + rng.normal(0, 0.06, 3))
        r2 = ((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2
        img = img * (1 - rng.uniform(0.0, 0.6) * r2)[..., None]
        img = np.clip(img, 0, 255).astype(np.uint8)
        blur = rng.uniform(0.0, 0.8) * h / 256
        if blur > 0.2:
            img = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(blur)))
        img = img.astype(np.float32) + rng.normal(0, rng.uniform(2, 8), img.shape)
        return np.clip(img, 0, 255).astype(np.uint8), self.c.label
