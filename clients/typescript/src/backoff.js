// How long to wait before the next try: exponential from `lowMs` to `highMs`, with full
// jitter, so that clients that lost one server do not return in one wave.
export function backoff(attempt, lowMs, highMs) {
  return Math.random() * Math.min(highMs, lowMs * 2 ** Math.min(attempt, 30));
}
