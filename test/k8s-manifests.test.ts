/**
 * k8s/: renders with kustomize (`kubectl kustomize`, offline), every object passes Kubernetes'
 * schemas, and the deployment's invariants hold.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  K8S,
  type KObject,
  REPO,
  containersOf,
  findObject,
  needsKustomize,
  objectId,
  parseYamlFile,
  render,
  schemaProblems,
} from './k8s-helpers.js';
import { COORDINATOR, WORKER, tempDir } from './helpers.js';

const OVERLAYS = {
  gpu: join(K8S, 'overlays', 'gpu'),
  'gpu-tfjs-node-gpu': join(K8S, 'overlays', 'gpu-tfjs-node-gpu'),
  cpu: join(K8S, 'overlays', 'cpu'),
} as const;
type Overlay = keyof typeof OVERLAYS;
/** Every test here renders k8s/: without kubectl's kustomize they skip (and fail under CI). */
const KUSTOMIZE = needsKustomize();
const rendered: Record<Overlay, KObject[]> = KUSTOMIZE.skip
  ? { gpu: [], 'gpu-tfjs-node-gpu': [], cpu: [] }
  : { gpu: render(OVERLAYS.gpu), 'gpu-tfjs-node-gpu': render(OVERLAYS['gpu-tfjs-node-gpu']), cpu: render(OVERLAYS.cpu) };
/** The release the images are tagged with: package.json's version. */
const VERSION = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
/** The GPU overlays: the image each runs and the engine its workers pin. */
const GPU_OVERLAYS = [
  { overlay: 'gpu', image: `mnist-ddp:${VERSION}-webgpu`, engine: 'webgpu' },
  { overlay: 'gpu-tfjs-node-gpu', image: `mnist-ddp:${VERSION}-tfjs-node-gpu`, engine: 'tfjs-node-gpu' },
] as const;
const SECRET_NAME = 'mnist-keys';

function byId(objects: KObject[]): KObject[] {
  return [...objects].sort((a, b) => objectId(a).localeCompare(objectId(b)));
}

function settings(dir = K8S): Record<string, string> {
  const [configMap] = parseYamlFile(join(dir, 'base', 'settings.yaml'));
  return configMap.data as Record<string, string>;
}

function settingsWorkers(dir = K8S): number {
  return Number(settings(dir).workers);
}

/** A copy of k8s/ whose settings.yaml has `values` instead. */
function k8sCopyWith(values: Record<string, string>): string {
  const copy = join(tempDir('mnist-k8s-'), 'k8s');
  cpSync(K8S, copy, { recursive: true });
  const file = join(copy, 'base', 'settings.yaml');
  let text = readFileSync(file, 'utf8');
  for (const [key, value] of Object.entries(values)) {
    const line = new RegExp(`^(  ${key}: )"[^"]*"$`, 'm');
    assert.match(text, line, `settings.yaml sets ${key}`);
    text = text.replace(line, `$1"${value}"`);
  }
  writeFileSync(file, text);
  return copy;
}

function jobs(objects: KObject[]): { coordinator: KObject; worker: KObject; service: KObject } {
  return {
    coordinator: findObject(objects, 'Job', 'mnist-coordinator'),
    worker: findObject(objects, 'Job', 'mnist-worker'),
    service: findObject(objects, 'Service', 'mnist-coordinator'),
  };
}

/** The value after `flag` in an argument list. */
function flagValue(args: string[], flag: string): string | undefined {
  const i = args.lastIndexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
}

const QUANTITY_SUFFIX: Record<string, number> = { m: 1e-3, '': 1, k: 1e3, M: 1e6, G: 1e9, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4 };
function quantity(q: unknown): number {
  const m = /^([0-9.]+)([a-zA-Z]*)$/.exec(String(q));
  assert.ok(m && m[2] in QUANTITY_SUFFIX, `quantity ${String(q)}`);
  return Number(m[1]) * QUANTITY_SUFFIX[m[2]];
}

function labelsMatch(selector: Record<string, string>, labels: Record<string, string> | undefined): boolean {
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

test('k8s/ itself deploys the gpu overlay', KUSTOMIZE, () => {
  assert.deepStrictEqual(byId(render(K8S)), byId(rendered.gpu));
});

test('every rendered object passes Kubernetes\' schemas, without unknown fields', KUSTOMIZE, async () => {
  const objects = [...Object.values(rendered).flat(), ...parseYamlFile(join(K8S, 'tools', 'runs-reader.yaml'))];
  const problems = (await Promise.all(objects.map(schemaProblems))).flat();
  assert.deepEqual(problems, []);
  for (const [overlay, objects] of Object.entries(rendered)) {
    assert.deepEqual(
      objects.map((o) => `${o.kind}/${o.metadata.name}`).sort(),
      ['Job/mnist-coordinator', 'Job/mnist-worker', 'PersistentVolumeClaim/mnist-runs', 'Service/mnist-coordinator'],
      overlay,
    );
  }
});

test('the schema check catches a wrong type and an unknown field', KUSTOMIZE, async () => {
  const worker = structuredClone(findObject(rendered.gpu, 'Job', 'mnist-worker'));
  worker.spec.parallelism = '2';
  worker.spec.completionmode = 'Indexed';
  worker.spec.template.spec.containers[0].imagePolicy = 'Always';
  const problems = await schemaProblems(worker);
  assert.equal(problems.length, 3, problems.join('\n'));
  assert.match(problems.join('\n'), /parallelism must be integer/);
  assert.match(problems.join('\n'), /unknown field \/spec\/completionmode/);
  assert.match(problems.join('\n'), /unknown field \/spec\/template\/spec\/containers\/0\/imagePolicy/);
});

test('the number of workers, and how many of them may fail for good, are set once, in k8s/base/settings.yaml', KUSTOMIZE, () => {
  const check = (objects: KObject[], n: number, maxFailed: number): void => {
    const { coordinator, worker } = jobs(objects);
    const args = coordinator.spec.template.spec.containers[0].args as string[];
    assert.equal(args[0], '--workers');
    // kustomize's replacements keep the target's type: a string in args, integers in the Job.
    assert.equal(args[1], String(n));
    assert.equal(typeof args[1], 'string');
    assert.equal(worker.spec.parallelism, n);
    assert.equal(worker.spec.completions, n);
    assert.equal(worker.spec.maxFailedIndexes, maxFailed);
    // The API server refuses more than completions; as many as completions would never fail the
    // Job for failed indexes before every index has finished.
    assert.ok(Number.isInteger(maxFailed) && maxFailed >= 0 && maxFailed < n, `maxFailedIndexes ${maxFailed} for ${n} workers`);
  };
  const values = settings();
  for (const objects of Object.values(rendered)) check(objects, Number(values.workers), Number(values.maxFailedWorkers));

  // Change them there, and only there: both Jobs follow, up to the 256 workers the Jobs are built for.
  for (const [n, maxFailed] of [[5, 0], [256, 16]]) {
    const copy = k8sCopyWith({ workers: String(n), maxFailedWorkers: String(maxFailed) });
    assert.equal(settingsWorkers(copy), n);
    for (const overlay of Object.keys(OVERLAYS)) {
      check(render(join(copy, 'overlays', overlay)), n, maxFailed);
    }
  }
});

test('--min-workers is set once, in settings.yaml, and passed right after --workers N; maxFailedWorkers leaves at least M workers', KUSTOMIZE, () => {
  const help = execFileSync(process.execPath, [COORDINATOR, '--help'], { encoding: 'utf8' });
  assert.match(help, /--min-workers <m>/, 'the coordinator has the flag');
  const check = (objects: KObject[], n: number, m: number, maxFailed: number): void => {
    const args = jobs(objects).coordinator.spec.template.spec.containers[0].args as string[];
    assert.deepEqual(args.slice(0, 4), ['--workers', String(n), '--min-workers', String(m)]);
    assert.equal(args.filter((a) => a === '--min-workers').length, 1);
    // What the coordinator accepts, and a worker Job that fails exactly when fewer than M could remain.
    assert.ok(m >= 1 && m <= n, `--min-workers ${m} of ${n}`);
    assert.ok(maxFailed <= n - m, `maxFailedWorkers ${maxFailed} would leave fewer than ${m} of ${n}`);
  };
  const values = settings();
  for (const objects of Object.values(rendered)) check(objects, Number(values.workers), Number(values.minWorkers), Number(values.maxFailedWorkers));
  const [n, m, maxFailed] = [256, 240, 16];
  const copy = k8sCopyWith({ workers: String(n), minWorkers: String(m), maxFailedWorkers: String(maxFailed) });
  for (const overlay of Object.keys(OVERLAYS)) {
    check(render(join(copy, 'overlays', overlay)), n, m, maxFailed);
  }
});

test('the Jobs: one coordinator pod, N indexed workers, failed pods replaced', KUSTOMIZE, () => {
  for (const objects of Object.values(rendered)) {
    const { coordinator, worker } = jobs(objects);
    const n = settingsWorkers();
    assert.equal(coordinator.spec.completions, 1);
    assert.equal(coordinator.spec.parallelism, 1);
    assert.equal(worker.spec.completionMode, 'Indexed');
    assert.equal(worker.spec.parallelism, n);
    assert.equal(worker.spec.completions, n);
    // The coordinator: a few failures of its one pod; the workers: failures count per index
    // (Kubernetes 1.29+), and no Job-wide backoffLimit, which would count the failures of all N
    // indexes together (its default with backoffLimitPerIndex: 2147483647).
    assert.ok(coordinator.spec.backoffLimit >= 1, 'a failed coordinator pod is replaced');
    assert.ok(worker.spec.backoffLimitPerIndex >= 1, 'a failed worker pod is replaced');
    assert.equal(worker.spec.backoffLimit, undefined, 'no Job-wide backoffLimit for the workers');
    assert.ok(Number.isInteger(worker.spec.maxFailedIndexes));
    // The Job succeeds once one index has: a worker exits 0 only when the run is finished.
    assert.deepEqual(worker.spec.successPolicy, { rules: [{ succeededCount: 1 }] });
    for (const job of [coordinator, worker]) {
      const pod = job.spec.template.spec;
      // A pod failure policy needs restartPolicy Never (the API server refuses it otherwise).
      assert.equal(pod.restartPolicy, 'Never');
      const rules = job.spec.podFailurePolicy.rules as KObject[];
      assert.ok(rules.some((r) => r.action === 'FailJob' && r.onExitCodes?.operator === 'In' && r.onExitCodes.values.includes(2)), 'usage errors end the Job');
      assert.ok(rules.some((r) => r.action === 'Ignore' && r.onPodConditions?.some((c: KObject) => c.type === 'DisruptionTarget')));
      for (const r of rules) {
        if (!r.onExitCodes) continue;
        assert.equal(r.onExitCodes.containerName, pod.containers[0].name);
        // What the API server requires: values in ascending order, no duplicates, never 0 with In.
        const values = r.onExitCodes.values as number[];
        assert.ok(values.every((v, i) => i === 0 || values[i - 1] < v), `exit codes ${values.join(', ')} in ascending order`);
        if (r.onExitCodes.operator === 'In') assert.ok(!values.includes(0));
      }
    }
    // A success policy cannot ask for more than the completions.
    for (const rule of (worker.spec.successPolicy?.rules ?? []) as KObject[]) assert.ok(rule.succeededCount <= worker.spec.completions);
    // What the API server requires of these fields (Kubernetes 1.31 validation): an Indexed Job,
    // a pod failure policy only with restartPolicy Never (checked above), and for a per-index
    // backoff at most 100000 completions and maxFailedIndexes no more than completions.
    assert.ok(worker.spec.completions <= 100_000 && worker.spec.maxFailedIndexes <= worker.spec.completions);
  }
});

test('the command lines: the coordinator listens with keys and writes to the volume; workers reach it through the Service', KUSTOMIZE, () => {
  for (const objects of Object.values(rendered)) {
    const { coordinator, worker, service } = jobs(objects);
    const c = coordinator.spec.template.spec.containers[0];
    const w = worker.spec.template.spec.containers[0];
    const mountOf = (container: KObject, pod: KObject, predicate: (v: KObject) => boolean): string => {
      const volume = (pod.spec.template.spec.volumes as KObject[]).find(predicate);
      assert.ok(volume, 'volume');
      return (container.volumeMounts as KObject[]).find((m) => m.name === volume.name)?.mountPath;
    };
    assert.deepEqual(c.command, ['/app/deploy/coordinator-entrypoint.sh']);
    assert.ok(c.args.includes('--no-spawn'));
    const listen = /^tcp:\/\/0\.0\.0\.0:(\d+)$/.exec(flagValue(c.args, '--listen') ?? '');
    assert.ok(listen, `--listen ${flagValue(c.args, '--listen')}`);
    assert.equal(flagValue(c.args, '--keys'), mountOf(c, coordinator, (v) => v.secret?.secretName === SECRET_NAME));
    const runs = mountOf(c, coordinator, (v) => v.persistentVolumeClaim?.claimName === 'mnist-runs');
    assert.ok(flagValue(c.args, '--out')?.startsWith(`${runs}/`), '--out is on the PersistentVolumeClaim');
    assert.ok(!c.args.includes('--resume'), 'the entrypoint adds --resume when there is a checkpoint');
    assert.ok(!c.args.includes('--insecure'));

    assert.deepEqual(w.command, ['worker']);
    assert.equal(flagValue(w.args, '--keys'), mountOf(w, worker, (v) => v.secret?.secretName === SECRET_NAME));
    const connect = /^tcp:\/\/([a-z0-9-]+):(\d+)$/.exec(flagValue(w.args, '--connect') ?? '');
    assert.ok(connect, `--connect ${flagValue(w.args, '--connect')}`);
    assert.equal(connect[1], service.metadata.name);
    const port = (service.spec.ports as KObject[]).find((p) => p.port === Number(connect[2]));
    assert.ok(port, `the Service has port ${connect[2]}`);
    const target = (c.ports as KObject[]).find((p) => p.name === port.targetPort || p.containerPort === port.targetPort);
    assert.equal(target?.containerPort, Number(listen[1]), 'the Service port leads to the port the coordinator listens on');
    // Both Jobs run the same image.
    assert.equal(c.image, w.image);
  }
});

test('every flag the pods pass is one their program knows', KUSTOMIZE, () => {
  // The programs the containers run: the coordinator's entrypoint passes its arguments to `coordinator`.
  const programs: Record<string, string> = { '/app/deploy/coordinator-entrypoint.sh': COORDINATOR, coordinator: COORDINATOR, worker: WORKER };
  const help = new Map<string, Set<string>>();
  const flagsOf = (script: string): Set<string> => {
    let flags = help.get(script);
    if (!flags) help.set(script, (flags = new Set(execFileSync(process.execPath, [script, '--help'], { encoding: 'utf8' }).match(/--[a-z][a-z0-9-]*/g))));
    return flags;
  };
  for (const [overlay, objects] of Object.entries(rendered)) {
    for (const job of objects.filter((o) => o.kind === 'Job')) {
      for (const c of containersOf(job)) {
        const script = programs[(c.command as string[])[0]];
        assert.ok(script, `${overlay}: ${job.metadata.name} runs ${c.command[0]}`);
        for (const arg of (c.args as string[]).filter((a) => a.startsWith('--'))) {
          assert.ok(flagsOf(script).has(arg.split('=')[0]), `${overlay}: ${job.metadata.name} passes ${arg}, which \`${c.command[0]} --help\` does not list`);
        }
      }
    }
  }
});

test('the Service is headless and selects the coordinator pod only', KUSTOMIZE, () => {
  for (const objects of Object.values(rendered)) {
    const { coordinator, worker, service } = jobs(objects);
    assert.equal(service.spec.clusterIP, 'None');
    const selector = service.spec.selector as Record<string, string>;
    assert.ok(Object.keys(selector).length >= 2);
    assert.ok(labelsMatch(selector, coordinator.spec.template.metadata.labels), 'selects the coordinator pod');
    assert.ok(!labelsMatch(selector, worker.spec.template.metadata.labels), 'and not the workers');
  }
});

test('metrics: the coordinator serves --metrics on the Service\'s port `metrics`, which the prometheus.io annotations and k8s/monitoring\'s ServiceMonitor name', KUSTOMIZE, async () => {
  const monitoring = render(join(K8S, 'monitoring'));
  assert.deepEqual(monitoring.map((o) => `${o.apiVersion} ${o.kind}/${o.metadata.name}`), ['monitoring.coreos.com/v1 ServiceMonitor/mnist-coordinator']);
  const [monitor] = monitoring;
  assert.deepEqual(await schemaProblems(monitor), []);
  for (const [overlay, objects] of Object.entries(rendered)) {
    const { coordinator, worker, service } = jobs(objects);
    const c = coordinator.spec.template.spec.containers[0];
    const metrics = /^0\.0\.0\.0:(\d+)$/.exec(flagValue(c.args, '--metrics') ?? '');
    assert.ok(metrics, `${overlay}: --metrics ${flagValue(c.args, '--metrics')}`);
    // Beyond loopback, --metrics needs what --listen needs: the keys, never --insecure.
    assert.ok(flagValue(c.args, '--keys') && !c.args.includes('--insecure'), overlay);
    const port = (service.spec.ports as KObject[]).find((p) => p.name === 'metrics');
    assert.ok(port, `${overlay}: the Service has a port named metrics`);
    const target = (c.ports as KObject[]).find((p) => p.name === port.targetPort || p.containerPort === port.targetPort);
    assert.equal(target?.containerPort, Number(metrics[1]), `${overlay}: the Service's metrics port leads to the port --metrics serves`);
    const annotations = service.metadata.annotations as Record<string, string>;
    assert.deepEqual(
      [annotations['prometheus.io/scrape'], annotations['prometheus.io/port'], annotations['prometheus.io/path']],
      ['true', metrics[1], '/metrics'],
      overlay,
    );
    // Scraped once: not the pods too (the usual configurations honour both).
    for (const job of [coordinator, worker]) assert.equal(job.spec.template.metadata.annotations?.['prometheus.io/scrape'], undefined, overlay);
    // The ServiceMonitor selects this Service, and scrapes its metrics port.
    assert.ok(labelsMatch(monitor.spec.selector.matchLabels, service.metadata.labels), `${overlay}: the ServiceMonitor selects the Service`);
    assert.deepEqual(
      (monitor.spec.endpoints as KObject[]).map((e) => [e.port, e.path]),
      [[port.name, '/metrics']],
    );
  }
});

/** A container's environment variables: name → value. */
function envOf(container: KObject): Record<string, string> {
  return Object.fromEntries(((container.env ?? []) as KObject[]).map((e) => [e.name as string, e.value as string]));
}

test('GPUs: one per worker pod in the gpu overlays, none for the coordinator, none in the cpu overlay', KUSTOMIZE, () => {
  const cpu = jobs(rendered.cpu);
  const cpuWorker = cpu.worker.spec.template.spec.containers[0];
  const cpuCoordinator = cpu.coordinator.spec.template.spec.containers[0];
  for (const { overlay, image, engine } of GPU_OVERLAYS) {
    const { coordinator, worker } = jobs(rendered[overlay]);
    const pod = worker.spec.template.spec;
    const w = pod.containers[0];
    const c = coordinator.spec.template.spec.containers[0];
    // One GPU per pod: the device plugin hands each worker its own, so that N workers take N
    // GPUs whichever node they land on, and each sees exactly one.
    assert.equal(w.resources.limits['nvidia.com/gpu'], 1, overlay);
    // Extended resources cannot be overcommitted: requests, where given, equal limits.
    if (w.resources.requests['nvidia.com/gpu'] !== undefined) assert.equal(w.resources.requests['nvidia.com/gpu'], w.resources.limits['nvidia.com/gpu'], overlay);
    assert.ok((pod.tolerations as KObject[]).some((t) => t.key === 'nvidia.com/gpu' && t.operator === 'Exists' && t.effect === 'NoSchedule'), `${overlay}: tolerates the GPU nodes' taint`);
    assert.equal(w.image, image, overlay);
    assert.equal(c.image, image, overlay);
    // The coordinator takes none, and sees none even where the NVIDIA runtime is the default.
    assert.doesNotMatch(JSON.stringify(c.resources), /nvidia/, overlay);
    assert.equal(envOf(c).NVIDIA_VISIBLE_DEVICES, 'void', overlay);
    // The command lines are the cpu overlay's; the workers add only their engine.
    assert.deepEqual([c.command, c.args], [cpuCoordinator.command, cpuCoordinator.args], overlay);
    assert.deepEqual(w.command, cpuWorker.command, overlay);
    assert.deepEqual(w.args, [...cpuWorker.args, '--engine', engine], overlay);
  }
  // webgpu: the NVIDIA Container Toolkit mounts the driver's Vulkan ICD only for the graphics
  // capability, and the pod asks for it itself. No CUDA in that image.
  const webgpu = envOf(jobs(rendered.gpu).worker.spec.template.spec.containers[0]);
  const caps = (webgpu.NVIDIA_DRIVER_CAPABILITIES ?? '').split(',');
  for (const cap of ['graphics', 'compute', 'utility']) assert.ok(caps.includes(cap), `NVIDIA_DRIVER_CAPABILITIES=${caps.join(',')}: ${cap}`);
  assert.equal(webgpu.CUDA_VISIBLE_DEVICES, undefined);
  // tfjs-node-gpu: the pod's one GPU is CUDA device 0.
  assert.equal(envOf(jobs(rendered['gpu-tfjs-node-gpu']).worker.spec.template.spec.containers[0]).CUDA_VISIBLE_DEVICES, '0');

  assert.doesNotMatch(JSON.stringify(rendered.cpu), /nvidia/i);
  assert.equal(cpuWorker.image, `mnist-ddp:${VERSION}-cpu`);
  assert.equal(cpuCoordinator.image, `mnist-ddp:${VERSION}-cpu`);
  assert.ok(!(cpuWorker.args as string[]).includes('--engine'), 'the cpu overlay\'s workers choose (auto: wasm)');
});

/**
 * Why an image reference does not name one build for good, or undefined where it does: a digest
 * (`@sha256:` and 64 hex digits) always does; a tag does when one of its `-`/`_`-separated parts
 * is a full release (`1.2.3`, `v1.2.3`) or a commit (7 to 40 hex digits), a convention that holds
 * where each such tag is pushed once. No tag (`:latest`), `latest` and words such as `gpu` move.
 */
function unpinned(image: string): string | undefined {
  const m = /^((?:[^/@\s]+\/)*[^/:@\s]+)(?::([\w][\w.-]{0,127}))?(?:@(sha256:[0-9a-f]{64}))?$/.exec(image);
  if (!m) return `${image}: not an image reference`;
  const [, , tag, digest] = m;
  if (digest) return undefined;
  if (!tag) return `${image}: no tag, which means :latest`;
  if (tag === 'latest') return `${image}: :latest`;
  if (tag.split(/[-_]/).some((part) => /^v?\d+\.\d+\.\d+$/.test(part) || /^[0-9a-f]{7,40}$/.test(part))) return undefined;
  return `${image}: the tag ${tag} names no release, commit or digest: it can move`;
}

/** Every container image of some objects: `Kind/name container: image`. */
function images(objects: KObject[]): { where: string; image: string }[] {
  return objects.flatMap((o) => containersOf(o).map((c) => ({ where: `${o.kind}/${o.metadata.name} ${c.name}`, image: c.image as string })));
}

test('images: every container runs a pinned image (a release tag or a digest), the one its overlay names', KUSTOMIZE, () => {
  const reader = parseYamlFile(join(K8S, 'tools', 'runs-reader.yaml'));
  const problems = [...Object.values(rendered).flat(), ...reader].flatMap((o) => images([o]).map(({ where, image }) => (unpinned(image) ? `${where}: ${unpinned(image)}` : undefined))).filter(Boolean);
  assert.deepEqual(problems, []);
  // The check itself: what moves, and what does not.
  for (const image of ['mnist-ddp', 'mnist-ddp:latest', 'mnist-ddp:gpu', 'mnist-ddp:webgpu', 'mnist-ddp:tfjs-node-gpu', 'registry.example.com:5000/you/mnist-ddp', 'busybox:1.36', 'mnist-ddp:v1', 'mnist-ddp:0.1-webgpu']) {
    assert.ok(unpinned(image), `${image} counts as pinned`);
  }
  for (const image of ['mnist-ddp:0.1.0-webgpu', 'mnist-ddp:v0.1.0', 'busybox:1.36.1', 'mnist-ddp:0.1.0-3f2c1ab9e0d4-cpu', `registry.example.com:5000/you/mnist-ddp@sha256:${'ab'.repeat(32)}`, `mnist-ddp:0.1.0-cpu@sha256:${'0'.repeat(64)}`]) {
    assert.equal(unpinned(image), undefined, image);
  }

  // The tag is set in one place, the overlay's `images:` entry: the base names the image without
  // one, and both Jobs of an overlay run what that entry gives (the release and the variant).
  for (const o of render(join(K8S, 'base')).filter((x) => x.kind === 'Job')) {
    for (const { where, image } of images([o])) assert.equal(image, 'mnist-ddp', `${where}: the base leaves the tag to the overlays`);
  }
  const variants = { gpu: 'webgpu', 'gpu-tfjs-node-gpu': 'tfjs-node-gpu', cpu: 'cpu' } as const;
  for (const [overlay, dir] of Object.entries(OVERLAYS)) {
    const [k] = parseYamlFile(join(dir, 'kustomization.yaml'));
    const entries = (k.images as KObject[]).filter((e) => e.name === 'mnist-ddp');
    assert.equal(entries.length, 1, `${overlay}: one images entry for mnist-ddp`);
    assert.equal(entries[0].newTag, `${VERSION}-${variants[overlay as keyof typeof variants]}`, `${overlay}: the release (package.json's version) and the variant`);
    for (const { where, image } of images(rendered[overlay as keyof typeof rendered])) assert.equal(image, `mnist-ddp:${entries[0].newTag}`, `${overlay} ${where}`);
  }
});

test('images: pinned by digest, as docs/kubernetes.md says, every container runs that digest; a mutable tag there is caught', KUSTOMIZE, () => {
  const digest = `sha256:${'0123456789abcdef'.repeat(4)}`;
  for (const [overlay, edit, expected] of [
    ['gpu', (k: string) => k.replace(/^    newTag: .*$/m, `    newName: registry.example.com/you/mnist-ddp\n    digest: ${digest}`), `registry.example.com/you/mnist-ddp@${digest}`],
    ['cpu', (k: string) => k.replace(/^    newTag: .*$/m, '    newTag: cpu'), 'mnist-ddp:cpu'],
    ['gpu-tfjs-node-gpu', (k: string) => k.replace(/^    newTag: .*$/m, '    newTag: latest'), 'mnist-ddp:latest'],
  ] as const) {
    const copy = join(tempDir('mnist-k8s-'), 'k8s');
    cpSync(K8S, copy, { recursive: true });
    const file = join(copy, 'overlays', overlay, 'kustomization.yaml');
    const before = readFileSync(file, 'utf8');
    writeFileSync(file, edit(before));
    assert.notEqual(readFileSync(file, 'utf8'), before, overlay);
    const dir = join(copy, 'overlays', overlay);
    const found = images(render(dir));
    assert.equal(found.length, 2, overlay);
    for (const { where, image } of found) {
      assert.equal(image, expected, `${overlay} ${where}`);
      assert.equal(unpinned(image) === undefined, expected.includes('@sha256:'), `${overlay} ${where}: ${image}`);
    }
  }
});

test('the two gpu overlays differ only in the image, the engine and what the engine needs from the NVIDIA runtime', KUSTOMIZE, () => {
  const normalised = (objects: KObject[]): KObject[] =>
    byId(objects).map((o) => {
      const copy = structuredClone(o);
      for (const c of containersOf(copy)) {
        delete c.image;
        if (Array.isArray(c.args) && c.args.includes('--engine')) c.args.splice(c.args.indexOf('--engine'), 2);
        c.env = (c.env as KObject[] | undefined)?.filter((e) => !['NVIDIA_DRIVER_CAPABILITIES', 'CUDA_VISIBLE_DEVICES'].includes(e.name));
      }
      return copy;
    });
  assert.deepStrictEqual(normalised(rendered['gpu-tfjs-node-gpu']), normalised(rendered.gpu));
  // And the normalisation does not hide a difference elsewhere.
  const changed = structuredClone(rendered.gpu);
  findObject(changed, 'Job', 'mnist-worker').spec.template.spec.containers[0].resources.limits.memory = '16Gi';
  assert.notDeepStrictEqual(normalised(changed), normalised(rendered.gpu));
});

test('pods run as a non-root user on a read-only root filesystem, with requests and limits', KUSTOMIZE, () => {
  const reader = parseYamlFile(join(K8S, 'tools', 'runs-reader.yaml'));
  for (const o of [...Object.values(rendered).flat(), ...reader].filter((x) => x.kind === 'Job' || x.kind === 'Pod')) {
    const pod = o.kind === 'Pod' ? o.spec : o.spec.template.spec;
    const name = `${o.kind}/${o.metadata.name}`;
    assert.equal(pod.securityContext.runAsNonRoot, true, name);
    assert.ok(Number.isInteger(pod.securityContext.runAsUser) && pod.securityContext.runAsUser > 0, name);
    assert.equal(pod.securityContext.seccompProfile?.type, 'RuntimeDefault', name);
    assert.equal(pod.automountServiceAccountToken, false, name);
    for (const c of containersOf(o)) {
      assert.equal(c.securityContext.allowPrivilegeEscalation, false, name);
      assert.equal(c.securityContext.readOnlyRootFilesystem, true, name);
      assert.deepEqual(c.securityContext.capabilities.drop, ['ALL'], name);
      for (const r of ['cpu', 'memory']) {
        assert.ok(c.resources.requests[r] !== undefined && c.resources.limits[r] !== undefined, `${name}: ${r} request and limit`);
        assert.ok(quantity(c.resources.requests[r]) <= quantity(c.resources.limits[r]), `${name}: ${r} request ≤ limit`);
      }
      // The program writes only to --out; /tmp (HOME too) is an emptyDir.
      const tmp = (c.volumeMounts as KObject[]).find((m) => m.mountPath === '/tmp');
      assert.ok(tmp && (pod.volumes as KObject[]).find((v) => v.name === tmp.name)?.emptyDir, `${name}: /tmp is an emptyDir`);
      // No TCP probe on the ZeroMQ port: its empty connection counts as a failed CURVE handshake.
      for (const probe of ['livenessProbe', 'readinessProbe', 'startupProbe']) assert.equal(c[probe]?.tcpSocket, undefined, `${name}: ${probe}`);
    }
  }
});

test('keys: from the Secret, and each side mounts only the files it needs', KUSTOMIZE, () => {
  for (const objects of Object.values(rendered)) {
    assert.ok(!objects.some((o) => o.kind === 'Secret'), 'no keys in the manifests');
    const items = (job: KObject): string[] => {
      const volume = (job.spec.template.spec.volumes as KObject[]).find((v) => v.secret);
      assert.equal(volume?.secret.secretName, SECRET_NAME);
      for (const item of volume?.secret.items ?? []) assert.equal(item.key, item.path);
      return (volume?.secret.items as KObject[]).map((i) => i.key as string).sort();
    };
    const { coordinator, worker } = jobs(objects);
    assert.deepEqual(items(coordinator), ['coordinator.public', 'coordinator.secret', 'worker.public']);
    assert.deepEqual(items(worker), ['coordinator.public', 'worker.public', 'worker.secret']);
  }
});

test('the run outlives its pods: a PersistentVolumeClaim for --out', KUSTOMIZE, () => {
  const pvc = findObject(rendered.gpu, 'PersistentVolumeClaim', 'mnist-runs');
  assert.deepEqual(pvc.spec.accessModes, ['ReadWriteOnce']);
  assert.ok(quantity(pvc.spec.resources.requests.storage) >= 1024 ** 3);
  const { worker } = jobs(rendered.gpu);
  assert.ok(!(worker.spec.template.spec.volumes as KObject[]).some((v) => v.persistentVolumeClaim), 'only the coordinator mounts it');
  // The helper pod that `kubectl cp` copies from mounts the same claim, read-only.
  const [reader] = parseYamlFile(join(K8S, 'tools', 'runs-reader.yaml'));
  const volume = (reader.spec.volumes as KObject[]).find((v) => v.persistentVolumeClaim);
  assert.equal(volume?.persistentVolumeClaim.claimName, pvc.metadata.name);
  assert.equal(volume?.persistentVolumeClaim.readOnly, true);
});

test('labels: app.kubernetes.io/* on every object and pod template', KUSTOMIZE, () => {
  for (const o of Object.values(rendered).flat()) {
    const sets = [o.metadata.labels, ...(o.spec?.template ? [o.spec.template.metadata.labels] : [])];
    for (const labels of sets) {
      assert.equal(labels['app.kubernetes.io/name'], 'mnist-ddp', objectId(o));
      assert.equal(labels['app.kubernetes.io/instance'], 'mnist', objectId(o));
      assert.ok(labels['app.kubernetes.io/component'], objectId(o));
    }
  }
});

test('a broken k8s/ fails: kustomize\'s error names what is wrong, and the schema check what it renders wrong', KUSTOMIZE, async () => {
  /** A copy of k8s/ with one file edited; the edit must change it. */
  const broken = (file: string, edit: (text: string) => string): string => {
    const copy = join(tempDir('mnist-k8s-'), 'k8s');
    cpSync(K8S, copy, { recursive: true });
    const before = readFileSync(join(copy, file), 'utf8');
    writeFileSync(join(copy, file), edit(before));
    assert.notEqual(readFileSync(join(copy, file), 'utf8'), before, file);
    return copy;
  };
  // A replacement into a field that is not there, a patch of a Job that is not there, bad YAML.
  const replacement = broken('base/kustomization.yaml', (t) => t.replace('[name=coordinator].args.1', '[name=coordinator].args.99'));
  assert.throws(() => render(join(replacement, 'overlays', 'cpu')), /kubectl kustomize .*args\.99/s);
  const patch = broken('overlays/gpu/worker-gpu.yaml', (t) => t.replace('name: mnist-worker', 'name: mnist-workers'));
  assert.throws(() => render(join(patch, 'overlays', 'gpu')), /kubectl kustomize .*mnist-workers/s);
  const yaml = broken('base/settings.yaml', (t) => t.replace(/^data:$/m, 'data: ['));
  assert.throws(() => render(join(yaml, 'overlays', 'cpu')), /kubectl kustomize /);
  // kustomize renders a misspelt or mistyped field as it is; the schema check refuses it.
  const field = broken('base/worker-job.yaml', (t) => t.replace(/^  backoffLimitPerIndex: /m, '  backoffLimitPerIndx: ').replace(/^(\s+)restartPolicy: Never$/m, '$1restartPolicy: 7'));
  const worker = findObject(render(join(field, 'overlays', 'cpu')), 'Job', 'mnist-worker');
  const problems = (await schemaProblems(worker)).join('\n');
  assert.match(problems, /unknown field \/spec\/backoffLimitPerIndx/);
  assert.match(problems, /restartPolicy must be string/);
});
