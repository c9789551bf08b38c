// Action mode's gesture rules (spec 5.1), pure: where a press went and how long it lasted
// become a tap, a long tap or a swipe, and screen fractions become each phone's pixels.

export const BOX_PX = 100;          // the box around the press point, in phone pixels
export const LONG_TAP_MS = 500;     // held at least this long inside the box: long tap
const MAX_LONG_MS = 10000;
const MIN_SWIPE_MS = 50;
const MAX_SWIPE_MS = 5000;

// path: [{fx, fy, t}] screen fractions (0..1) and times (ms) from press to release;
// size: [w, h] of the phone the press was on. An action in fractions (scaled per phone later).
export function classify(path, size) {
  const first = path[0];
  const last = path[path.length - 1];
  const [w, h] = size;
  const half = BOX_PX / 2;
  const left = path.some((p) => Math.abs((p.fx - first.fx) * w) > half || Math.abs((p.fy - first.fy) * h) > half);
  const duration = Math.max(0, last.t - first.t);
  if (!left) {
    if (duration >= LONG_TAP_MS) return { type: "long_tap", fx: first.fx, fy: first.fy, duration_ms: Math.min(Math.round(duration), MAX_LONG_MS) };
    return { type: "tap", fx: first.fx, fy: first.fy };
  }
  // The action API swipes in a straight line: from where the path began to where it ended.
  return { type: "swipe", fx1: first.fx, fy1: first.fy, fx2: last.fx, fy2: last.fy,
           duration_ms: Math.min(Math.max(Math.round(duration), MIN_SWIPE_MS), MAX_SWIPE_MS) };
}

const clampPx = (v, max) => Math.min(Math.max(Math.round(v), 0), max - 1);

// The action for one phone of size [w, h].
export function scaled(gesture, size) {
  const [w, h] = size;
  if (gesture.type === "swipe") {
    return { type: "swipe", x1: clampPx(gesture.fx1 * w, w), y1: clampPx(gesture.fy1 * h, h),
             x2: clampPx(gesture.fx2 * w, w), y2: clampPx(gesture.fy2 * h, h), duration_ms: gesture.duration_ms };
  }
  const out = { type: gesture.type, x: clampPx(gesture.fx * w, w), y: clampPx(gesture.fy * h, h) };
  if (gesture.type === "long_tap") out.duration_ms = gesture.duration_ms;
  return out;
}

// Group phones by screen size: one request per size, each with its own pixels.
export function bySize(phones, fallback) {
  const groups = new Map();
  for (const p of phones) {
    const size = p.screen_size || fallback;
    const key = size.join("x");
    if (!groups.has(key)) groups.set(key, { size, serials: [] });
    groups.get(key).serials.push(p.serial);
  }
  return [...groups.values()];
}
