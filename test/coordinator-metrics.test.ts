/**
 * `--metrics ADDR`: a real coordinator with spawned workers on an MNIST subset answers /metrics in
 * the Prometheus text format while it trains, and its figures move; what it refuses.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { RunMetrics } from '../src/coordinator/metrics.js';
import { COORDINATOR, freePort, readJson, runCli, startCoordinator, tempDir, waitFor, workerPids } from './helpers.js';
import { type KObject, REPO } from './k8s-helpers.js';

after(async () => {
  assert.ok(await waitFor(() => workerPids().length === 0, 5000), `workers left behind: ${workerPids().join(', ')}`);
});

interface Scrape {
  types: Map<string, string>;
  /** Sample lines: `name{labels}` → value. */
  values: Map<string, number>;
}

/**
 * The text format as a scraper reads it: `# TYPE name type` lines and `name{labels} value` samples
 * (a few lines suffice for what prom-client writes; no parser package is worth it for a test).
 */
function parseExposition(text: string): Scrape {
  const types = new Map<string, string>();
  const values = new Map<string, number>();
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) types.set(type[1], type[2]);
    if (line === '' || line.startsWith('#')) continue;
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    assert.ok(sample, `a sample line: ${line}`);
    values.set(sample[1], Number(sample[2]));
  }
  return { types, values };
}

async function scrape(url: string): Promise<Scrape> {
  const res = await fetch(url);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return parseExposition(await res.text());
}

function value(s: Scrape, name: string): number {
  const v = s.values.get(name);
  assert.ok(v !== undefined, `${name} is exported`);
  return v;
}

const EXPECTED_TYPES: Record<string, string> = {
  mnist_ddp_steps_total: 'counter',
  mnist_ddp_samples_total: 'counter',
  mnist_ddp_train_samples_per_second: 'gauge',
  mnist_ddp_step_duration_seconds: 'histogram',
  mnist_ddp_step_overhead_seconds: 'histogram',
  mnist_ddp_train_loss: 'gauge',
  mnist_ddp_test_loss: 'gauge',
  mnist_ddp_test_accuracy_ratio: 'gauge',
  mnist_ddp_epoch: 'gauge',
  mnist_ddp_learning_rate: 'gauge',
  mnist_ddp_momentum: 'gauge',
  mnist_ddp_workers_expected: 'gauge',
  mnist_ddp_workers_connected: 'gauge',
  mnist_ddp_workers_required: 'gauge',
  mnist_ddp_worker_failures_total: 'counter',
  mnist_ddp_rejected_messages_total: 'counter',
  mnist_ddp_verified_shards_total: 'counter',
  mnist_ddp_rejected_by_verification_total: 'counter',
  mnist_ddp_sent_bytes_total: 'counter',
  mnist_ddp_received_bytes_total: 'counter',
  // The process's default metrics (prom-client's collectDefaultMetrics).
  process_cpu_seconds_total: 'counter',
  process_resident_memory_bytes: 'gauge',
  nodejs_eventloop_lag_seconds: 'gauge',
  nodejs_heap_size_used_bytes: 'gauge',
};

const SUBSET = ['--train-limit', '1024', '--test-limit', '100', '--deterministic'];

test('a run with --metrics answers /metrics while it trains, and the figures move; the weights are those of a run without it', async () => {
  const dir = tempDir();
  const port = await freePort();
  const url = `http://127.0.0.1:${port}/metrics`;
  // Long enough (12 epochs of 16 steps) to be scraped, lose a worker and see it replaced mid-run.
  const run = startCoordinator([...SUBSET, '--epochs', '12', '--workers', '2', '--metrics', `127.0.0.1:${port}`, '--out', join(dir, 'metrics')]);
  try {
    // Training has begun once a step is counted (before that, the server may not listen yet).
    let first: Scrape | undefined;
    const trainingStarted = async (): Promise<boolean> => {
      for (const end = Date.now() + 120_000; Date.now() < end; await new Promise((r) => setTimeout(r, 100))) {
        if (run.child.exitCode !== null) return false;
        try {
          const s = await scrape(url);
          if ((s.values.get('mnist_ddp_steps_total') ?? 0) > 0) {
            first = s;
            return true;
          }
        } catch {
          // not listening yet
        }
      }
      return false;
    };
    assert.ok(await trainingStarted(), `no step counted: ${run.err()}`);
    assert.ok(first);
    for (const [name, type] of Object.entries(EXPECTED_TYPES)) assert.equal(first.types.get(name), type, `${name} is a ${type}`);
    for (const name of first.types.keys()) if (first.types.get(name) === 'counter') assert.match(name, /_total$/, `counter ${name} ends in _total`);
    assert.equal(value(first, 'mnist_ddp_workers_expected'), 2);
    assert.equal(value(first, 'mnist_ddp_workers_connected'), 2);
    assert.equal(value(first, 'mnist_ddp_workers_required'), 1, 'without --min-workers, a step needs one worker');
    assert.equal(value(first, 'mnist_ddp_learning_rate'), 0.01);
    assert.equal(value(first, 'mnist_ddp_momentum'), 0.5);
    assert.ok(value(first, 'mnist_ddp_epoch') >= 1);
    assert.ok(Number.isFinite(value(first, 'mnist_ddp_train_loss')));
    assert.ok(value(first, 'mnist_ddp_train_samples_per_second') > 0);
    assert.ok(value(first, 'process_resident_memory_bytes') > 0);

    // A worker dies: the failure is counted, its replacement joins, and the counters keep rising.
    const [victim] = workerPids();
    assert.ok(victim, 'the spawned workers are running');
    process.kill(victim, 'SIGKILL');
    let second: Scrape | undefined;
    const replaced = await (async (): Promise<boolean> => {
      for (const end = Date.now() + 120_000; Date.now() < end; await new Promise((r) => setTimeout(r, 200))) {
        const s = await scrape(url).catch(() => undefined);
        if (!s) return false; // the run is over
        if (s.values.get('mnist_ddp_worker_failures_total') === 1 && s.values.get('mnist_ddp_workers_connected') === 2 && (s.values.get('mnist_ddp_epoch') ?? 0) > 1) {
          second = s;
          return true;
        }
      }
      return false;
    })();
    assert.ok(replaced && second, `the lost worker is counted and replaced: ${run.err()}`);
    for (const counter of ['mnist_ddp_steps_total', 'mnist_ddp_samples_total', 'mnist_ddp_sent_bytes_total', 'mnist_ddp_received_bytes_total', 'process_cpu_seconds_total']) {
      assert.ok(value(second, counter) > value(first, counter), `${counter} rose: ${value(first, counter)} → ${value(second, counter)}`);
    }
    for (const histogram of ['mnist_ddp_step_duration_seconds', 'mnist_ddp_step_overhead_seconds']) {
      assert.ok(value(second, `${histogram}_count`) > value(first, `${histogram}_count`), `${histogram} observed more steps`);
      assert.equal(value(second, `${histogram}_bucket{le="+Inf"}`), value(second, `${histogram}_count`));
    }
    assert.equal(value(second, 'mnist_ddp_samples_total'), 64 * value(second, 'mnist_ddp_steps_total'), 'a step is a batch of 64');
    // An evaluation has happened (epoch 1 is over).
    const accuracy = value(second, 'mnist_ddp_test_accuracy_ratio');
    assert.ok(accuracy > 0 && accuracy <= 1, `test accuracy ${accuracy}`);
    assert.ok(value(second, 'mnist_ddp_test_loss') > 0);
    assert.equal(value(second, 'mnist_ddp_rejected_messages_total'), 0);

    const notFound = await fetch(`http://127.0.0.1:${port}/`);
    assert.equal(notFound.status, 404);

    assert.equal(await run.exit, 0, run.err());
  } finally {
    run.child.kill('SIGKILL');
  }
  // The server ends with the run.
  await assert.rejects(fetch(url));

  // Observing changes nothing: the same weights as a single-node run without --metrics.
  const single = await runCli(COORDINATOR, [...SUBSET, '--epochs', '12', '--workers', '0', '--out', join(dir, 'single')]);
  assert.equal(single.code, 0, single.stderr);
  const withMetrics = readJson(join(dir, 'metrics', 'summary.json'));
  assert.equal(withMetrics.worker_failures, 1);
  assert.equal(withMetrics.weights_sha256, readJson(join(dir, 'single', 'summary.json')).weights_sha256);
});

/** One line on stderr naming the problem, and the exit status. */
async function refused(args: string[], code: number, pattern: RegExp): Promise<void> {
  const r = await runCli(COORDINATOR, ['--workers', '0', '--train-limit', '64', '--test-limit', '10', '--epochs', '1', '--out', join(tempDir(), 'run'), ...args]);
  assert.equal(r.code, code, r.stderr);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, pattern);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
}

test('--metrics beyond loopback needs what --listen needs (--keys or --insecure); bad addresses and a busy port get one line', async () => {
  await refused(['--metrics', '0.0.0.0:9400'], 2, /^coordinator: error: --metrics 0\.0\.0\.0:9400 reaches beyond this machine: give --keys DIR .*, or --insecure$/m);
  await refused(['--metrics', '9400'], 2, /--metrics 9400: expected HOST:PORT/);
  const busy = createServer();
  await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
  try {
    const port = (busy.address() as { port: number }).port;
    await refused(['--metrics', `127.0.0.1:${port}`], 1, new RegExp(`--metrics 127\\.0\\.0\\.1:${port}: cannot listen there \\(the port is in use\\)`));
  } finally {
    busy.close();
  }
  // With --insecure it is allowed: the run trains and exits.
  const r = await runCli(COORDINATOR, ['--workers', '0', '--train-limit', '64', '--test-limit', '10', '--epochs', '1', '--metrics', '0.0.0.0:0', '--insecure', '--out', join(tempDir(), 'run')]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout + r.stderr, /Prometheus metrics at http:\/\/0\.0\.0\.0:\d+\/metrics/);
});

/** PromQL words that are not metric names: aggregation modifiers, set operators, `offset`, `bool`. */
const PROMQL_WORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'offset', 'bool', 'and', 'or', 'unless', 'inf', 'nan']);

/** The metric names a PromQL expression reads: identifiers that are not functions, labels or keywords. */
function metricsIn(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""') // strings
    .replace(/\{[^}]*\}/g, '') // label matchers
    .replace(/\[[^\]]*\]/g, '') // ranges ([$__rate_interval])
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ''); // label lists
  const names: string[] = [];
  for (const m of stripped.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const isCall = /^\s*\(/.test(stripped.slice((m.index ?? 0) + m[0].length));
    if (!isCall && !PROMQL_WORDS.has(m[0].toLowerCase())) names.push(m[0]);
  }
  return names;
}

test('deploy/grafana-dashboard.json: a Grafana dashboard whose every query reads metrics the coordinator exports', async () => {
  // What a coordinator with --metrics exports (histograms as their _bucket, _sum and _count series).
  const exported = new Set<string>();
  for (const [name, type] of parseExposition(await new RunMetrics().registry.metrics()).types) {
    exported.add(name);
    if (type === 'histogram' || type === 'summary') for (const suffix of ['_bucket', '_sum', '_count']) exported.add(`${name}${suffix}`);
  }
  for (const name of Object.keys(EXPECTED_TYPES)) assert.ok(exported.has(name), `${name} is exported`);

  const dashboard = readJson<{ uid: string; title: string; schemaVersion: number; panels: KObject[]; templating: { list: KObject[] } }>(join(REPO, 'deploy', 'grafana-dashboard.json'));
  assert.ok(dashboard.uid && dashboard.title && dashboard.schemaVersion >= 36, 'a dashboard JSON model');
  assert.equal(new Set(dashboard.panels.map((p) => p.id)).size, dashboard.panels.length, 'panel ids are unique');
  const used = new Set<string>();
  for (const panel of dashboard.panels) {
    assert.equal(panel.datasource?.type, 'prometheus', panel.title);
    assert.ok(panel.gridPos && panel.targets?.length > 0, `${panel.title}: placed, with queries`);
    for (const target of panel.targets as Array<{ expr: string; refId: string }>) {
      const names = metricsIn(target.expr);
      assert.ok(names.length > 0, `${panel.title}: ${target.expr} reads a metric`);
      for (const name of names) {
        assert.ok(exported.has(name), `${panel.title}: ${target.expr} reads ${name}, which the coordinator does not export`);
        used.add(name);
      }
    }
  }
  for (const variable of dashboard.templating.list.filter((v) => v.type === 'query')) {
    const m = /^label_values\((\w+),\s*(\w+)\)$/.exec(variable.query?.query ?? variable.query);
    assert.ok(m && exported.has(m[1]), `variable ${variable.name}: ${JSON.stringify(variable.query)}`);
  }
  // What it shows: throughput, step time and overhead, loss and accuracy, workers and failures.
  for (const name of [
    'mnist_ddp_train_samples_per_second', 'mnist_ddp_samples_total', 'mnist_ddp_step_duration_seconds_bucket', 'mnist_ddp_step_overhead_seconds_bucket',
    'mnist_ddp_train_loss', 'mnist_ddp_test_loss', 'mnist_ddp_test_accuracy_ratio', 'mnist_ddp_workers_connected', 'mnist_ddp_worker_failures_total',
  ]) assert.ok(used.has(name), `the dashboard shows ${name}`);
  // The check itself catches a misspelt metric and skips functions, labels and ranges.
  assert.deepEqual(metricsIn('histogram_quantile(0.9, sum by (le) (rate(mnist_ddp_step_seconds_bucket{instance=~"$instance"}[$__rate_interval])))'), ['mnist_ddp_step_seconds_bucket']);
  assert.deepEqual(metricsIn('rate(a_total[5m]) / on (job) b'), ['a_total', 'b']);
});
