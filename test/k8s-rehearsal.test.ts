/**
 * A rehearsal of the Kubernetes deployment on this machine: the Jobs that `kubectl apply -k k8s/`
 * creates, run as local processes. Each pod's container command and args come from the rendered
 * manifests, with only what a cluster provides put in by hand:
 *   - the image's programs: /app/... is this repository, and `coordinator` / `worker` on the PATH
 *     run dist/src/cli/*.js (as the image's /usr/local/bin links do);
 *   - the Secret (`kubectl create secret generic mnist-keys --from-file=DIR` of a `coordinator
 *     keygen` DIR), the PersistentVolumeClaim and the emptyDirs: folders, each pod seeing only the
 *     Secret's items its volume names;
 *   - the Service's DNS name and the coordinator's ports: 127.0.0.1 and a free port for each;
 *   - the GPU each worker pod is given: this machine may have none, so the workers' engine pin
 *     (`--engine webgpu`) is left out, and the default, `--engine auto`, picks what it has.
 * Small-data flags are appended to the coordinator's args, as an overlay may append flags.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { COORDINATOR, WORKER, freePort, readJson, runCli, tempDir, waitFor } from './helpers.js';
import { K8S, type KObject, REPO, findObject, needsKustomize, render } from './k8s-helpers.js';

/** The rehearsal runs the rendered Jobs: without kubectl's kustomize it skips (and fails under CI). */
const KUSTOMIZE = needsKustomize();

// Small data, and a short --worker-timeout: a worker that misses the coordinator's last message
// leaves after 2 × --worker-timeout of silence (the manifests' 30 s would make that a minute).
const SPEED = ['--worker-timeout', '5'];
const SMALL = ['--epochs', '1', '--train-limit', '640', '--test-limit', '200', ...SPEED];
const started: ChildProcess[] = [];

after(() => {
  for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});


/** PIDs of live processes whose command line mentions `marker`. */
function pidsMentioning(marker: string): number[] {
  try {
    return execFileSync('pgrep', ['-f', marker], { encoding: 'utf8' }).split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

interface Cluster {
  dir: string;
  n: number;
  coordinatorJob: KObject;
  workerJob: KObject;
  /** Starts one pod of a Job; `extraArgs` go after the container's args. */
  startPod(job: KObject, name: string, extraArgs?: string[], env?: Record<string, string>): Pod;
  runs: string;
  out: string;
}

interface Pod {
  name: string;
  /** A worker pod's completion index (JOB_COMPLETION_INDEX). */
  index?: number;
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** A container's args without `--engine NAME`: the engine of the GPU a cluster's node provides. */
function withoutEnginePin(args: string[]): string[] {
  const i = args.indexOf('--engine');
  return i < 0 ? args : [...args.slice(0, i), ...args.slice(i + 2)];
}

/** A stand-in for the cluster: rendered objects, the Secret, the volumes and the Service's name. */
async function makeCluster(): Promise<Cluster> {
  const objects = render(K8S);
  const coordinatorJob = findObject(objects, 'Job', 'mnist-coordinator');
  const workerJob = findObject(objects, 'Job', 'mnist-worker');
  const service = findObject(objects, 'Service', 'mnist-coordinator');
  const n = workerJob.spec.parallelism as number;
  assert.equal(workerJob.spec.completions, n);
  // What the rehearsal leaves out: the workers' engine pin, and nothing of the coordinator's.
  const workerArgs = workerJob.spec.template.spec.containers[0].args as string[];
  assert.deepEqual(workerArgs.slice(workerArgs.indexOf('--engine')), ['--engine', 'webgpu']);
  assert.ok(!(coordinatorJob.spec.template.spec.containers[0].args as string[]).includes('--engine'));

  const dir = tempDir('mnist-k8s-rehearsal-');
  // The image's programs on the PATH.
  const bin = join(dir, 'image-bin');
  mkdirSync(bin);
  for (const [name, script] of [['coordinator', COORDINATOR], ['worker', WORKER]]) {
    writeFileSync(join(bin, name), `#!/bin/sh\nexec "${process.execPath}" "${script}" "$@"\n`);
    chmodSync(join(bin, name), 0o755);
  }
  // The Secret, as `kubectl create secret generic mnist-keys --from-file=DIR` makes it.
  const keygen = join(dir, 'keygen');
  const made = await runCli(COORDINATOR, ['keygen', '--out', keygen]);
  assert.equal(made.code, 0, made.stderr);
  const secretName = 'mnist-keys';
  const secret: Record<string, Buffer> = {};
  for (const f of ['coordinator.public', 'coordinator.secret', 'worker.public', 'worker.secret']) secret[f] = readFileSync(join(keygen, f));
  // The PersistentVolumeClaim: one folder that outlives the pods.
  const claims = new Map<string, string>();
  // The Service: each of its ports leads to a coordinator's container port, here a free port each
  // (ZeroMQ's tcp://HOST:PORT for --listen and --connect, HOST:PORT for --metrics).
  const containerPorts = coordinatorJob.spec.template.spec.containers[0].ports as KObject[];
  const addresses = new Map<string, string>();
  for (const p of service.spec.ports as KObject[]) {
    const target = containerPorts.find((c) => c.name === p.targetPort || c.containerPort === p.targetPort);
    assert.ok(target, `Service port ${p.port}: no such container port`);
    const port = await freePort();
    addresses.set(`tcp://${service.metadata.name}:${p.port}`, `tcp://127.0.0.1:${port}`);
    addresses.set(`tcp://0.0.0.0:${target.containerPort}`, `tcp://127.0.0.1:${port}`);
    addresses.set(`0.0.0.0:${target.containerPort}`, `127.0.0.1:${port}`);
  }

  let pods = 0;
  const startPod = (job: KObject, name: string, extraArgs: string[] = [], extraEnv: Record<string, string> = {}): Pod => {
    const podDir = join(dir, `pod-${++pods}-${name}`);
    const spec = job.spec.template.spec;
    assert.equal(spec.containers.length, 1);
    const container = spec.containers[0];
    // Volumes.
    const volumes = new Map<string, string>();
    for (const v of spec.volumes as KObject[]) {
      const path = join(podDir, 'volumes', v.name);
      if (v.secret) {
        assert.equal(v.secret.secretName, secretName);
        mkdirSync(path, { recursive: true });
        for (const item of v.secret.items as KObject[]) {
          assert.ok(secret[item.key], `the Secret has no key ${item.key}`);
          writeFileSync(join(path, item.path), secret[item.key], { mode: v.secret.defaultMode ?? 0o644 });
        }
      } else if (v.persistentVolumeClaim) {
        const claim = v.persistentVolumeClaim.claimName as string;
        if (!claims.has(claim)) {
          claims.set(claim, join(dir, 'claims', claim));
          mkdirSync(join(dir, 'claims', claim), { recursive: true });
        }
        volumes.set(v.name, claims.get(claim) as string);
        continue;
      } else if (v.emptyDir) mkdirSync(path, { recursive: true });
      else assert.fail(`volume ${v.name}: a kind the rehearsal does not provide`);
      volumes.set(v.name, path);
    }
    const mounts = (container.volumeMounts as KObject[])
      .map((m) => ({ path: m.mountPath as string, local: volumes.get(m.name) as string }))
      .sort((a, b) => b.path.length - a.path.length);
    const local = (value: string): string => {
      for (const [from, to] of addresses) if (value === from) return to;
      for (const m of mounts) if (value === m.path || value.startsWith(`${m.path}/`)) return m.local + value.slice(m.path.length);
      if (value.startsWith('/app/')) return join(REPO, value.slice('/app/'.length));
      return value;
    };
    const command = (container.command as string[]).map(local);
    const args = [...withoutEnginePin((container.args ?? []) as string[]).map(local), ...extraArgs];
    const env: Record<string, string> = { ...(process.env as Record<string, string>), PATH: `${bin}:${process.env.PATH}` };
    for (const e of (container.env ?? []) as KObject[]) env[e.name] = local(String(e.value));
    Object.assign(env, extraEnv);
    const child = spawn(command[0], [...command.slice(1), ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    started.push(child);
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    const index = extraEnv.JOB_COMPLETION_INDEX === undefined ? undefined : Number(extraEnv.JOB_COMPLETION_INDEX);
    return { name, index, child, stdout: () => stdout, stderr: () => stderr, exit };
  };

  // Where the coordinator's --out lands: its PersistentVolumeClaim's folder.
  const pod = coordinatorJob.spec.template.spec;
  const claimVolume = (pod.volumes as KObject[]).find((v) => v.persistentVolumeClaim);
  const runsMount = (pod.containers[0].volumeMounts as KObject[]).find((m) => m.name === claimVolume?.name);
  assert.ok(claimVolume && runsMount);
  const args = pod.containers[0].args as string[];
  const outArg = args[args.lastIndexOf('--out') + 1];
  assert.ok(outArg.startsWith(`${runsMount.mountPath}/`));
  const runs = join(dir, 'claims', claimVolume.persistentVolumeClaim.claimName);
  const out = runs + outArg.slice(runsMount.mountPath.length);
  return { dir, n, coordinatorJob, workerJob, startPod, runs, out };
}

/** The worker Job's N pods, each with its completion index. */
function startWorkers(cluster: Cluster): Pod[] {
  return Array.from({ length: cluster.n }, (_, i) => startWorker(cluster, i, `worker-${i}`));
}

/** One pod of the worker Job, for completion index `index`. */
function startWorker(cluster: Cluster, index: number, name: string): Pod {
  return cluster.startPod(cluster.workerJob, name, [], { JOB_COMPLETION_INDEX: String(index) });
}

/**
 * Whether the worker Job's success criteria are met, as the Job controller judges them from the
 * indexes that succeeded: its successPolicy's rules (succeededCount, within succeededIndexes
 * where given), or without one, every index.
 */
function successCriteriaMet(job: KObject, succeeded: Set<number>): boolean {
  const rules = (job.spec.successPolicy?.rules ?? []) as KObject[];
  if (rules.length === 0) return succeeded.size >= (job.spec.completions as number);
  return rules.some((rule) => {
    const within = rule.succeededIndexes === undefined ? undefined : new Set(String(rule.succeededIndexes).split(',').flatMap((r) => {
      const [a, b] = r.split('-').map(Number);
      return Array.from({ length: (b ?? a) - a + 1 }, (_, k) => a + k);
    }));
    const count = [...succeeded].filter((i) => within === undefined || within.has(i)).length;
    return rule.succeededCount !== undefined ? count >= rule.succeededCount : within !== undefined && count >= within.size;
  });
}

/** Waits for a pod to exit, failing (and killing it) after `ms`. */
async function exited(pod: Pod, ms: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      pod.child.kill('SIGKILL');
      reject(new Error(`${pod.name} still running after ${ms / 1000} s\n${pod.stdout()}\n${pod.stderr()}`));
    }, ms);
  });
  try {
    return await Promise.race([pod.exit, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The worker Job finishing as the Job controller finishes it: once the indexes whose pod exited 0
 * meet its success criteria, the pods still running are stopped (SIGTERM, then SIGKILL after the
 * pod's terminationGracePeriodSeconds, which the test does not wait for: each must be gone by
 * then). With `expectCode` other than 0 (the coordinator stopped early), every pod must end by
 * itself with that code. Returns the names of the pods it stopped; fails if any pod failed.
 */
async function workerJobFinished(cluster: Cluster, workers: Pod[], ms: number, expectCode = 0): Promise<string[]> {
  const running = (w: Pod): boolean => w.child.exitCode === null && w.child.signalCode === null;
  const succeeded = (): Set<number> => new Set(workers.filter((w) => w.child.exitCode === 0).map((w) => w.index as number));
  const done = (): boolean => (expectCode === 0 && successCriteriaMet(cluster.workerJob, succeeded())) || !workers.some(running);
  assert.ok(await waitFor(done, ms), `the worker Job did not finish\n${describe(workers)}`);
  const terminated: string[] = [];
  for (const w of workers) {
    if (running(w)) {
      w.child.kill('SIGTERM');
      terminated.push(w.name);
    }
  }
  const grace = (cluster.workerJob.spec.template.spec.terminationGracePeriodSeconds as number) * 1000;
  for (const w of workers) {
    const { code } = await exited(w, terminated.includes(w.name) ? grace : 15_000);
    assert.ok(code === expectCode || terminated.includes(w.name), `${w.name}: exit ${code}, expected ${expectCode}\n${describe(workers)}`);
  }
  return terminated;
}

function describe(pods: Pod[]): string {
  return pods.map((p) => `--- ${p.name}\n${p.stdout()}${p.stderr()}`).join('\n');
}

test('rehearsal: the rendered Jobs train together, N workers, and leave the model on the volume', KUSTOMIZE, async (t) => {
  const cluster = await makeCluster();
  const coordinator = cluster.startPod(cluster.coordinatorJob, 'coordinator', SMALL);
  const workers = startWorkers(cluster);
  const all = [coordinator, ...workers];
  const result = await exited(coordinator, 180_000).catch((e: Error) => assert.fail(`${e.message}\n${describe(all)}`));
  assert.equal(result.code, 0, describe(all));
  const terminated = await workerJobFinished(cluster, workers, 30_000);
  if (terminated.length > 0) t.diagnostic(`terminated by the worker Job's success policy: ${terminated.join(', ')}`);

  const summary = readJson(join(cluster.out, 'summary.json'));
  assert.equal(summary.workers, cluster.n);
  assert.equal(summary.worker_failures, 0);
  assert.equal(summary.epochs, 1);
  assert.ok(existsSync(join(cluster.out, 'model', 'model.json')), 'the model is on the volume');
  assert.ok(existsSync(join(cluster.out, 'checkpoint.bin')));
  assert.match(coordinator.stdout(), new RegExp(`waiting for ${cluster.n} worker${cluster.n === 1 ? '' : 's'} on`));
  assert.doesNotMatch(coordinator.stderr(), /CURVE handshake|refused/, 'the keys fit');
  for (const w of workers) assert.match(w.stdout(), /joined: training net/);

  // Nothing is left running.
  assert.ok(await waitFor(() => pidsMentioning(cluster.dir).length === 0, 5000), `left behind: ${pidsMentioning(cluster.dir).join(', ')}`);
});

test('rehearsal: an evicted coordinator (SIGTERM) checkpoints, and its next pod resumes the run', KUSTOMIZE, async () => {
  const cluster = await makeCluster();
  const flags = ['--epochs', '1', '--train-limit', '1280', '--test-limit', '200', '--log-interval', '1', ...SPEED];
  const first = cluster.startPod(cluster.coordinatorJob, 'coordinator', flags);
  const workers = startWorkers(cluster);
  const ready = await waitFor(() => /Train Epoch: 1 \[320\//.test(first.stdout()) || first.child.exitCode !== null, 120_000);
  assert.ok(ready && first.child.exitCode === null, `training did not start\n${describe([first, ...workers])}`);
  // What the kubelet does to an evicted pod: SIGTERM to the container's process.
  first.child.kill('SIGTERM');
  const evicted = await exited(first, 60_000);
  assert.equal(evicted.code, 143, describe([first, ...workers]));
  assert.ok(existsSync(join(cluster.out, 'checkpoint.bin')), 'checkpointed before it exited');
  // Told that the run stopped early, the workers stay: they say hello again until a coordinator
  // takes them back on the same Service.
  const waiting = await waitFor(() => workers.every((w) => /saying hello again/.test(w.stdout() + w.stderr()) && w.child.exitCode === null), 30_000);
  assert.ok(waiting, `the workers wait to rejoin\n${describe([first, ...workers])}`);

  // The Job's next pod: the same command line on the same volume; the same worker pods rejoin it.
  const second = cluster.startPod(cluster.coordinatorJob, 'coordinator-2', flags);
  const result = await exited(second, 180_000).catch((e: Error) => assert.fail(`${e.message}\n${describe([second, ...workers])}`));
  assert.equal(result.code, 0, describe([second, ...workers]));
  assert.match(second.stderr(), /holds a checkpoint: continuing that run \(--resume\)/);
  assert.match(second.stdout(), /resuming from .*checkpoint\.bin at epoch 1, step [1-9]/);
  // settings.yaml's --min-workers lets the resumed pod go on with the first worker back; one that is
  // not back before the run ends is stopped as the worker Job completes, never failed.
  const rejoined = workers.filter((w) => /rejoined the coordinator/.test(w.stdout() + w.stderr()));
  assert.ok(rejoined.length >= 1, `no worker rejoined\n${describe([second, ...workers])}`);
  const stopped = await workerJobFinished(cluster, workers, 30_000);
  for (const w of workers) assert.ok(rejoined.includes(w) || stopped.includes(w.name), `${w.name} neither rejoined nor was stopped\n${describe(workers)}`);

  const summary = readJson(join(cluster.out, 'summary.json'));
  assert.equal(summary.workers, cluster.n);
  assert.equal(summary.steps, 1280 / 64);
  assert.ok(await waitFor(() => pidsMentioning(cluster.dir).length === 0, 5000), `left behind: ${pidsMentioning(cluster.dir).join(', ')}`);
});

test('rehearsal: a worker pod crashes; the run goes on without it, and its replacement, started after the run ended, is stopped as the worker Job completes', KUSTOMIZE, async () => {
  const cluster = await makeCluster();
  const flags = ['--epochs', '1', '--train-limit', '1280', '--test-limit', '200', '--log-interval', '1', ...SPEED];
  const coordinator = cluster.startPod(cluster.coordinatorJob, 'coordinator', flags);
  const workers = startWorkers(cluster);
  const ready = await waitFor(() => /Train Epoch: 1 \[320\//.test(coordinator.stdout()) || coordinator.child.exitCode !== null, 120_000);
  assert.ok(ready && coordinator.child.exitCode === null, `training did not start\n${describe([coordinator, ...workers])}`);
  // Index 0's pod crashes (out of memory, a lost node: SIGKILL). The Job would start a replacement
  // at once; this one is late (scheduling, the image pull, the Job's backoff) and starts only
  // after the run ended.
  workers[0].child.kill('SIGKILL');
  const result = await exited(coordinator, 180_000).catch((e: Error) => assert.fail(`${e.message}\n${describe([coordinator, ...workers])}`));
  assert.equal(result.code, 0, describe([coordinator, ...workers]));
  const summary = readJson(join(cluster.out, 'summary.json'));
  assert.equal(summary.worker_failures, 1);
  assert.equal(summary.steps, 1280 / 64);

  const replacement = startWorker(cluster, 0, 'worker-0-replacement');
  const alive = await waitFor(() => /connecting to/.test(replacement.stdout()) || replacement.child.exitCode !== null, 30_000);
  assert.ok(alive && replacement.child.exitCode === null, `the replacement waits for a coordinator (--connect-timeout)\n${describe([replacement])}`);
  // The other indexes were told that the run is finished (exit 0): the success policy is met
  // without index 0, and the replacement is stopped within its grace period instead of failing
  // index 0 (no coordinator within --connect-timeout: exit 1) after the run succeeded.
  const stopped = await workerJobFinished(cluster, [...workers.slice(1), replacement], 30_000);
  assert.deepEqual(stopped, ['worker-0-replacement']);
  assert.ok(await waitFor(() => pidsMentioning(cluster.dir).length === 0, 5000), `left behind: ${pidsMentioning(cluster.dir).join(', ')}`);
});
