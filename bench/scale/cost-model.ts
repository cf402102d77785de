/**
 * The cost model of one synchronous step with a single coordinator, fitted to `bench:scale`'s
 * measurements and used to predict weak-scaling efficiency on a cluster:
 *
 *   step(N, P) = T + L + a + b·N + c·N·P + wire(N, P) / bandwidth
 *
 * T: a shard's compute time. L: the latency of a step's message hops and wake-ups, which costs
 * time but no coordinator CPU. a + b·N + c·N·P: the coordinator's own work per step: a fixed part
 * (the update), a part per worker (each worker's messages: encode, send, receive, decode,
 * bookkeeping) and a part per worker and parameter (the weights written to each worker's socket, each
 * gradient out of its frame, the serial shard-ordered reduce). wire: the bytes the coordinator's
 * link carries per step in its busier direction (N assignments out, N results in, full duplex).
 *
 * The same linear form (a + b·N + c·N·P) is fitted twice by least squares: to the coordinator's
 * CPU time per step, which is what a cluster's coordinator has to do, and to the step's wall-time
 * overhead on this machine, which also holds the simulated workers' CPU and the waits for a core,
 * and describes the loopback measurement itself.
 */
import { largestFrames } from '../../src/coordinator/limits.js';

export interface Observation {
  workers: number;
  params: number;
  /** What is fitted: a cost per step, ms. */
  ms: number;
}

/** a + b·N + c·N·P, ms per step. */
export interface LinearCost {
  /** a: ms per step. */
  fixedMs: number;
  /** b: ms per worker per step. */
  perWorkerMs: number;
  /** c: ms per worker per million parameters per step; undefined when only one model size was measured. */
  perWorkerMegaParamMs: number | undefined;
  /** How much of the spread of the observations the fit explains (1 = all). */
  r2: number;
  /** The largest |measured − fitted| over the observations, ms. */
  worstResidualMs: number;
}

/** A step's time: a latency that costs no coordinator CPU, plus the coordinator's work. */
export interface StepModel {
  latencyMs: number;
  work: LinearCost;
}

/** Solves the least-squares problem min |X·β − y| through the normal equations (a few columns). */
function leastSquares(rows: number[][], y: number[]): number[] {
  const k = rows[0].length;
  const a = Array.from({ length: k }, (_, i) => Array.from({ length: k + 1 }, (_, j) => (j < k ? rows.reduce((s, r) => s + r[i] * r[j], 0) : rows.reduce((s, r, n) => s + r[i] * y[n], 0))));
  // Gaussian elimination with partial pivoting.
  for (let col = 0; col < k; col++) {
    let pivot = col;
    for (let r = col + 1; r < k; r++) if (Math.abs(a[r][col]) > Math.abs(a[pivot][col])) pivot = r;
    [a[col], a[pivot]] = [a[pivot], a[col]];
    if (Math.abs(a[col][col]) < 1e-12) throw new Error('the measurements do not determine the cost model (too few distinct worker counts)');
    for (let r = 0; r < k; r++) {
      if (r === col) continue;
      const f = a[r][col] / a[col][col];
      for (let c = col; c <= k; c++) a[r][c] -= f * a[col][c];
    }
  }
  return a.map((row, i) => row[k] / row[i]);
}

/**
 * Fits a, b (and c, when at least two model sizes were measured) to the observations. No cost is
 * negative: on a noisy machine an unconstrained fit can trade a negative per-worker cost for a
 * larger per-parameter one, which predicts nonsense past the measured range. So every subset of
 * the terms is fitted, and the best fit whose costs are all ≥ 0 wins (non-negative least squares
 * by enumeration: three terms, eight subsets).
 */
export function fitLinearCost(observations: readonly Observation[]): LinearCost {
  const sizes = new Set(observations.map((o) => o.params));
  const withParams = sizes.size >= 2;
  const allFeatures = (o: Observation): number[] => (withParams ? [1, o.workers, (o.workers * o.params) / 1e6] : [1, o.workers]);
  const k = withParams ? 3 : 2;
  const y = observations.map((o) => o.ms);
  let best: { beta: number[]; residual: number } | undefined;
  for (let mask = 1; mask < 1 << k; mask++) {
    const terms = [...Array(k).keys()].filter((i) => mask & (1 << i));
    let partial: number[];
    try {
      partial = leastSquares(observations.map((o) => terms.map((i) => allFeatures(o)[i])), y);
    } catch {
      continue; // these terms are not determined by the measurements
    }
    if (partial.some((v) => v < 0)) continue;
    const beta = Array<number>(k).fill(0);
    terms.forEach((t, j) => (beta[t] = partial[j]));
    const residual = observations.reduce((s, o, n) => s + (y[n] - allFeatures(o).reduce((acc, f, i) => acc + f * beta[i], 0)) ** 2, 0);
    if (!best || residual < best.residual) best = { beta, residual };
  }
  const beta = best?.beta ?? Array<number>(k).fill(0);
  const fitted = observations.map((o) => allFeatures(o).reduce((s, f, i) => s + f * beta[i], 0));
  const mean = y.reduce((s, v) => s + v, 0) / y.length;
  const total = y.reduce((s, v) => s + (v - mean) ** 2, 0);
  const residual = y.reduce((s, v, i) => s + (v - fitted[i]) ** 2, 0);
  return {
    fixedMs: beta[0],
    perWorkerMs: beta[1],
    perWorkerMegaParamMs: withParams ? beta[2] : undefined,
    r2: total > 0 ? 1 - residual / total : 1,
    worstResidualMs: Math.max(...y.map((v, i) => Math.abs(v - fitted[i]))),
  };
}

export interface Scenario {
  params: number;
  /** Samples per worker per step (sizes the assignment frames). */
  batchPerWorker: number;
  computeMs: number;
  /** The coordinator's link, Gb/s; Infinity: no network term (loopback, as measured). */
  gbps: number;
  /**
   * Workers whose gradients are added on their node before they reach the coordinator (per-node
   * aggregation): the coordinator then has one member per node, which receives the weights once,
   * the shard data of all its workers, and adds its workers' gradients (at the same per-parameter
   * cost as the coordinator) before it sends one. 1: none.
   */
  workersPerNode?: number;
}

/**
 * Bytes the coordinator's link carries per step in its busier direction, for `members` members
 * that hold the training set (sent sample indices) or not (sent pixels).
 */
export function wireBytesPerStep(members: number, params: number, batchPerWorker: number, samplesAs: 'pixels' | 'indices' = 'indices'): number {
  const frames = largestFrames(params, batchPerWorker, samplesAs);
  return members * Math.max(frames.assign, frames.result);
}

/** The predicted step time with N workers, ms. */
export function predictStepMs(model: StepModel, s: Scenario, workers: number): number {
  const perNode = Math.min(workers, s.workersPerNode ?? 1);
  const members = Math.ceil(workers / perNode);
  const work = model.work;
  const perMegaParam = (work.perWorkerMegaParamMs ?? 0) * (s.params / 1e6);
  const nodeSum = perNode > 1 ? perMegaParam * perNode : 0;
  const wire = Number.isFinite(s.gbps) ? ((wireBytesPerStep(members, s.params, s.batchPerWorker * perNode) * 8) / (s.gbps * 1e9)) * 1000 : 0;
  return s.computeMs + model.latencyMs + work.fixedMs + work.perWorkerMs * members + perMegaParam * members + nodeSum + wire;
}

/** Weak-scaling efficiency with N workers: throughput(N) / (N × throughput(1)) = step(1) / step(N). */
export function predictEfficiency(model: StepModel, s: Scenario, workers: number): number {
  return predictStepMs(model, s, 1) / predictStepMs(model, s, workers);
}

/** The fewest workers (a power of two, up to 2^20) at which the efficiency falls below `threshold`. */
export function scalingLimit(model: StepModel, s: Scenario, threshold: number): number | undefined {
  for (let n = 1; n <= 2 ** 20; n *= 2) if (predictEfficiency(model, s, n) < threshold) return n;
  return undefined;
}

/**
 * The compute time per shard (ms) at which N workers reach `threshold` efficiency: everything but
 * the compute is the same whatever T is, so step(1) / step(N) = (T + s₁) / (T + s_N) solves for T.
 */
export function computeMsForEfficiency(model: StepModel, s: Scenario, workers: number, threshold: number): number {
  const rest1 = predictStepMs(model, { ...s, computeMs: 0 }, 1);
  const restN = predictStepMs(model, { ...s, computeMs: 0 }, workers);
  return Math.max(0, (threshold * restN - rest1) / (1 - threshold));
}
