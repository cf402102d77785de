/**
 * The q-quantile (0..1) of `xs` by nearest rank, as the pool's step overheads, `bench:scale` and
 * `hop-latency` report them; NaN when `xs` is empty. One sort of a copy: these lists hold a run's
 * steps at most, and simple-statistics would add a dependency for this one function.
 */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return Number.NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}
