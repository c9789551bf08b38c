"""OCR for validation regions: the one place that owns the text recognition engine.

``TextReader`` runs rapidocr's *recognition* model on a crop that holds one line of text
(~18 ms here). Text detection is never run while matching: on a frame it costs ~0.9 s, so
the registry's OCR regions box the text themselves. Only screen discovery (offline, in a
worker thread) runs it, through ``TextReader.detect``, on a downscaled frame. The ONNX model is loaded
lazily, once per process (``shared_reader()``), and results are cached by crop content, so a
screen that stays put is read once. ``text_similarity`` is how a read is compared to the
registry's ``expected_text``.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import cv2
import numpy as np

from protocol.errors import FarmError

log = logging.getLogger(__name__)

DEFAULT_CACHE_SIZE = 512

# Anything that is neither a letter/digit nor whitespace: OCR sprinkles stray dots, bars and
# quotes, and registry authors do not type the punctuation of a button's label reliably.
_NOISE = re.compile(r"[^\w\s]|_")


def normalize_text(text: str) -> str:
    """Casefolded, punctuation dropped, whitespace collapsed: the form texts are compared in."""
    return " ".join(_NOISE.sub("", text.casefold()).split())


def text_similarity(expected: str, read: str) -> float:
    """How well ``read`` matches ``expected``, in [0, 1] (difflib ratio of normalized texts)."""
    a, b = normalize_text(expected), normalize_text(read)
    if not a or not b:
        return 1.0 if a == b else 0.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def _load_rapidocr() -> Any:
    try:
        from rapidocr_onnxruntime import RapidOCR
    except Exception as e:  # ImportError, or a broken onnxruntime/cv2 underneath it
        raise FarmError(f"OCR is unavailable: rapidocr_onnxruntime failed to import ({e}); "
                        "install rapidocr-onnxruntime or remove ocr_enabled from the registry's "
                        "regions") from e
    log.info("loading rapidocr recognition model")
    return RapidOCR()


# A pixel belongs to the text when it differs this much (gray levels) from the background.
_INK = 40


def _text_only(crop: np.ndarray) -> np.ndarray:
    """``crop`` cut down to its text plus a little padding.

    The recognizer scales each line to 48 px high: text that fills a third of a roomy
    registry box came out as "Updat ailabe"; cut to the ink it reads "Update available".
    The background is the median of the crop's border.
    """
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    border = np.concatenate((gray[0], gray[-1], gray[:, 0], gray[:, -1]))
    ink = cv2.absdiff(gray, int(np.median(border))) > _INK
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return crop
    y1, y2, x1, x2 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    pad = max(2, (y2 - y1) // 4)
    return crop[max(0, y1 - pad):y2 + pad, max(0, x1 - pad):x2 + pad]


# A text cursor is a bar at most this share of its height wide.
_CARET_WIDTH = 0.25


def field_is_blank(crop_rgb: np.ndarray) -> bool:
    """Whether ``crop_rgb`` (HxWx3 RGB, the inside of a text field) shows no text: no ink
    at all, or one thin upright bar, the cursor of a focused field (the recognizer reads a
    lone cursor as "1" or "|"). A single character as narrow (l, 1, i) passes for blank too.
    The background is the median of the crop's border, as in ``_text_only``."""
    gray = cv2.cvtColor(np.ascontiguousarray(crop_rgb), cv2.COLOR_RGB2GRAY)
    border = np.concatenate((gray[0], gray[-1], gray[:, 0], gray[:, -1]))
    ink = cv2.absdiff(gray, int(np.median(border))) > _INK
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if cols.size == 0:
        return True
    return int(cols[-1] - cols[0]) + 1 <= max(2.0, _CARET_WIDTH * (int(rows[-1] - rows[0]) + 1))


# Width a frame is scaled down to for text detection: half a 1080 px phone frame, ~0.9 s.
DETECT_WIDTH = 540


@dataclass(frozen=True)
class TextLine:
    """One line of text found on a frame: its box in the frame's pixels (x1, y1, x2, y2,
    exclusive), what it reads and the recognizer's confidence."""

    box: tuple[int, int, int, int]
    text: str
    score: float


class TextReader:
    """Reads the single line of text in a crop with rapidocr (recognition only).

    Thread-safe. The engine is created on the first ``read`` (``engine_factory``, default
    rapidocr), and calls into it are serialized: onnxruntime already spreads one inference
    over every core, and rapidocr's call is not documented as re-entrant. Results are kept in
    a bounded LRU keyed by a hash of the crop's pixels.
    """

    def __init__(self, engine_factory: Callable[[], Any] | None = None,
                 cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self._factory = engine_factory or _load_rapidocr
        self._engine: Any = None
        self._engine_lock = threading.Lock()
        self._cache: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()

    def _get_engine(self) -> Any:
        if self._engine is None:
            with self._engine_lock:
                if self._engine is None:
                    self._engine = self._factory()
        return self._engine

    def read(self, crop_rgb: np.ndarray) -> tuple[str, float]:
        """The text in ``crop_rgb`` (HxWx3 RGB uint8) and the recognizer's confidence."""
        if crop_rgb.ndim != 3 or crop_rgb.shape[2] != 3 or crop_rgb.size == 0:
            raise FarmError(f"OCR needs a non-empty HxWx3 RGB crop, got shape {crop_rgb.shape}")
        crop = np.ascontiguousarray(crop_rgb)
        key = hashlib.blake2b(crop.data, digest_size=16,
                              person=repr(crop.shape).encode()[:16]).digest()
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        engine = self._get_engine()
        bgr = np.ascontiguousarray(_text_only(crop)[:, :, ::-1])  # rapidocr takes BGR, as OpenCV
        with self._engine_lock:
            result, _ = engine(bgr, use_det=False, use_cls=False, use_rec=True)
        text, score = ("", 0.0)
        if result:
            text = " ".join(str(r[0]) for r in result).strip()
            score = float(min(r[1] for r in result))
        with self._cache_lock:
            self._cache[key] = (text, score)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return text, score


    def detect(self, frame_rgb: np.ndarray, width: int = DETECT_WIDTH) -> list[TextLine]:
        """Every line of text on a whole frame (HxWx3 RGB), found by rapidocr's detection
        model on the frame scaled to ``width`` and read by its recognizer; boxes are in the
        frame's own pixels, top to bottom. Slow (~1 s): never on the matching path."""
        if frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3 or frame_rgb.size == 0:
            raise FarmError(f"text detection needs an HxWx3 RGB frame, got {frame_rgb.shape}")
        h, w = frame_rgb.shape[:2]
        scale = min(1.0, width / w)
        small = frame_rgb if scale == 1.0 else cv2.resize(
            frame_rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        engine = self._get_engine()
        bgr = np.ascontiguousarray(small[:, :, ::-1])
        with self._engine_lock:
            result, _ = engine(bgr, use_det=True, use_cls=False, use_rec=True)
        lines = []
        for points, text, score in result or []:
            xs, ys = [p[0] / scale for p in points], [p[1] / scale for p in points]
            box = (max(0, int(min(xs))), max(0, int(min(ys))),
                   min(w, int(np.ceil(max(xs)))), min(h, int(np.ceil(max(ys)))))
            if box[0] < box[2] and box[1] < box[3] and str(text).strip():
                lines.append(TextLine(box, str(text).strip(), float(score)))
        return sorted(lines, key=lambda line: (line.box[1], line.box[0]))


_shared: TextReader | None = None
_shared_lock = threading.Lock()


def shared_reader() -> TextReader:
    """The process's one TextReader (its model is loaded on first use, not here)."""
    global _shared
    if _shared is None:
        with _shared_lock:
            if _shared is None:
                _shared = TextReader()
    return _shared
