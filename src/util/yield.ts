/**
 * Long computations on the main thread pause now and then for the event loop, so that heartbeats,
 * timers and received messages are served while a step or an evaluation runs (a 60 s step must
 * not make a healthy worker look dead). A pause costs a few microseconds; it is taken only once
 * `everyMs` have passed since the last, so ordinary steps never take one.
 */
export const YIELD_EVERY_MS = 20;

export function createYielder(everyMs = YIELD_EVERY_MS): () => Promise<void> | undefined {
  let last = performance.now();
  return () => {
    const now = performance.now();
    if (now - last < everyMs) return undefined;
    return new Promise<void>((resolve) =>
      setImmediate(() => {
        last = performance.now();
        resolve();
      }),
    );
  };
}

/** Runs a generator that pauses after each piece of work, letting the event loop run where due. */
export async function runYielding<T>(steps: Generator<void, T>, everyMs = YIELD_EVERY_MS): Promise<T> {
  const pause = createYielder(everyMs);
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
    const p = pause();
    if (p) await p;
  }
}
