"""A frame's identity for telling screens apart: a perceptual hash and `ScreenFingerprint`.

Owns deciding whether two frames show the same screen. The coordinator's unknown-screens
queue (actors.coordinator.unknown_screens) deduplicates its entries with it, and each phone
actor on a node (actors.node.phone) reports an unknown screen once with it; a leaf both
sides import, so the node needs none of the coordinator's code.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

HASH_GRID = 16
# Hash distance at or below which two frames count as the same screen (of 256 bits).
SAME_SCREEN_BITS = 16


def perceptual_hash(frame: np.ndarray) -> int:
    """256-bit average hash of an RGB(A) or grey frame of any size: robust to compression
    noise, scaling and small content changes, different for a different layout. (A
    difference hash is blind to full-width bars, which is what app screens are made of.)"""
    small = cv2.resize(frame, (HASH_GRID, HASH_GRID), interpolation=cv2.INTER_AREA)
    if small.ndim == 3:
        small = cv2.cvtColor(small, cv2.COLOR_RGBA2GRAY if small.shape[2] == 4 else cv2.COLOR_RGB2GRAY)
    bits = np.packbits((small > small.mean()).flatten())
    return int.from_bytes(bits.tobytes(), "big")


def hash_distance(a: int, b: int) -> int:
    return (a ^ b).bit_count()


# The hash alone sees layout: popups of one app share a box over the same dimmed screen and
# differ only in their text (ClipShare's rate-us, video-options and update dialogs hash the
# same), so a close hash is confirmed on a quarter-size grey frame. Different dialog texts
# change 1.1-1.4% of its pixels by more than DETAIL_LEVELS; a new clock time 0.03%.
DETAIL_SIZE = (270, 600)
DETAIL_LEVELS = 64
SAME_SCREEN_DETAIL = 0.004


@dataclass(frozen=True, eq=False)
class ScreenFingerprint:
    """A frame's identity for deduplication: its perceptual hash (cheap, compared first) and
    a quarter-size grey copy (compared when the hashes are close)."""

    phash: int
    detail: np.ndarray

    @classmethod
    def of(cls, frame: np.ndarray) -> "ScreenFingerprint":
        small = cv2.resize(frame, DETAIL_SIZE, interpolation=cv2.INTER_AREA)
        if small.ndim == 3:
            small = cv2.cvtColor(small, cv2.COLOR_RGBA2GRAY if small.shape[2] == 4 else cv2.COLOR_RGB2GRAY)
        return cls(perceptual_hash(frame), small)

    def same_screen(self, other: "ScreenFingerprint | None") -> bool:
        if other is None or hash_distance(self.phash, other.phash) > SAME_SCREEN_BITS:
            return False
        changed = cv2.absdiff(self.detail, other.detail) > DETAIL_LEVELS
        return float(changed.mean()) <= SAME_SCREEN_DETAIL
