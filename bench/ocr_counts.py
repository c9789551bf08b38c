"""OCR of a count region: ms per read (recognition only, on the crop) and accuracy.

Renders ``--n`` counts (default 200) the way the demo app draws its profile counts
(``virtual/render.py``: Pillow's bundled font, the profile's followers text element: box
(60, 550, 380, 660) of the 1080x2400 reference screen, font size 64, dark grey on white),
in several formats: plain ("987"), grouped ("1,234"), compact ("1.2K", "48.7K", "1.5M"),
French/German decimal ("3,4 M", "12,5 k"), and CJK ("12.5万", "3.1亿") when the demo font
has those glyphs (it is checked: without them the characters render as the font's
"missing glyph" box and are left out, said in the output). Each frame is cropped to the
region's box as a read step does, read by ``registry.ocr.TextReader.read`` (a reader with
no result cache, so every read runs the model) and parsed by ``sequences.numbers.parse_count``
in the format's locale; a read is right when the parsed number is the one drawn.

    python -m bench.ocr_counts [--n 200] [--seed 7]

Prints ms per read (p50, p95; the model's load is outside the timing) and the accuracy per
format and overall, with every misread.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from decimal import ROUND_DOWN, Decimal

import numpy as np

from registry.ocr import TextReader
from sequences.numbers import parse_count
from virtual.render import font, render_base

REGION = (60, 550, 380, 660)          # the demo profile's followers text element
FONT_SIZE = 64
INK, PAPER = (32, 33, 36), (255, 255, 255)
SIZE = (1080, 2400)


def _compact(n: int, decimal: str, units: tuple[tuple[int, str], ...], space: str) -> str:
    """``n`` as apps shorten it: one decimal, truncated (1,299 -> 1.2K)."""
    for value, unit in units:
        if n >= value:
            short = (Decimal(n) / value).quantize(Decimal("0.1"), rounding=ROUND_DOWN)
            text = f"{short:f}".rstrip("0").rstrip(".")
            return text.replace(".", decimal) + space + unit
    return str(n)


def counts(n: int, rng: random.Random, cjk: bool) -> list[tuple[str, str, str, int]]:
    """``n`` samples (format, locale, text drawn, the number it stands for)."""
    formats = ["plain", "grouped", "compact", "fr", "de"] + (["zh"] if cjk else [])
    out = []
    for i in range(n):
        kind = formats[i % len(formats)]
        if kind == "plain":
            v = rng.randrange(0, 1000)
            out.append((kind, "en", str(v), v))
        elif kind == "grouped":
            v = rng.randrange(1000, 10_000_000)
            out.append((kind, "en", f"{v:,}", v))
        elif kind == "compact":
            v = rng.randrange(1000, 50_000_000)
            text = _compact(v, ".", ((10**6, "M"), (10**3, "K")), "")
            out.append((kind, "en", text, parse_count(text, "en")))
        elif kind == "fr":
            v = rng.randrange(10**6, 50 * 10**6)
            text = _compact(v, ",", ((10**6, "M"),), " ")
            out.append((kind, "fr", text, parse_count(text, "fr")))
        elif kind == "de":
            v = rng.randrange(10_000, 1_000_000)
            text = _compact(v, ",", ((10**3, "k"),), " ")
            out.append((kind, "de", text, parse_count(text, "de")))
        else:
            v = rng.randrange(10_000, 10**9)
            text = _compact(v, ".", ((10**8, "亿"), (10**4, "万")), "")
            out.append((kind, "zh", text, parse_count(text, "zh")))
    return out


def font_has_cjk() -> bool:
    """Whether the demo font draws 万 and 亿 as glyphs of their own (not its missing-glyph box)."""
    fnt = font(FONT_SIZE)
    masks = [np.asarray(fnt.getmask(c)) for c in ("万", "亿", "\U000f0000")]
    return not (np.array_equal(masks[0], masks[2]) or np.array_equal(masks[1], masks[2]))


def crop_of(text: str) -> np.ndarray:
    ops = (("box", (0, 0, *SIZE), "rect", PAPER, None, 0),
           ("text", REGION, text, FONT_SIZE, INK, "center"))
    frame = render_base(SIZE[0], SIZE[1], ops)
    x1, y1, x2, y2 = REGION
    return np.ascontiguousarray(frame[y1:y2, x1:x2, :3])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    cjk = font_has_cjk()
    samples = counts(args.n, random.Random(args.seed), cjk)
    reader = TextReader(cache_size=0)
    reader.read(crop_of("123"))  # the model's load, outside the timing
    times, right, misreads = [], {}, []
    for kind, locale, text, number in samples:
        crop = crop_of(text)
        t0 = time.perf_counter()
        read, _score = reader.read(crop)
        times.append((time.perf_counter() - t0) * 1000)
        try:
            got: int | str = parse_count(read, locale)
        except ValueError:
            got = "not a count"
        except Exception as exc:  # ValidationError: a misread that is no count
            got = f"not a count ({exc})"
        ok = got == number
        total, good = right.get(kind, (0, 0))
        right[kind] = (total + 1, good + ok)
        if not ok:
            misreads.append(f"  {kind:8} drew {text!r:14} read {read!r:16} -> {got}")
    times.sort()
    p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
    print(f"OCR of a count region {REGION} (demo font, size {FONT_SIZE}), recognition only, "
          f"{len(samples)} reads")
    print(f"ms per read: p50 {statistics.median(times):.1f}, p95 {p95:.1f}, "
          f"min {times[0]:.1f}, max {times[-1]:.1f}")
    for kind, (total, good) in right.items():
        print(f"  {kind:8} {good}/{total} right")
    good = sum(g for _, g in right.values())
    print(f"accuracy: {good}/{len(samples)} = {100 * good / len(samples):.1f}%")
    if not cjk:
        print("CJK counts (12.5万, 3.1亿) left out: the demo font (Pillow's bundled one) has no "
              "glyphs for them")
    for line in misreads:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
