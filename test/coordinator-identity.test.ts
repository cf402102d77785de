/**
 * The worker's identity in its hello (build, engine, model digests), with real processes: another
 * engine is refused in deterministic mode and admitted with a warning otherwise; another model, or
 * another protocol version, is always refused. A refused worker leaves at once with one line and
 * exit status 78.
 */
import assert from 'node:assert/strict';
import { cpSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { PROTOCOL_VERSION } from '../src/protocol/messages.js';
import { referenceRun, freePort, readJson, startCoordinator, startWorker, tempDir, waitFor, workerPids } from './helpers.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const RUN = ['--epochs', '1', '--train-limit', '640', '--test-limit', '100', '--log-interval', '1'];
/** A worker whose training step runs on tfjs's kernels: the same package, another engine identity. */
const LIBRARY_KERNELS = { ...process.env, MNIST_KERNELS: 'tfjs' };
const REFUSED = 78;
/** The workers' engine, on any machine (a GPU one's auto would pick webgpu); the coordinator's stays auto. */
const WASM = ['--engine', 'wasm'];

after(async () => {
  assert.ok(await waitFor(() => workerPids().length === 0, 10_000), `workers left behind: ${workerPids().join(', ')}`);
});

/**
 * A coordinator of 2 workers that starts with the first (--min-workers 1); the first is frozen
 * while `second` tries to join, so that the run cannot end before.
 */
async function withSecondWorker(extra: string[], env: NodeJS.ProcessEnv, untilJoinedOrGone: (log: () => string) => boolean) {
  const listen = `tcp://127.0.0.1:${await freePort()}`;
  const out = join(tempDir(), 'run');
  const run = startCoordinator([...RUN, ...extra, '--workers', '2', '--min-workers', '1', '--no-spawn', '--listen', listen, '--worker-timeout', '60', '--out', out]);
  const log = (): string => run.out() + run.err();
  const first = startWorker(['--connect', listen, ...WASM]);
  assert.ok(await waitFor(() => /starting with 1 of 2 workers/.test(log()), 60_000), log());
  first.child.kill('SIGSTOP');
  const second = startWorker(['--connect', listen, ...WASM], { env });
  const settled = await waitFor(() => untilJoinedOrGone(log) || second.child.exitCode !== null, 60_000);
  first.child.kill('SIGCONT');
  assert.ok(settled, log() + second.log());
  assert.equal(await run.exit, 0, log());
  return { out, log: log(), first, second };
}

test('deterministic: a worker of another engine is refused (one line, exit 78) and the run keeps its bits', async () => {
  const dir = tempDir();
  const reference = await referenceRun([...RUN, ...WASM, '--deterministic'], dir);

  const { out, log, first, second } = await withSecondWorker(['--deterministic'], LIBRARY_KERNELS, () => false);
  assert.equal(await second.exit, REFUSED, second.log());
  assert.match(
    second.log(),
    /^worker: error: coordinator refused this worker: engine wasm \(library kernels\) differs from the run's wasm \(fused kernels\): --deterministic needs one engine on every worker$/m,
  );
  assert.match(log, /refused: engine wasm \(library kernels\) differs/);
  const summary = readJson(join(out, 'summary.json'));
  assert.equal((summary.devices as { workers: unknown[] }).workers.length, 1, 'the refused worker took no part');
  assert.equal(summary.weights_sha256, reference.weights_sha256);
  assert.equal(await first.exit, 0);
});

test('not deterministic: a worker of another engine is admitted, with a warning in the log and what differs in summary.json', async () => {
  const { out, log, first, second } = await withSecondWorker([], LIBRARY_KERNELS, (l) => /joined late/.test(l()));
  assert.match(log, /admitted although its engine wasm \(library kernels\), the run's wasm \(fused kernels\)/);
  const workers = (readJson(join(out, 'summary.json')).devices as { workers: Array<{ engine: string; differs?: string[] }> }).workers;
  assert.deepEqual(
    workers.map((w) => [w.engine, w.differs]),
    [
      ['wasm (fused kernels)', undefined],
      ['wasm (library kernels)', ["engine wasm (library kernels), the run's wasm (fused kernels)"]],
    ],
  );
  assert.equal(await first.exit, 0);
  assert.equal(await second.exit, 0, second.log());
});

/** A copy of this build (dist/src) beside the project's package.json and node_modules, with `patch` applied to one file. */
function otherBuild(file: string, from: string, to: string): string {
  const root = tempDir('mnist-build-');
  cpSync(join(REPO, 'dist', 'src'), join(root, 'dist', 'src'), { recursive: true });
  cpSync(join(REPO, 'package.json'), join(root, 'package.json'));
  symlinkSync(join(REPO, 'node_modules'), join(root, 'node_modules'), 'dir');
  const path = join(root, 'dist', 'src', file);
  const text = readFileSync(path, 'utf8');
  assert.ok(text.includes(from), `${file} holds ${from}`);
  writeFileSync(path, text.replace(from, to));
  return join(root, 'dist', 'src', 'cli', 'worker.js');
}

test('a worker whose model differs, or that speaks another protocol version, is refused in any mode (one line, exit 78)', async () => {
  const listen = `tcp://127.0.0.1:${await freePort()}`;
  const out = join(tempDir(), 'run');
  const run = startCoordinator([...RUN, '--workers', '1', '--no-spawn', '--listen', listen, '--out', out]);
  const log = (): string => run.out() + run.err();
  // The same model name, another dropout rate: other gradients.
  const otherModel = startWorker(['--connect', listen, ...WASM], { script: otherBuild('models/net.js', "{ name: 'fc1_drop', p: 0.5, units: 50 }", "{ name: 'fc1_drop', p: 0.25, units: 50 }") });
  assert.equal(await otherModel.exit, REFUSED, otherModel.log());
  assert.match(otherModel.log(), /^worker: error: coordinator refused this worker: model net differs: this worker's digest [0-9a-f]{16}, the coordinator's [0-9a-f]{16} \(worker build .*, coordinator build .*\)$/m);
  const olderProtocol = startWorker(['--connect', listen, ...WASM], { script: otherBuild('protocol/messages.js', `PROTOCOL_VERSION = ${PROTOCOL_VERSION};`, `PROTOCOL_VERSION = ${PROTOCOL_VERSION - 1};`) });
  assert.equal(await olderProtocol.exit, REFUSED, olderProtocol.log());
  assert.match(olderProtocol.log(), new RegExp(`^worker: error: coordinator refused this worker: protocol version ${PROTOCOL_VERSION - 1}, coordinator speaks ${PROTOCOL_VERSION}$`, 'm'));
  // Neither counted: the run waits for a worker it can use, and ends with it.
  const good = startWorker(['--connect', listen, ...WASM]);
  assert.equal(await run.exit, 0, log());
  assert.equal(await good.exit, 0, good.log());
  assert.equal((readJson(join(out, 'summary.json')).devices as { workers: unknown[] }).workers.length, 1);
});
