// Action mode's gesture rules (spec 5.1), pure: where a press went and how long it lasted
// become a tap, a long tap or a swipe along the path, and screen fractions become each
// phone's pixels.

export const BOX_PX = 100;          // the box around the press point, in phone pixels
export const LONG_TAP_MS = 500;     // held at least this long inside the box: long tap
const MAX_LONG_MS = 10000;
const MIN_SWIPE_MS = 50;
const MAX_SWIPE_MS = 5000;
export const SAMPLE_MS = 16;        // a drag keeps at most one pointer position per frame
export const MAX_PATH_POINTS = 64;  // what the action API takes (protocol MAX_SWIPE_POINTS)
const SIMPLIFY_PX = 2;              // points closer than this to the line they sit on go

// Add pointer position ``p`` ({fx, fy, t}) to a drag's ``path`` unless the last one kept is
// less than SAMPLE_MS old; ``last``: the release, always kept (it is where the swipe ends).
export function sample(path, p, last = false) {
  const prev = path[path.length - 1];
  if (last && prev && p.t - prev.t < SAMPLE_MS && path.length > 1) path[path.length - 1] = p;
  else if (last || !prev || p.t - prev.t >= SAMPLE_MS) path.push(p);
  return path;
}

// Ramer-Douglas-Peucker in the pixels of ``size``: the fewest points that stay within
// ``eps`` px of the path; eps grows until at most ``max`` points remain.
export function simplify(points, size, max = MAX_PATH_POINTS) {
  const [w, h] = size;
  const px = points.map((p) => [p.fx * w, p.fy * h]);
  const far = (i, j) => {  // the point between i and j furthest from the chord i-j
    const [ax, ay] = px[i], [bx, by] = px[j];
    const dx = bx - ax, dy = by - ay, len = Math.hypot(dx, dy);
    let best = -1, dist = 0;
    for (let k = i + 1; k < j; k++) {
      const d = len ? Math.abs(dy * px[k][0] - dx * px[k][1] + bx * ay - by * ax) / len
                    : Math.hypot(px[k][0] - ax, px[k][1] - ay);
      if (d > dist) { dist = d; best = k; }
    }
    return [best, dist];
  };
  for (let eps = SIMPLIFY_PX; ; eps *= 1.5) {
    const keep = new Set([0, points.length - 1]);
    const stack = [[0, points.length - 1]];
    while (stack.length) {
      const [i, j] = stack.pop();
      const [k, d] = far(i, j);
      if (k >= 0 && d > eps) { keep.add(k); stack.push([i, k], [k, j]); }
    }
    if (keep.size <= max) return [...keep].sort((a, b) => a - b).map((i) => points[i]);
  }
}

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
  // The swipe follows the path (simplified to what the action API takes).
  return { type: "swipe", path: simplify(path, size).map((p) => [p.fx, p.fy]),
           duration_ms: Math.min(Math.max(Math.round(duration), MIN_SWIPE_MS), MAX_SWIPE_MS) };
}

const clampPx = (v, max) => Math.min(Math.max(Math.round(v), 0), max - 1);

// The action for one phone of size [w, h].
export function scaled(gesture, size) {
  const [w, h] = size;
  if (gesture.type === "swipe") {
    // Each phone's pixels; a point that lands on the pixel of the one before adds nothing.
    const path = [];
    for (const [fx, fy] of gesture.path) {
      const pt = [clampPx(fx * w, w), clampPx(fy * h, h)];
      const prev = path[path.length - 1];
      if (!prev || prev[0] !== pt[0] || prev[1] !== pt[1]) path.push(pt);
    }
    if (path.length < 2) path.push(path[0]);
    const [[x1, y1], [x2, y2]] = [path[0], path[path.length - 1]];
    const out = { type: "swipe", x1, y1, x2, y2, duration_ms: gesture.duration_ms };
    if (path.length > 2) out.path = path;  // a straight one stays a plain `input swipe`
    return out;
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
