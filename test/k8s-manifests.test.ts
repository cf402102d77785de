/**
 * k8s/: renders offline (kustomize's own output where kubectl is installed, the tests' renderer
 * otherwise, and both agree), every object passes Kubernetes' schemas, and the deployment's
 * invariants hold.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  K8S,
  type KObject,
  containersOf,
  findObject,
  getField,
  kubectlAvailable,
  objectId,
  parseYamlFile,
  render,
  renderKustomization,
  renderWithKubectl,
  schemaProblems,
  strategicMerge,
} from './k8s-helpers.js';
import { COORDINATOR, WORKER, tempDir } from './helpers.js';

const OVERLAYS = {
  gpu: join(K8S, 'overlays', 'gpu'),
  'gpu-tfjs-node-gpu': join(K8S, 'overlays', 'gpu-tfjs-node-gpu'),
  cpu: join(K8S, 'overlays', 'cpu'),
} as const;
const rendered = { gpu: render(OVERLAYS.gpu), 'gpu-tfjs-node-gpu': render(OVERLAYS['gpu-tfjs-node-gpu']), cpu: render(OVERLAYS.cpu) };
/** The GPU overlays: the image each runs and the engine its workers pin. */
const GPU_OVERLAYS = [
  { overlay: 'gpu', image: 'mnist-ddp:webgpu', engine: 'webgpu' },
  { overlay: 'gpu-tfjs-node-gpu', image: 'mnist-ddp:tfjs-node-gpu', engine: 'tfjs-node-gpu' },
] as const;
const SECRET_NAME = 'mnist-keys';

function byId(objects: KObject[]): KObject[] {
  return [...objects].sort((a, b) => objectId(a).localeCompare(objectId(b)));
}

function settingsWorkers(dir = K8S): number {
  const [settings] = parseYamlFile(join(dir, 'base', 'settings.yaml'));
  return Number(settings.data.workers);
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

test('the tests\' renderer gives what kubectl kustomize gives', { skip: !kubectlAvailable() && 'kubectl is not installed here' }, () => {
  for (const dir of [K8S, ...Object.values(OVERLAYS)]) {
    assert.deepStrictEqual(byId(renderKustomization(dir)), byId(renderWithKubectl(dir) ?? []), dir);
  }
});

test('k8s/ itself deploys the gpu overlay', () => {
  assert.deepStrictEqual(byId(render(K8S)), byId(rendered.gpu));
});

test('every rendered object passes Kubernetes\' schemas, without unknown fields', async () => {
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

test('the schema check catches a wrong type and an unknown field', async () => {
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

test('the number of workers is set once, in k8s/base/settings.yaml', () => {
  const check = (objects: KObject[], n: number): void => {
    const { coordinator, worker } = jobs(objects);
    const args = coordinator.spec.template.spec.containers[0].args as string[];
    assert.equal(args[0], '--workers');
    assert.equal(args[1], String(n));
    assert.equal(worker.spec.parallelism, n);
    assert.equal(worker.spec.completions, n);
  };
  const n = settingsWorkers();
  for (const objects of Object.values(rendered)) check(objects, n);

  // Change it there, and only there: both Jobs follow.
  const copy = join(tempDir('mnist-k8s-'), 'k8s');
  cpSync(K8S, copy, { recursive: true });
  const settings = join(copy, 'base', 'settings.yaml');
  writeFileSync(settings, readFileSync(settings, 'utf8').replace(/workers: "\d+"/, 'workers: "5"'));
  assert.equal(settingsWorkers(copy), 5);
  for (const overlay of Object.keys(OVERLAYS)) {
    const dir = join(copy, 'overlays', overlay);
    check(renderKustomization(dir), 5);
    const viaKubectl = renderWithKubectl(dir);
    if (viaKubectl) check(viaKubectl, 5);
  }
});

test('the Jobs: one coordinator pod, N indexed workers, failed pods replaced', () => {
  for (const objects of Object.values(rendered)) {
    const { coordinator, worker } = jobs(objects);
    const n = settingsWorkers();
    assert.equal(coordinator.spec.completions, 1);
    assert.equal(coordinator.spec.parallelism, 1);
    assert.equal(worker.spec.completionMode, 'Indexed');
    assert.equal(worker.spec.parallelism, n);
    assert.equal(worker.spec.completions, n);
    for (const job of [coordinator, worker]) {
      const pod = job.spec.template.spec;
      assert.ok(job.spec.backoffLimit >= 1, 'a failed pod is replaced');
      // A pod failure policy needs restartPolicy Never (the API server refuses it otherwise).
      assert.equal(pod.restartPolicy, 'Never');
      const rules = job.spec.podFailurePolicy.rules as KObject[];
      assert.ok(rules.some((r) => r.action === 'FailJob' && r.onExitCodes?.operator === 'In' && r.onExitCodes.values.includes(2)), 'usage errors end the Job');
      assert.ok(rules.some((r) => r.action === 'Ignore' && r.onPodConditions?.some((c: KObject) => c.type === 'DisruptionTarget')));
      for (const r of rules) if (r.onExitCodes) assert.equal(r.onExitCodes.containerName, pod.containers[0].name);
    }
    // A success policy, if any, cannot ask for more than the completions.
    for (const rule of (worker.spec.successPolicy?.rules ?? []) as KObject[]) assert.ok(rule.succeededCount <= worker.spec.completions);
  }
});

test('the command lines: the coordinator listens with keys and writes to the volume; workers reach it through the Service', () => {
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

test('every flag the pods pass is one their program knows', () => {
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

test('the Service is headless and selects the coordinator pod only', () => {
  for (const objects of Object.values(rendered)) {
    const { coordinator, worker, service } = jobs(objects);
    assert.equal(service.spec.clusterIP, 'None');
    const selector = service.spec.selector as Record<string, string>;
    assert.ok(Object.keys(selector).length >= 2);
    assert.ok(labelsMatch(selector, coordinator.spec.template.metadata.labels), 'selects the coordinator pod');
    assert.ok(!labelsMatch(selector, worker.spec.template.metadata.labels), 'and not the workers');
  }
});

/** A container's environment variables: name → value. */
function envOf(container: KObject): Record<string, string> {
  return Object.fromEntries(((container.env ?? []) as KObject[]).map((e) => [e.name as string, e.value as string]));
}

test('GPUs: one per worker pod in the gpu overlays, none for the coordinator, none in the cpu overlay', () => {
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
  assert.equal(cpuWorker.image, 'mnist-ddp:cpu');
  assert.equal(cpuCoordinator.image, 'mnist-ddp:cpu');
  assert.ok(!(cpuWorker.args as string[]).includes('--engine'), 'the cpu overlay\'s workers choose (auto: wasm)');
});

test('the two gpu overlays differ only in the image, the engine and what the engine needs from the NVIDIA runtime', () => {
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

test('pods run as a non-root user on a read-only root filesystem, with requests and limits', () => {
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

test('keys: from the Secret, and each side mounts only the files it needs', () => {
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

test('the run outlives its pods: a PersistentVolumeClaim for --out', () => {
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

test('labels: app.kubernetes.io/* on every object and pod template', () => {
  for (const o of Object.values(rendered).flat()) {
    const sets = [o.metadata.labels, ...(o.spec?.template ? [o.spec.template.metadata.labels] : [])];
    for (const labels of sets) {
      assert.equal(labels['app.kubernetes.io/name'], 'mnist-ddp', objectId(o));
      assert.equal(labels['app.kubernetes.io/instance'], 'mnist', objectId(o));
      assert.ok(labels['app.kubernetes.io/component'], objectId(o));
    }
  }
});

test('the renderer: strategic merge pairs list elements by their merge key, replacements keep a field\'s type', () => {
  const base = { spec: { containers: [{ name: 'a', env: [{ name: 'X', value: '1' }], args: ['--p'] }, { name: 'b' }] } };
  const patch = { spec: { containers: [{ name: 'c' }, { name: 'a', env: [{ name: 'Y', value: '2' }, { name: 'X', value: '3' }], args: ['--q'] }] } };
  assert.deepEqual(strategicMerge(base, patch, []), {
    spec: {
      containers: [
        { name: 'c' },
        { name: 'a', env: [{ name: 'Y', value: '2' }, { name: 'X', value: '3' }], args: ['--q'] },
        { name: 'b' },
      ],
    },
  });
  assert.equal(getField(rendered.gpu[0], 'metadata.name'), rendered.gpu[0].metadata.name);
  assert.equal(typeof jobs(rendered.gpu).worker.spec.parallelism, 'number');
  assert.equal(typeof jobs(rendered.gpu).coordinator.spec.template.spec.containers[0].args[1], 'string');
  assert.throws(() => strategicMerge({}, { $patch: 'delete' }, []), /not implemented/);
});
