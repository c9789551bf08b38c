"""The screen matcher: which registered screen a frame shows (or unknown, or ambiguous).

Owns region checks and the matching order. A screen matches when ALL its validation regions
match; interrupts (the app's and the global ones) are tried before states because a popup
sits on top of a screen. Two matches in one tier are an ambiguity (a registry defect, logged),
never a guess. Within a screen the cheapest checks run first (pixel before OCR, small boxes
before large) and the first failure ends it.

Pixel check, cheap enough for hundreds of screens per frame: the region's box is cut straight
out of the raw frame (a view; the frame is never copied or converted), box-averaged down by
exact halvings and warped onto a small working grid (~3000 px, at least 3 registry px per
working px), gray, lightly blurred. The reference crop went through the same path once, when
the Matcher was built, so an unchanged frame scores 1. The frame is searched +-2 working px
(by row/column projections) for the best alignment. The score is the least of: mean colour
(normalization hides hue and brightness: a red and a grey button with the same label differ);
contrast; normalized cross-correlation (shape); a local difference (each side's pixels
against the other's 3x3 neighbourhood range, worst 3x3 block: a changed word shows, a 2 px
shift does not). A plain reference (a flat bar) is compared by colour and flatness only.
Evaluation stops at the first measure below the threshold, so a failing check reports that
measure. Work on a box (shrinking, alignment profiles, normalized windows) is shared by all
checks of the same box within one identify() call.

OCR check: ``registry.ocr`` reads the box's text (recognition only) and compares it with
``expected_text``; it runs only after every pixel check of its screen passed.

Frames are RGBA (the device's raw screencap) or RGB, of any size: coordinates are in the
app's ``screen_size`` and scaled to the frame.

Measured on synthetic titles (OpenCV-drawn, 2-5 px strokes), each one's own crop as reference:
the same title after JPEG 70, a 2 px shift, a 720x1600 resize, or all three, scores >= 0.93;
other words <= 0.86, one-letter differences included ("Feed"/"Fees") for 50-65 px text.
Smaller text differing by one letter, or glyphs differing by a stroke (a slashed "0" and
"8"), is not told apart under those tolerances: where only such text differs, use OCR.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from protocol.errors import FarmError
from registry.model import GLOBAL_APP, Region, Registry, Screen, ScreenRef
from registry.ocr import TextReader, shared_reader, text_similarity


log = logging.getLogger(__name__)

PIXEL_THRESHOLD = 0.85
# OCR reads of clean UI text come out exact or nearly (one letter in a dozen: ~0.92); titles
# that differ by a word ("Team Devices" / "Team Reviews") score 0.77-0.86.
OCR_THRESHOLD = 0.9

# Working size of a pixel check, in pixels: small enough that a check costs tens of
# microseconds, large enough that a one-letter difference in a header's title still shows
# (measured on synthetic titles: 1024 px could not tell "Feed" from "Fees").
_WORK_AREA = 3072
_MIN_WORK_SIDE = 4
# Shift (registry px) a check must tolerate: screencaps of the same screen differ by 1-2 px
# (status bar height, animations settling, scaling of other resolutions).
_SHIFT_PX = 2.0
# Least registry px per working px: fine enough for 2-3 px strokes; finer would only make
# 1-2 px shifts count for more.
_MIN_FACTOR = 3.0
# Frames are searched this many working px (or _SHIFT_PX, if more) each way for the best
# alignment: whole-frame shifts, and text a phone of another density lays out a little
# narrower (the far end of a line lands 1-2 px off).
_SEARCH = 2
# Gaussian sigma (working px) applied to both sides: evens out the different shrink paths of
# the reference and of frames of other sizes, and sub-pixel shifts of sharp edges.
_BLUR_SIGMA = 0.7
_BLUR = cv2.getGaussianKernel(3, _BLUR_SIGMA, cv2.CV_32F)
# A reference whose gray std (0..255, at working size) is below this is "plain".
_FLAT_STD = 4.0
# Score lost per gray level of mean-colour difference (15 levels -> 0.85) and per level of
# unexpected texture on a plain reference (7.5 levels -> 0.85).
_COLOUR_SCALE = 100.0
_TEXTURE_SCALE = 50.0
# Contrast ratio (std crop / std reference, the smaller over the larger) that still scores 1;
# below it the score falls one for one (ratio 0.45 -> 0.85).
_CONTRAST_SLACK = 0.4
# Local difference (see _PixelCheck.score), in units of the normalized images' std, z
# clipped to +-_LOCAL_CLIP first: thin high-contrast strokes (z 6-7 on a plain background)
# land on another phase of the working grid on a phone of another density and would differ by
# 2 z where nothing differs; the question is "ink or not". Per pixel, _LOCAL_NOISE is free.
# The score falls from 1 at _LOCAL_FREE to 0.85 at 0.2 (synthetic titles: the same text
# <= 0.10 after JPEG, shift and scaling; another word >= 0.3).
_LOCAL_BLOCK = 3
_LOCAL_CLIP = 2.5
_LOCAL_NOISE = 0.5
_LOCAL_FREE = 0.05
_LOCAL_SCALE = 1.0
_K3 = np.ones((3, 3), np.uint8)


def load_image(path: str | Path) -> np.ndarray:
    """The image at ``path`` (PNG, JPEG, anything OpenCV reads) as RGBA uint8 HxWx4."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise FarmError(f"{path}: cannot read image: {e.strerror or e}") from e
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise FarmError(f"{path}: not a readable image (PNG/JPEG expected)")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise FarmError(f"{path}: unsupported image sample type {img.dtype}")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGBA)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGBA)


@dataclass(frozen=True)
class RegionScore:
    """One region check's outcome (``kind`` "pixel" or "ocr"; ``text`` is what OCR read)."""

    screen: ScreenRef
    region: str
    kind: str
    score: float
    threshold: float
    passed: bool
    text: str | None = None


@dataclass(frozen=True)
class ScreenMatch:
    """What a frame shows: ``ref``, or None for unknown; ``ambiguous`` lists the screens that
    matched together in one tier (then ``ref`` is None). ``scores`` (only with explain=True)
    holds every region check that ran, in order: a screen's checks stop at its first failure,
    and states are not checked when exactly one interrupt matched."""

    ref: ScreenRef | None
    ambiguous: tuple[ScreenRef, ...] = ()
    scores: tuple[RegionScore, ...] = ()
    elapsed_ms: float = 0.0

    @property
    def label(self) -> str:
        return self.ref.label() if self.ref is not None else "unknown"


@dataclass(frozen=True)
class _Plan:
    """How to bring one box of a frame of one size to working size (computed once per size).

    The box is cut on integer pixels with sides a multiple of 2**halvings, halved that many
    times (exact 2x: OpenCV's fast box-average path, ~0.2 ns per source pixel; a general
    INTER_AREA costs 20x more), then mapped onto the working grid with one affine warp that
    carries the exact fractional position and scale, so frames of any size line up.
    """

    key: tuple             # identity of the result within one identify() call
    src: tuple[int, int, int, int]  # x1, y1, x2, y2 cut from the frame
    halvings: int
    warp: np.ndarray       # 2x3 inverse map: working px -> halved-source px
    size: tuple[int, int]  # working (w, h), search margins included
    margin: tuple[int, int]  # left, top margin (working px) before the region itself
    inner: tuple[int, int]   # working (w, h) of the region itself
    stats: tuple[int, int, int, int]  # region minus a shift-wide border, in halved px


def _axis(lo: float, hi: float, limit: int, step: int) -> tuple[int, int]:
    """An integer span covering [lo, hi) inside [0, limit) whose length is a multiple of step."""
    a = max(0, math.floor(lo))
    n = max(1, math.ceil((min(float(limit), hi) - a) / step))
    if a + n * step > limit:
        a = max(0, limit - n * step)
        n = min(n, (limit - a) // step)
    return a, a + max(1, n) * step


def _plan(fw: int, fh: int, rect: tuple[float, float, float, float],
          region: tuple[float, float, float, float], inset: tuple[float, float],
          size: tuple[int, int], margin: tuple[int, int], inner: tuple[int, int]) -> _Plan:
    """The _Plan for working ``size`` of ``rect`` (frame px, floats; search margin included).
    ``region`` is the box without margin, ``inset`` the border (x, y) its colour stats skip."""
    x1, y1, x2, y2 = rect
    ow, oh = size
    ax, ay = (x2 - x1) / ow, (y2 - y1) / oh  # frame px per working px
    factor = min(ax, ay)
    halvings = max(0, math.floor(math.log2(factor))) if factor >= 2.0 else 0
    s = 1 << halvings
    sx1, sx2 = _axis(x1, x2, fw, s)
    sy1, sy2 = _axis(y1, y2, fh, s)
    warp = np.array([[ax / s, 0.0, ((x1 - sx1) + 0.5 * ax) / s - 0.5],
                     [0.0, ay / s, ((y1 - sy1) + 0.5 * ay) / s - 0.5]], np.float64)
    lw, lh = (sx2 - sx1) // s, (sy2 - sy1) // s
    rx1, ry1, rx2, ry2 = region
    cx1 = min(lw - 1, max(0, math.ceil((rx1 + inset[0] - sx1) / s)))
    cy1 = min(lh - 1, max(0, math.ceil((ry1 + inset[1] - sy1) / s)))
    cx2 = max(cx1 + 1, min(lw, math.floor((rx2 - inset[0] - sx1) / s)))
    cy2 = max(cy1 + 1, min(lh, math.floor((ry2 - inset[1] - sy1) / s)))
    key = (sx1, sy1, sx2, sy2, halvings, size, tuple(warp.ravel().round(6)), (cx1, cy1, cx2, cy2))
    return _Plan(key, (sx1, sy1, sx2, sy2), halvings, warp, size, margin, inner,
                 (cx1, cy1, cx2, cy2))


class _Work:
    """A frame box brought to working size, and what checks derive from it, each computed on
    first use and shared by every check of the same box within one identify() call.

    Colour statistics come first and cheaply (from the halved box); the working gray image
    only when a check gets past colour (plain references never need it).
    """

    __slots__ = ("_img", "_plan", "mean_rgb", "max_std", "_gray", "_cols", "_rows", "_windows")

    def __init__(self, image: np.ndarray, plan: _Plan) -> None:
        x1, y1, x2, y2 = plan.src
        img = image[y1:y2, x1:x2]
        for _ in range(plan.halvings):
            img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2),
                             interpolation=cv2.INTER_AREA)
        cx1, cy1, cx2, cy2 = plan.stats
        # All channels, alpha included: a channel-sliced view makes OpenCV copy (~15 us).
        mean, std = cv2.meanStdDev(img[cy1:cy2, cx1:cx2])
        self.mean_rgb = (float(mean[0, 0]), float(mean[1, 0]), float(mean[2, 0]))
        self.max_std = float(max(std[0, 0], std[1, 0], std[2, 0]))
        self._img = img
        self._plan = plan
        self._gray: np.ndarray | None = None
        self._cols: tuple[np.ndarray, np.ndarray] | None = None
        self._rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._windows: dict[tuple[int, int], _Window | None] = {}

    def gray(self) -> np.ndarray:
        """Float32 grayscale at working size (search margin included), lightly blurred."""
        if self._gray is None:
            img, plan = self._img, self._plan
            g = cv2.cvtColor(img, cv2.COLOR_RGBA2GRAY if img.shape[2] == 4 else cv2.COLOR_RGB2GRAY)
            g = cv2.warpAffine(g, plan.warp, plan.size,
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REPLICATE)
            self._gray = cv2.sepFilter2D(g, cv2.CV_32F, _BLUR, _BLUR)  # blur and to float
        return self._gray

    def cols(self) -> tuple[np.ndarray, np.ndarray]:
        """Column sums over the region's nominal rows (they find the x offset), and
        1 / the norm of each region-wide window of them once centred."""
        if self._cols is None:
            mt, (ww, wh) = self._plan.margin[1], self._plan.inner
            self._cols = _profile(cv2.reduce(self.gray()[mt:mt + wh], 0, cv2.REDUCE_SUM).ravel(), ww)
        return self._cols

    def rows(self, x: int) -> tuple[np.ndarray, np.ndarray]:
        """Row sums over the region's columns when it starts at working x (they find y),
        and 1 / the norms of their windows."""
        rows = self._rows.get(x)
        if rows is None:
            ww, wh = self._plan.inner
            sums = cv2.reduce(self.gray()[:, x:x + ww], 1, cv2.REDUCE_SUM).ravel()
            rows = self._rows[x] = _profile(sums, wh)
        return rows

    def window(self, x: int, y: int, edge: int) -> _Window | None:
        """The region placed at working (x, y), normalized; None when it is plain."""
        key = (x, y)
        if key in self._windows:
            return self._windows[key]
        ww, wh = self._plan.inner
        crop = self.gray()[y + edge:y + wh - edge, x + edge:x + ww - edge]
        mean, std = cv2.meanStdDev(crop)
        sd = float(std[0, 0])
        win = None
        if sd >= 1e-3:
            win = _Window(cv2.addWeighted(crop, 1.0 / sd, crop, 0.0, -float(mean[0, 0]) / sd), sd)
        self._windows[key] = win
        return win


def _clipped_range(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    clipped = cv2.min(cv2.max(z, -_LOCAL_CLIP), _LOCAL_CLIP)
    hi, lo = cv2.dilate(clipped, _K3), cv2.erode(clipped, _K3)
    return clipped, cv2.addWeighted(hi, 0.5, lo, 0.5, 0.0), cv2.addWeighted(hi, 0.5, lo, -0.5, 0.0)


class _Window:
    """The region's working gray at one placement, normalized (zero mean, unit std)."""

    __slots__ = ("z", "flat", "std", "_range")
    _range: tuple[np.ndarray, np.ndarray, np.ndarray] | None

    def __init__(self, z: np.ndarray, std: float) -> None:
        self.z = z
        self.flat = z.ravel()
        self.std = std  # before normalization
        self._range = None

    def range(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """z clipped to +-_LOCAL_CLIP, and the middle and half-width of each of its pixels'
        3x3 neighbourhood range."""
        if self._range is None:
            self._range = _clipped_range(self.z)
        return self._range


class _PixelCheck:
    """One region's reference, precomputed; scores a frame's box against it."""

    kind = "pixel"

    def __init__(self, region: Region, ref_rgba: np.ndarray, screen_size: tuple[int, int],
                 threshold: float) -> None:
        x1, y1, x2, y2 = region.coordinates
        self.box = (x1, y1, x2, y2)
        self.screen_size = screen_size
        self.threshold = threshold
        w, h = x2 - x1, y2 - y1
        self.area = w * h
        # Registry px per working px (unless the box is too thin for _MIN_FACTOR).
        f = max(_MIN_FACTOR, math.sqrt(w * h / _WORK_AREA))
        f = max(1.0, min(f, min(w, h) / _MIN_WORK_SIDE))
        self.ww, self.wh = max(1, round(w / f)), max(1, round(h / f))
        self.fx, self.fy = w / self.ww, h / self.wh  # registry px per working px
        self.margin = max(_SEARCH, math.ceil(_SHIFT_PX / f - 1e-6))
        if ref_rgba.shape[1] != w or ref_rgba.shape[0] != h:
            log.warning("reference for region %s is %dx%d, its box %dx%d; scaled to the box",
                        region.name, ref_rgba.shape[1], ref_rgba.shape[0], w, h)
            ref_rgba = cv2.resize(ref_rgba, (w, h), interpolation=cv2.INTER_AREA)
        self._plans: dict[tuple[int, int], _Plan] = {}
        # The reference goes through the very path a frame of the registry's own size takes
        # (same cut, same halving phase, same warp): such a frame showing exactly the
        # reference scores 1. What lies outside the box is unknown here; the replicated
        # border it gets instead only touches the edge px that shape comparison leaves out.
        plan = self.plan(*screen_size)
        sx1, sy1, sx2, sy2 = plan.src
        padded = cv2.copyMakeBorder(ref_rgba, max(0, y1 - sy1), max(0, sy2 - y2),
                                    max(0, x1 - sx1), max(0, sx2 - x2), cv2.BORDER_REPLICATE)
        ref = _Work(padded, replace(plan, src=(0, 0, padded.shape[1], padded.shape[0])))
        ml, mt = plan.margin
        gray = np.ascontiguousarray(ref.gray()[mt:mt + self.wh, ml:ml + self.ww])
        self.ref_mean = ref.mean_rgb
        self.ref_max_std = ref.max_std
        self.flat = float(gray.std()) < _FLAT_STD
        cols, rows = gray.sum(axis=0), gray.sum(axis=1)
        self.ref_cols, self.ref_rows = cols - cols.mean(), rows - rows.mean()
        # Shape is compared without the outermost working px: there a frame blends in what
        # lies just outside the box (blur, interpolation, shift), the reference cannot.
        self.edge = 1 if min(self.ww, self.wh) >= 5 else 0
        e = self.edge
        inner = np.ascontiguousarray(gray[e:self.wh - e, e:self.ww - e])
        self.ref_std = float(inner.std())
        self.ref_z = (inner - float(inner.mean())) * (1.0 / max(self.ref_std, 1e-3))
        self.ref_z_flat = self.ref_z.ravel()
        self.ref_clipped, self.ref_mid, self.ref_half = _clipped_range(self.ref_z)
        self.block = (min(_LOCAL_BLOCK, self.ref_z.shape[1]),
                      min(_LOCAL_BLOCK, self.ref_z.shape[0]))
        # Identity for sharing results between screens that carry the same region.
        self.key = (screen_size, self.box, round(threshold, 6),
                    hashlib.blake2b(np.ascontiguousarray(ref_rgba).data, digest_size=16).digest())

    def plan(self, fw: int, fh: int) -> _Plan:
        """How this box is cut from a frame of fw x fh (cached per frame size)."""
        plan = self._plans.get((fw, fh))
        if plan is None:
            sw, sh = self.screen_size
            sx, sy = fw / sw, fh / sh
            x1, y1, x2, y2 = self.box
            m = self.margin
            # The search margin exists only where the screen has pixels.
            ml = m if x1 - m * self.fx >= 0 else 0
            mt = m if y1 - m * self.fy >= 0 else 0
            mr = m if x2 + m * self.fx <= sw else 0
            mb = m if y2 + m * self.fy <= sh else 0
            rect = ((x1 - ml * self.fx) * sx, (y1 - mt * self.fy) * sy,
                    (x2 + mr * self.fx) * sx, (y2 + mb * self.fy) * sy)
            region = (x1 * sx, y1 * sy, x2 * sx, y2 * sy)
            plan = _plan(fw, fh, rect, region, (_SHIFT_PX * sx, _SHIFT_PX * sy),
                         (self.ww + ml + mr, self.wh + mt + mb), (ml, mt), (self.ww, self.wh))
            self._plans[(fw, fh)] = plan  # a benign race: every thread computes the same
        return plan

    def _ncc(self, work: _Work, x: int, y: int) -> tuple[_Window | None, float]:
        win = work.window(x, y, self.edge)
        if win is None:
            return None, -1.0
        return win, float(np.dot(win.flat, self.ref_z_flat)) / self.ref_z_flat.shape[0]

    def score(self, work: _Work, plan: _Plan) -> float:
        """Similarity in [0, 1]: the least of shape (NCC), local difference, colour, contrast."""
        colour = 1.0 - max(abs(work.mean_rgb[0] - self.ref_mean[0]),
                           abs(work.mean_rgb[1] - self.ref_mean[1]),
                           abs(work.mean_rgb[2] - self.ref_mean[2])) / _COLOUR_SCALE
        if self.flat:
            texture = 1.0 - max(0.0, work.max_std - self.ref_max_std) / _TEXTURE_SCALE
            return max(0.0, min(colour, texture))
        if colour < self.threshold:
            return max(0.0, colour)  # fails whatever the shape says; spare the rest
        # The same contrast test as below, on the colour statistics already at hand: a crop
        # far flatter or busier than the reference needs no alignment to be ruled out.
        ratio = min(work.max_std, self.ref_max_std) / max(work.max_std, self.ref_max_std, 1e-6)
        if ratio + _CONTRAST_SLACK < self.threshold:
            return max(0.0, ratio + _CONTRAST_SLACK)
        x, y = plan.margin
        if plan.size != plan.inner:
            # Align by projections: column sums find the x offset, row sums the y offset.
            # A fifth of matchTemplate's cost (~50 us at these sizes), and as good for the
            # shifts that occur: whole-frame ones, and text laid out a little narrower on a
            # phone of another density.
            x = _best_offset(work.cols(), self.ref_cols, x)
            y = _best_offset(work.rows(x), self.ref_rows, y)
        win, ncc = self._ncc(work, x, y)
        if win is None:
            return 0.0  # a plain crop where the reference has texture
        if ncc < self.threshold:
            return max(0.0, ncc)
        # Local difference: how far each side's pixels fall outside the other's 3x3
        # neighbourhood range (so a sub-pixel shift costs nothing, a missing stroke a lot),
        # less a noise floor, averaged over small blocks; the worst block counts.
        clipped, mid, half = win.range()
        outside = cv2.max(cv2.subtract(cv2.absdiff(clipped, self.ref_mid), self.ref_half),
                          cv2.subtract(cv2.absdiff(self.ref_clipped, mid), half))
        blocks = cv2.blur(cv2.max(outside, _LOCAL_NOISE), self.block)
        worst = cv2.minMaxLoc(blocks)[1] - _LOCAL_NOISE
        local = 1.0 - max(0.0, worst - _LOCAL_FREE) / _LOCAL_SCALE
        ratio = min(win.std, self.ref_std) / max(win.std, self.ref_std)
        contrast = min(1.0, ratio + _CONTRAST_SLACK)
        return max(0.0, min(ncc, local, colour, contrast))


def _profile(sums: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``sums`` and 1 / the norm of each of its length-``n`` windows once centred."""
    ones = np.ones(n, np.float32)
    s1 = np.correlate(sums, ones, "valid")
    s2 = np.correlate(sums * sums, ones, "valid")
    return sums, 1.0 / np.sqrt(np.maximum(s2 - s1 * s1 * (1.0 / n), 1e-6))


def _best_offset(profile: tuple[np.ndarray, np.ndarray], ref: np.ndarray, nominal: int) -> int:
    """Where ``ref`` (zero-mean) sits in ``profile``: the offset of the highest normalized
    correlation; ``nominal`` when the reference has no profile to align by."""
    sums, inv_norms = profile
    corr = np.correlate(sums, ref, "valid") * inv_norms
    best = int(corr.argmax())
    return nominal if corr[best] <= corr[min(nominal, corr.shape[0] - 1)] else best


class _OcrCheck:
    """One region's expected text; reads the frame's box with the TextReader."""

    kind = "ocr"

    def __init__(self, region: Region, screen_size: tuple[int, int], threshold: float) -> None:
        self.box = tuple(region.coordinates)
        self.screen_size = screen_size
        self.expected = region.expected_text or ""
        self.threshold = threshold
        x1, y1, x2, y2 = self.box
        self.area = (x2 - x1) * (y2 - y1)

    def frame_box(self, fw: int, fh: int) -> tuple[int, int, int, int]:
        sx, sy = fw / self.screen_size[0], fh / self.screen_size[1]
        x1, y1, x2, y2 = self.box
        return (max(0, round(x1 * sx)), max(0, round(y1 * sy)),
                min(fw, round(x2 * sx)), min(fh, round(y2 * sy)))


@dataclass(frozen=True)
class _Compiled:
    ref: ScreenRef
    checks: tuple[tuple[str, _PixelCheck | _OcrCheck], ...]  # (region name, check), cheap first


class _Call:
    """Per-identify() state: the frame and what was already computed from it."""

    __slots__ = ("frame", "fw", "fh", "works", "pixel_scores", "texts", "scores")

    def __init__(self, frame: np.ndarray, explain: bool) -> None:
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] not in (3, 4) \
                or frame.dtype != np.uint8 or frame.shape[0] == 0 or frame.shape[1] == 0:
            shape = getattr(frame, "shape", None)
            dtype = getattr(frame, "dtype", "")
            raise FarmError(f"matcher needs a non-empty RGBA or RGB uint8 frame (HxWx4/3), got "
                            f"{type(frame).__name__} {shape} {dtype}")
        self.frame = frame
        self.fh, self.fw = frame.shape[0], frame.shape[1]
        self.works: dict[tuple, _Work] = {}
        self.pixel_scores: dict[tuple, float] = {}
        self.texts: dict[tuple[int, int, int, int], str] = {}
        self.scores: list[RegionScore] | None = [] if explain else None


def _single_threaded_opencv() -> None:
    # Matching is many tiny OpenCV calls from many phone-actor threads at once (OpenCV
    # releases the GIL). At these sizes OpenCV's own worker pool saves no time and spins
    # between calls: measured the same wall time at twice the CPU. Process-wide, by design.
    if cv2.getNumThreads() != 1:
        log.info("OpenCV set to one thread per call (was %d)", cv2.getNumThreads())
        cv2.setNumThreads(1)


class Matcher:
    """Identifies frames against one loaded Registry. Thread-safe (many phone actor threads
    call it at once); built once per registry version: every reference crop is loaded and
    shrunk here, so identify() touches only the frame."""

    def __init__(self, registry: Registry, reader: TextReader | None = None) -> None:
        _single_threaded_opencv()
        self.registry = registry
        self._reader = reader
        self._compiled: dict[ScreenRef, _Compiled] = {}
        shared: dict[tuple, _PixelCheck] = {}
        for ref in registry.screens():
            app = registry.apps[ref.app]
            screen = registry.screen(ref)
            self._compiled[ref] = self._compile(ref, screen, tuple(app.screen_size), shared)
        self._interrupts: dict[str | None, tuple[_Compiled, ...]] = {}
        self._states: dict[str | None, tuple[_Compiled, ...]] = {}
        all_refs = list(self._compiled)
        self._interrupts[None] = tuple(self._compiled[r] for r in all_refs if r.kind == "interrupt")
        self._states[None] = tuple(self._compiled[r] for r in all_refs if r.kind == "state")
        for key in registry.apps:
            apps = (key,) if key == GLOBAL_APP else (key, GLOBAL_APP)
            # The app's own interrupts first: with a tie the log names them first.
            self._interrupts[key] = tuple(self._compiled[r] for a in apps for r in all_refs
                                          if r.app == a and r.kind == "interrupt")
            self._states[key] = tuple(self._compiled[r] for a in apps for r in all_refs
                                      if r.app == a and r.kind == "state")
        self._global_only = (self._interrupts.get(GLOBAL_APP, ()), self._states.get(GLOBAL_APP, ()))
        log.debug("matcher built: %d screens, %d distinct pixel references",
                  len(self._compiled), len(shared))

    def _compile(self, ref: ScreenRef, screen: Screen, screen_size: tuple[int, int],
                 shared: dict[tuple, _PixelCheck]) -> _Compiled:
        pixel: list[tuple[str, _PixelCheck]] = []
        ocr: list[tuple[str, _OcrCheck]] = []
        for region in screen.validation_regions:
            if region.reference:
                try:
                    image = load_image(self._resolve(region.reference))
                except FarmError as e:
                    raise FarmError(f"screen {ref.label()} region {region.name}: {e}") from e
                threshold = PIXEL_THRESHOLD if region.threshold is None else region.threshold
                check = _PixelCheck(region, image, screen_size, threshold)
                check = shared.setdefault(check.key, check)
                pixel.append((region.name, check))
            if region.ocr_enabled and region.expected_text:
                threshold = OCR_THRESHOLD if region.threshold is None else region.threshold
                ocr.append((region.name, _OcrCheck(region, screen_size, threshold)))
            if not region.reference and not (region.ocr_enabled and region.expected_text):
                log.warning("screen %s region %s has neither a reference crop nor OCR text; "
                            "it checks nothing", ref.label(), region.name)
        if not pixel and not ocr:
            log.warning("screen %s has no checkable region; it never matches", ref.label())
        pixel.sort(key=lambda c: c[1].area)
        ocr.sort(key=lambda c: c[1].area)
        return _Compiled(ref, tuple(pixel) + tuple(ocr))

    def _resolve(self, rel: str) -> Path:
        try:
            from registry.load import resolve_path
        except ImportError:
            return Path(self.registry.root) / rel
        return Path(resolve_path(self.registry, rel))

    def _app_key(self, app: str | None) -> str | None:
        """An app key from a key or a package name; "" when it is neither (global only)."""
        if app is None or app in self.registry.apps:
            return app
        key = self.registry.app_for_package(app)
        if key is None:
            log.debug("app %r is not registered; matching the global section only", app)
            return ""
        return key

    def _tiers(self, app: str | None) -> tuple[tuple[_Compiled, ...], tuple[_Compiled, ...]]:
        key = self._app_key(app)
        if key == "":
            return self._global_only
        return self._interrupts[key], self._states[key]

    def identify(self, frame: np.ndarray, app: str | None = None, *,
                 explain: bool = False) -> ScreenMatch:
        """The one screen ``frame`` shows, interrupts first; unknown or ambiguous otherwise."""
        t0 = time.perf_counter()
        call = _Call(frame, explain)
        interrupts, states = self._tiers(app)
        for tier in (interrupts, states):
            hits = [c.ref for c in tier if self._screen_matches(c, call)]
            if len(hits) == 1:
                return self._result(hits[0], (), call, t0)
            if len(hits) > 1:
                log.error("ambiguous screen: %s all match the frame; the registry must tell "
                          "them apart", ", ".join(r.label() for r in hits))
                return self._result(None, tuple(hits), call, t0)
        return self._result(None, (), call, t0)

    def matches(self, frame: np.ndarray, app: str | None = None) -> list[ScreenRef]:
        """Every screen (interrupts, then states) whose regions all match, without tiers."""
        call = _Call(frame, False)
        interrupts, states = self._tiers(app)
        return [c.ref for c in interrupts + states if self._screen_matches(c, call)]

    @staticmethod
    def _result(ref: ScreenRef | None, ambiguous: tuple[ScreenRef, ...], call: _Call,
                t0: float) -> ScreenMatch:
        return ScreenMatch(ref, ambiguous, tuple(call.scores or ()),
                           (time.perf_counter() - t0) * 1000.0)

    def _screen_matches(self, compiled: _Compiled, call: _Call) -> bool:
        if not compiled.checks:
            return False
        for name, check in compiled.checks:
            text = None
            if check.kind == "pixel":
                score = self._pixel_score(check, call)
            else:
                score, text = self._ocr_score(check, call)
            passed = score >= check.threshold
            if call.scores is not None:
                call.scores.append(RegionScore(compiled.ref, name, check.kind, round(score, 4),
                                               check.threshold, passed, text))
            if not passed:
                return False
        return True

    @staticmethod
    def _pixel_score(check: _PixelCheck, call: _Call) -> float:
        score = call.pixel_scores.get(check.key)
        if score is None:
            plan = check.plan(call.fw, call.fh)
            work = call.works.get(plan.key)
            if work is None:
                work = call.works[plan.key] = _Work(call.frame, plan)
            score = call.pixel_scores[check.key] = check.score(work, plan)
        return score

    def _ocr_score(self, check: _OcrCheck, call: _Call) -> tuple[float, str]:
        box = check.frame_box(call.fw, call.fh)
        text = call.texts.get(box)
        if text is None:
            if box[2] <= box[0] or box[3] <= box[1]:
                text = ""
            else:
                crop = call.frame[box[1]:box[3], box[0]:box[2]]
                rgb = cv2.cvtColor(crop, cv2.COLOR_RGBA2RGB) if crop.shape[2] == 4 else crop
                text = self.reader.read(rgb)[0]
            call.texts[box] = text
        return text_similarity(check.expected, text), text

    @property
    def reader(self) -> TextReader:
        if self._reader is None:
            self._reader = shared_reader()
        return self._reader
