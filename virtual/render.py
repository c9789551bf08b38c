"""Pixels for virtual phones: draws display lists with Pillow and caches frames and PNGs.

The UI (``ui.py``) turns its state into a *display list*: a tuple of hashable drawing ops in
the 1080x2400 reference space. This module owns turning a display list into an RGBA frame of
the phone's real size, plus the status bar (clock, battery), and the caches that make a
repeated screenshot cheap:

* base frame per (size, display list): the expensive Pillow render, done once per UI state;
* status strip per (size, colours, HH:MM, battery): tiny, redrawn when the minute changes;
* composed frame and PNG per (base, strip): a copy of the base with the strip pasted on.

The caches are shared by every phone of the process (phones showing the same state share a
frame) and bounded in bytes. Frames are read-only numpy arrays: callers must not write.

Ops (all coordinates in reference space):
  ("box", (x0, y0, x1, y1), shape, fill_rgb | None, outline_rgb | None, outline_width)
  ("text", (x0, y0, x1, y1), text, font_size, rgb, align)
  ("dim",)   darken everything drawn so far (popup scrim)
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import OrderedDict
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from virtual.appmodel import REF_HEIGHT, REF_WIDTH

log = logging.getLogger(__name__)

STATUS_BAR_HEIGHT = 80  # reference pixels
RGB = tuple[int, int, int]
Op = tuple[Any, ...]
# Multiplier for the popup scrim; 0.4 reads as "dimmed" without hiding the screen.
_DIM_LUT = [int(v * 0.4) for v in range(256)] * 3
_DEFAULT_CACHE_BYTES = 256 * 1024 * 1024


@functools.lru_cache(maxsize=64)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled scalable font; legible for OCR, unlike OpenCV's Hershey fonts."""
    return ImageFont.load_default(size=size)


class _Scale:
    """Reference-space to device-pixel conversion for one frame size."""

    def __init__(self, width: int, height: int) -> None:
        self.sx = width / REF_WIDTH
        self.sy = height / REF_HEIGHT
        self.sf = min(self.sx, self.sy)

    def box(self, b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        return (round(b[0] * self.sx), round(b[1] * self.sy), round(b[2] * self.sx) - 1, round(b[3] * self.sy) - 1)

    def font_px(self, size: int) -> int:
        return max(8, round(size * self.sf))


def _wrap(text: str, fnt: Any, max_w: float) -> list[str]:
    """Greedy word wrap; a word longer than the line is cut by characters."""
    lines: list[str] = []
    for para in text.split("\n"):
        line = ""
        for word in para.split(" "):
            candidate = f"{line} {word}" if line else word
            if fnt.getlength(candidate) <= max_w:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = word
            while fnt.getlength(line) > max_w and len(line) > 1:
                cut = len(line)
                while cut > 1 and fnt.getlength(line[:cut]) > max_w:
                    cut -= 1
                lines.append(line[:cut])
                line = line[cut:]
        lines.append(line)
    return lines


def _draw_text(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], text: str, size: int,
               color: RGB, align: str) -> None:
    fnt = font(size)
    x0, y0, x1, y1 = box
    pad = max(2, size // 6)
    lines = _wrap(text, fnt, max(1, x1 - x0 - 2 * pad))
    ascent, descent = fnt.getmetrics()
    line_h = ascent + descent
    gap = size // 5
    fit = max(1, (y1 - y0 + gap) // (line_h + gap))
    lines = lines[:fit]  # clip rather than spill over the next element
    total = len(lines) * line_h + (len(lines) - 1) * gap
    y = y0 + (y1 - y0 - total) / 2
    for line in lines:
        w = fnt.getlength(line)
        if align == "left":
            x = x0 + pad
        elif align == "right":
            x = x1 - pad - w
        else:
            x = x0 + (x1 - x0 - w) / 2
        draw.text((round(x), round(y)), line, font=fnt, fill=color, anchor="la")
        y += line_h + gap


def render_base(width: int, height: int, ops: tuple[Op, ...]) -> np.ndarray:
    """Draw a display list into a fresh read-only (height, width, 4) uint8 RGBA array."""
    sc = _Scale(width, height)
    img = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(img)
    for op in ops:
        kind = op[0]
        if kind == "box":
            _, b, shape, fill, outline, ow = op
            box = sc.box(b)
            owp = max(1, round(ow * sc.sf)) if outline is not None else 0
            if shape == "ellipse":
                draw.ellipse(box, fill=fill, outline=outline, width=owp)
            elif shape == "rounded":
                radius = round(min(box[2] - box[0], box[3] - box[1], 96 * sc.sf * 2) / 4)
                draw.rounded_rectangle(box, radius=radius, fill=fill, outline=outline, width=owp)
            else:
                draw.rectangle(box, fill=fill, outline=outline, width=owp)
        elif kind == "text":
            _, b, text, size, color, align = op
            if text:
                _draw_text(draw, sc.box(b), text, sc.font_px(size), color, align)
        elif kind == "dim":
            img = img.point(_DIM_LUT)
            draw = ImageDraw.Draw(img)
        else:  # a programming error in ui.py, not user data
            raise ValueError(f"unknown display op {kind!r}")
    return np.asarray(img.convert("RGBA"))


def render_status_bar(width: int, height: int, bg: RGB, fg: RGB, clock_text: str, battery: int) -> np.ndarray:
    """The status strip: HH:MM on the left, battery icon and percentage on the right."""
    sc = _Scale(width, height)
    h = round(STATUS_BAR_HEIGHT * sc.sy)
    img = Image.new("RGB", (width, h), bg)
    draw = ImageDraw.Draw(img)
    size = sc.font_px(40)
    _draw_text(draw, (round(30 * sc.sx), 0, round(400 * sc.sx), h - 1), clock_text, size, fg, "left")
    # Battery glyph: outlined body, a nub, and a fill proportional to the level.
    bx1, bx0 = round(1050 * sc.sx), round(990 * sc.sx)
    by0, by1 = round(24 * sc.sy), round(56 * sc.sy)
    draw.rectangle((bx0, by0, bx1, by1), outline=fg, width=max(1, round(3 * sc.sf)))
    draw.rectangle((bx1 + 1, by0 + (by1 - by0) // 3, bx1 + max(2, round(6 * sc.sx)), by1 - (by1 - by0) // 3), fill=fg)
    level = max(0, min(100, battery))
    inner = bx0 + round(6 * sc.sx) + round((bx1 - bx0 - round(12 * sc.sx)) * level / 100)
    if level > 0:
        fill = (220, 60, 50) if level <= 15 else fg
        draw.rectangle((bx0 + round(6 * sc.sx), by0 + round(6 * sc.sy), inner, by1 - round(6 * sc.sy)), fill=fill)
    _draw_text(draw, (round(700 * sc.sx), 0, round(975 * sc.sx), h - 1), f"{level}%", size, fg, "right")
    return np.asarray(img.convert("RGBA"))


def encode_png(frame: np.ndarray) -> bytes:
    """Fast PNG (compression 1): screenshots are taken after every action."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGBA2BGRA), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:  # only on a broken OpenCV build
        raise RuntimeError("cv2.imencode failed to encode a PNG")
    return buf.tobytes()


class FrameCache:
    """Owns the process-wide frame/PNG caches: an LRU bounded by bytes, safe across threads.

    Rendering happens outside the lock, so two threads asking for the same new frame may both
    render it once; the results are identical and the second simply replaces the first.
    """

    def __init__(self, max_bytes: int = _DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[Any, Any] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _size(value: Any) -> int:
        return value.nbytes if isinstance(value, np.ndarray) else len(value)

    def get(self, key: Any) -> Any:
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= self._size(old)
            self._entries[key] = value
            self._bytes += self._size(value)
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= self._size(evicted)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


class FrameRenderer:
    """Produces composed frames and PNGs for (size, display list, status bar) via the caches."""

    def __init__(self, cache: FrameCache | None = None) -> None:
        self.cache = cache or FrameCache()

    def frame(self, width: int, height: int, ops: tuple[Op, ...], status: tuple[RGB, RGB, str, int]) -> np.ndarray:
        key = ("frame", width, height, ops, status)
        out = self.cache.get(key)
        if out is not None:
            return out
        base_key = ("base", width, height, ops)
        base = self.cache.get(base_key)
        if base is None:
            base = render_base(width, height, ops)
            self.cache.put(base_key, base)
            log.debug("frame rendered width=%d height=%d ops=%d", width, height, len(ops))
        strip_key = ("status", width, height, status)
        strip = self.cache.get(strip_key)
        if strip is None:
            strip = render_status_bar(width, height, *status)
            self.cache.put(strip_key, strip)
        out = np.concatenate((strip, base[strip.shape[0]:]), axis=0)
        out.flags.writeable = False
        self.cache.put(key, out)
        return out

    def png(self, width: int, height: int, ops: tuple[Op, ...], status: tuple[RGB, RGB, str, int]) -> bytes:
        key = ("png", width, height, ops, status)
        out = self.cache.get(key)
        if out is None:
            out = encode_png(self.frame(width, height, ops, status))
            self.cache.put(key, out)
        return out


# One per process, so identical screens on many phones share their pixels.
shared_renderer = FrameRenderer()
