/**
 * `--metrics ADDR`: the coordinator's Prometheus metrics, served at http://ADDR/metrics in the
 * Prometheus text format while the run lasts. prom-client keeps the registry and writes the format
 * (and the process's default metrics); node:http serves it.
 *
 * What is measured comes from two places and from nowhere else: the training loop tells its
 * observer of every applied step and every evaluation (pushed), and the worker pool's running
 * totals (workers, failures, rejected messages, bytes, step overheads) are read when Prometheus
 * scrapes (pulled), so that the pool does no extra work per message.
 */
import { type Server, createServer } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { EvaluationRecord, StepRecord, TrainingObserver } from '../training/loop.js';
import { UsageError, UserError } from '../util/errors.js';
import type { PoolLiveFigures } from './pool.js';

export const METRICS_PREFIX = 'mnist_ddp_';
export const METRICS_PATH = '/metrics';

/** A parsed `--metrics HOST:PORT`. */
export interface MetricsAddress {
  /** As given (brackets kept around an IPv6 address). */
  host: string;
  port: number;
}

/** `HOST:PORT` (`0.0.0.0:9400`, `127.0.0.1:9400`, `[::1]:9400`, `localhost:9400`); port 0 picks a free one. */
export function parseMetricsAddress(addr: string): MetricsAddress {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(addr.trim());
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new UsageError(`--metrics ${addr}: expected HOST:PORT, e.g. 127.0.0.1:9400 or 0.0.0.0:9400`);
  return { host: m[1], port };
}

/** Step times from a fraction of a millisecond (a GPU, a small batch) to seconds (a large batch on a CPU). */
const STEP_SECONDS_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** The throughput gauge's window: enough steps to smooth one slow step out, few enough to follow a change. */
const THROUGHPUT_WINDOW_STEPS = 50;

/** A counter whose total is kept elsewhere: brought up to that total whenever it is scraped. */
function counterReading(registry: Registry, name: string, help: string, total: () => number): Counter {
  let reported = 0;
  return new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      const now = total();
      if (now > reported) {
        this.inc(now - reported);
        reported = now;
      }
    },
  });
}

/**
 * The run's metrics. `observer` goes to the training loop; `watchPool` hands over the worker pool
 * once its socket is bound (a single-node run has none, and its pool figures stay 0).
 */
export class RunMetrics {
  readonly registry = new Registry();
  readonly observer: TrainingObserver;
  private pool: { liveFigures(): PoolLiveFigures } | undefined;

  constructor() {
    const registry = this.registry;
    const registers = [registry];
    collectDefaultMetrics({ register: registry });
    const n = (name: string): string => `${METRICS_PREFIX}${name}`;

    const steps = new Counter({ name: n('steps_total'), help: 'Training steps applied by this process', registers });
    const samples = new Counter({ name: n('samples_total'), help: 'Training samples in the steps applied by this process', registers });
    const throughput = new Gauge({
      name: n('train_samples_per_second'),
      help: `Training samples per second of step time over the last ${THROUGHPUT_WINDOW_STEPS} steps (evaluation excluded)`,
      registers,
    });
    const stepSeconds = new Histogram({ name: n('step_duration_seconds'), help: "A step's wall time: its gradient from the workers plus the update", buckets: STEP_SECONDS_BUCKETS, registers });
    const loss = new Gauge({ name: n('train_loss'), help: 'Mean training loss of the last step (NLL)', registers });
    const testLoss = new Gauge({ name: n('test_loss'), help: 'Average test loss at the last evaluation (NLL)', registers });
    const testAccuracy = new Gauge({ name: n('test_accuracy_ratio'), help: 'Test accuracy at the last evaluation, 0..1', registers });
    const epoch = new Gauge({ name: n('epoch'), help: 'The epoch being trained (1-based; 0 before the first step)', registers });
    const lr = new Gauge({ name: n('learning_rate'), help: 'Learning rate of the last step', registers });
    const momentum = new Gauge({ name: n('momentum'), help: 'SGD momentum of the last step', registers });
    // Nothing measured yet: no value, rather than a 0 that reads like a result.
    for (const g of [loss, testLoss, testAccuracy, lr, momentum, throughput]) g.set(NaN);

    const figures = (): PoolLiveFigures | undefined => this.pool?.liveFigures();
    new Gauge({
      name: n('workers_expected'),
      help: 'Workers the run trains with (--workers; 0 for the single-node fallback)',
      registers,
      collect() {
        this.set(figures()?.workersExpected ?? 0);
      },
    });
    new Gauge({
      name: n('workers_connected'),
      help: 'Workers in the pool now',
      registers,
      collect() {
        this.set(figures()?.workersConnected ?? 0);
      },
    });
    new Gauge({
      name: n('workers_required'),
      help: 'Workers a step needs (--min-workers; 1 without it): with fewer connected, steps wait',
      registers,
      collect() {
        this.set(figures()?.workersRequired ?? 0);
      },
    });
    counterReading(registry, n('worker_failures_total'), 'Workers lost: exited, silent, evicted, or failed before joining', () => figures()?.workerFailures ?? 0);
    counterReading(registry, n('rejected_messages_total'), 'Messages from workers that were refused (malformed, not assigned, invalid results)', () => figures()?.rejectedMessages ?? 0);
    counterReading(registry, n('verified_shards_total'), 'Workers\' results recomputed on the coordinator and compared (--verify-fraction)', () => figures()?.verifiedShards ?? 0);
    counterReading(registry, n('rejected_by_verification_total'), 'Spot checks that found a worker\'s result false (its sender was put out of the run)', () => figures()?.rejectedByVerification ?? 0);
    counterReading(registry, n('sent_bytes_total'), 'Bytes of messages sent to workers', () => figures()?.bytesSent ?? 0);
    counterReading(registry, n('received_bytes_total'), 'Bytes of messages received from workers', () => figures()?.bytesReceived ?? 0);
    let overheadsSeen = 0;
    new Histogram({
      name: n('step_overhead_seconds'),
      help: "A step's fixed cost: its wall time minus its slowest worker's compute (first and last step excluded)",
      buckets: STEP_SECONDS_BUCKETS,
      registers,
      collect() {
        const all = figures()?.stepOverheadsMs ?? [];
        for (; overheadsSeen < all.length; overheadsSeen++) this.observe(all[overheadsSeen] / 1000);
      },
    });

    const window: Array<{ samples: number; seconds: number }> = [];
    let windowSamples = 0;
    let windowSeconds = 0;
    this.observer = {
      stepApplied(r: StepRecord): void {
        steps.inc();
        samples.inc(r.samples);
        stepSeconds.observe(r.seconds);
        loss.set(r.loss);
        epoch.set(r.epoch);
        lr.set(r.lr);
        momentum.set(r.momentum);
        window.push({ samples: r.samples, seconds: r.seconds });
        windowSamples += r.samples;
        windowSeconds += r.seconds;
        if (window.length > THROUGHPUT_WINDOW_STEPS) {
          const old = window.shift() as { samples: number; seconds: number };
          windowSamples -= old.samples;
          windowSeconds -= old.seconds;
        }
        if (windowSeconds > 0) throughput.set(windowSamples / windowSeconds);
      },
      evaluated(r: EvaluationRecord): void {
        testLoss.set(r.loss);
        testAccuracy.set(r.accuracy);
      },
    };
  }

  watchPool(pool: { liveFigures(): PoolLiveFigures }): void {
    this.pool = pool;
  }
}

export interface MetricsServer {
  /** Where it answers, e.g. http://127.0.0.1:9400/metrics (the port chosen when 0 was asked for). */
  url: string;
  close(): Promise<void>;
}

/** Serves `registry` at http://ADDR/metrics (404 elsewhere, 405 for anything but GET and HEAD). */
export async function serveMetrics(registry: Registry, address: MetricsAddress): Promise<MetricsServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== METRICS_PATH) {
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' }).end(`not found: the metrics are at ${METRICS_PATH}\n`);
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain; charset=utf-8' }).end('method not allowed\n');
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'Content-Type': registry.contentType }).end(req.method === 'HEAD' ? undefined : text),
      (e: Error) => res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' }).end(`${e.message}\n`),
    );
  });
  // A scrape must never keep a finished run alive.
  server.keepAliveTimeout = 1000;
  const host = address.host.replace(/^\[|\]$/g, '');
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => {
      const why = e.code === 'EADDRINUSE' ? 'the port is in use' : e.code === 'EADDRNOTAVAIL' || e.code === 'ENOTFOUND' ? 'no such address on this machine' : e.code === 'EACCES' ? 'permission denied' : e.message;
      reject(new UserError(`--metrics ${address.host}:${address.port}: cannot listen there (${why})`));
    });
    server.listen(address.port, host, () => resolve());
  });
  const bound = server.address();
  const port = typeof bound === 'object' && bound ? bound.port : address.port;
  return {
    url: `http://${address.host}:${port}${METRICS_PATH}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
