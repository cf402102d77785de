/**
 * deploy/Dockerfile (GPU: the webgpu engine), deploy/Dockerfile.tfjs-node-gpu (GPU: CUDA 11.2 and
 * tfjs-node-gpu) and deploy/Dockerfile.cpu, read without a Docker engine: every path, script and
 * command they name exists in the project and reaches the build context, the images give the pods
 * what they run (the engine their workers name among it), and the coordinator's entrypoint adds
 * --resume when it should.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, posix, relative, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { test } from 'node:test';
import { tempDir } from './helpers.js';
import {
  type DockerInstruction,
  K8S,
  type KObject,
  containersOf,
  copyParts,
  dockerIgnoredBy,
  findObject,
  parseDockerfile,
  readDockerignore,
  needsKustomize,
  render,
  repoPath,
} from './k8s-helpers.js';

/** What renders k8s/ (the overlays each image serves) skips without kubectl's kustomize, and fails under CI. */
const KUSTOMIZE = needsKustomize();

interface PackageJson {
  version: string;
  bin: Record<string, string>;
  scripts: Record<string, string>;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
  allowScripts: Record<string, boolean>;
}
const pkg = JSON.parse(readFileSync(repoPath('package.json'), 'utf8')) as PackageJson;
const lock = JSON.parse(readFileSync(repoPath('package-lock.json'), 'utf8')) as { packages: Record<string, { version: string }> };
const ENTRYPOINT = repoPath('deploy', 'coordinator-entrypoint.sh');
/**
 * Each image, its base, the overlay that runs it, the tag the overlay names, and the engine its
 * workers pin (`--engine`; none: `auto`).
 */
const DOCKERFILES = {
  webgpu: { file: repoPath('deploy', 'Dockerfile'), base: 'node:20-bookworm-slim', overlay: join(K8S, 'overlays', 'gpu'), tag: 'webgpu', engine: 'webgpu' },
  'tfjs-node-gpu': {
    file: repoPath('deploy', 'Dockerfile.tfjs-node-gpu'),
    base: 'nvidia/cuda:11.2.2-cudnn8-runtime-ubuntu20.04',
    overlay: join(K8S, 'overlays', 'gpu-tfjs-node-gpu'),
    tag: 'tfjs-node-gpu',
    engine: 'tfjs-node-gpu',
  },
  cpu: { file: repoPath('deploy', 'Dockerfile.cpu'), base: 'node:20-bookworm-slim', overlay: join(K8S, 'overlays', 'cpu'), tag: 'cpu', engine: undefined },
} as const;
/** The engines `--engine` takes (the project's contract). */
const ENGINES = ['auto', 'webgpu', 'wasm', 'tfjs-node', 'tfjs-node-gpu'];

interface Stage {
  name?: string;
  image: string;
  instructions: DockerInstruction[];
  /** Files this stage's COPY instructions put in the image: image path → where from. */
  files: Map<string, string>;
  user?: string;
  runs: string[];
  /** The environment its ENV instructions set. */
  env: Map<string, string>;
}

/** An ENV instruction's variables: `ENV A=1 B="x y"`, or the old form `ENV A 1`. */
function envVariables(args: string): [string, string][] {
  const words = args.match(/(?:[^\s"']+|"(?:[^"\\]|\\.)*"|'[^']*')+/g) ?? [];
  const unquote = (v: string): string => v.replace(/"((?:[^"\\]|\\.)*)"|'([^']*)'/g, (_, d: string | undefined, q: string | undefined) => (d !== undefined ? d.replace(/\\(.)/g, '$1') : (q ?? '')));
  const first = words[0] ?? '';
  if (first !== '' && !first.includes('=')) return [[first, unquote(args.slice(first.length).trim())]];
  return words.map((w) => {
    const i = w.indexOf('=');
    assert.ok(i > 0, `ENV ${args}: ${w} is not NAME=VALUE`);
    return [w.slice(0, i), unquote(w.slice(i + 1))];
  });
}

/** The packages a stage's `apt-get install` commands name. */
function aptPackages(stage: Stage): string[] {
  return stage.runs.flatMap((r) => [...r.matchAll(/apt-get install ([^&;|]*)/g)].flatMap((m) => m[1].split(/\s+/).filter((w) => w !== '' && !w.startsWith('-'))));
}

/** The RUN command (one of its `&&` parts) that starts with `prefix`, if any. */
function runPart(stage: Stage, prefix: string): string | undefined {
  return stage.runs.flatMap((r) => r.split(/\s+&&\s+/)).find((part) => part.trim().startsWith(prefix))?.trim();
}

function stages(file: string): Stage[] {
  const out: Stage[] = [];
  let workdir = '/';
  for (const ins of parseDockerfile(file)) {
    if (ins.keyword === 'FROM') {
      const m = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
      assert.ok(m, `${file}:${ins.line}: FROM ${ins.args}`);
      out.push({ image: m[1], name: m[2], instructions: [], files: new Map(), runs: [], env: new Map() });
      workdir = '/';
      continue;
    }
    const stage = out[out.length - 1];
    assert.ok(stage, `${file}:${ins.line}: ${ins.keyword} before FROM`);
    stage.instructions.push(ins);
    if (ins.keyword === 'WORKDIR') workdir = posix.resolve(workdir, ins.args);
    if (ins.keyword === 'USER') stage.user = ins.args;
    if (ins.keyword === 'RUN') stage.runs.push(ins.args);
    if (ins.keyword === 'ENV') for (const [k, v] of envVariables(ins.args)) stage.env.set(k, v);
    if (ins.keyword === 'COPY' || ins.keyword === 'ADD') {
      const { flags, sources, dest } = copyParts(ins);
      const target = posix.resolve(workdir, dest);
      for (const source of sources) {
        const into = dest.endsWith('/') || sources.length > 1 ? posix.join(target, posix.basename(source)) : target;
        stage.files.set(into, flags.from ? `${flags.from}:${source}` : source);
      }
    }
  }
  return out;
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? filesUnder(join(dir, e.name)) : [join(dir, e.name)]));
}

for (const [kind, { file, base, overlay, tag, engine }] of Object.entries(DOCKERFILES)) {
  test(`${kind} image (${relative(repoPath(), file)}): what it copies exists and is in the build context`, () => {
    const dockerIgnored = dockerIgnoredBy(readDockerignore());
    const all = stages(file);
    const names = new Set<string>();
    for (const stage of all) {
      for (const ins of stage.instructions.filter((i) => i.keyword === 'COPY' || i.keyword === 'ADD')) {
        const { flags, sources } = copyParts(ins);
        assert.notEqual(ins.keyword, 'ADD', `${file}:${ins.line}: COPY, not ADD`);
        if (flags.from) {
          assert.ok(names.has(flags.from) || flags.from.includes(':'), `${file}:${ins.line}: --from=${flags.from} is no earlier stage`);
          continue;
        }
        for (const source of sources) {
          const path = repoPath(source);
          assert.ok(existsSync(path), `${file}:${ins.line}: COPY ${source}: no such file in the project`);
          const files = statSync(path).isDirectory() ? filesUnder(path) : [path];
          assert.ok(files.length > 0);
          for (const f of files) assert.ok(!dockerIgnored(relative(repoPath(), f)), `${file}:${ins.line}: ${relative(repoPath(), f)} is left out by .dockerignore`);
        }
      }
      if (stage.name) names.add(stage.name);
    }
    const final = all[all.length - 1];
    assert.equal(final.image, base);
    assert.ok(all.every((s) => s.image === base || /^node:20-/.test(s.image)), 'Node.js 20 and the named base only');
  });

  test(`${kind} image: npm ci, the npm scripts it calls, the bins on the PATH, a font, a non-root user`, () => {
    const all = stages(file);
    const runs = all.flatMap((s) => s.runs).join('\n');
    // Exactly the lock file's packages; the build is the package's own script.
    const buildStage = all.find((s) => s.runs.some((r) => /\bnpm ci\b/.test(r)));
    assert.ok(buildStage, 'npm ci');
    assert.ok(buildStage.files.has('/app/package-lock.json') && buildStage.files.has('/app/package.json'), 'package.json and package-lock.json copied before npm ci');
    for (const m of runs.matchAll(/\bnpm run ([\w:-]+)/g)) assert.ok(pkg.scripts[m[1]], `npm run ${m[1]}: no such script in package.json`);
    assert.match(runs, /npm run build/);
    // The image copies tsconfig.json and src/ for it: the build compiles the fused kernels
    // (AssemblyScript, whose sources and config lie in src/), then tsc; it also marks the two bins executable.
    assert.match(pkg.scripts.build, /^npm run build:wasm && tsc -p tsconfig\.json( && node -e "[^"]*")?$/);
    const asc = /^asc (\S+) --config (\S+)$/.exec(pkg.scripts['build:wasm']);
    assert.ok(asc, `build:wasm is one asc call: ${pkg.scripts['build:wasm']}`);
    for (const input of asc.slice(1)) {
      assert.ok(input.startsWith('src/'), `${input} is copied with src/`);
      assert.ok(existsSync(repoPath(input)), `${input} exists`);
    }
    assert.ok(pkg.devDependencies.assemblyscript, 'assemblyscript is installed by npm ci (and pruned after the build)');

    // tfjs-node-gpu: in the tfjs-node-gpu image only, the version of the tfjs packages the project pins, its install step allowed.
    const gpuEngine = /@tensorflow\/tfjs-node-gpu@([\d.]+)/.exec(runs);
    if (kind === 'tfjs-node-gpu') {
      assert.ok(gpuEngine, 'the GPU image installs @tensorflow/tfjs-node-gpu');
      assert.equal(gpuEngine[1], '4.22.0');
      assert.equal(gpuEngine[1], pkg.dependencies['@tensorflow/tfjs-core'], 'one tfjs-core for the engine and the project');
      assert.equal(pkg.allowScripts['@tensorflow/tfjs-node-gpu'], true);
      assert.doesNotMatch(runs.split('\n').find((r) => r.includes('tfjs-node-gpu')) ?? '', /--ignore-scripts/);
    } else assert.equal(gpuEngine, null, `the ${kind} image has no tfjs-node-gpu`);

    // `coordinator` and `worker` on the PATH, pointing at package.json's bins as tsc builds them.
    const final = all[all.length - 1];
    const finalRuns = final.runs.join('\n');
    for (const [name, bin] of Object.entries(pkg.bin)) {
      assert.ok(existsSync(repoPath(bin)), `${bin} (package.json bin ${name}) is built`);
      assert.ok(finalRuns.includes(`ln -s /app/${bin} /usr/local/bin/${name}`), `${name} → /app/${bin} on the PATH`);
      assert.ok(new RegExp(`chmod \\d+ [^&]*\\b${bin.replace(/[./]/g, '\\$&')}\\b`).test(finalRuns), `${bin} is executable`);
      assert.ok(final.files.get('/app/dist')?.endsWith(':/app/dist'), 'dist/ from the build stage');
    }
    assert.match(finalRuns, /fonts-dejavu-core/);
    assert.equal(final.files.get('/app/node_modules'), 'build:/app/node_modules');

    // A numeric non-root user, the one the pods run as.
    assert.match(final.user ?? '', /^(\d+):(\d+)$/);
    const [uid, gid] = (final.user ?? '').split(':').map(Number);
    assert.ok(uid > 0 && gid > 0);
  });

  test(`${kind} image: the ${relative(K8S, overlay)} overlay's pods run as its user`, KUSTOMIZE, () => {
    const [uid, gid] = ((stages(file).at(-1) as Stage).user ?? '').split(':').map(Number);
    for (const o of render(overlay).filter((x) => x.kind === 'Job')) {
      const sc = (o as KObject).spec.template.spec.securityContext;
      assert.equal(sc.runAsUser, uid, `${o.metadata.name}: runAsUser`);
      assert.equal(sc.runAsGroup, gid, `${o.metadata.name}: runAsGroup`);
    }
  });

  test(`${kind} image: it holds every command the ${relative(K8S, overlay)} overlay's pods run`, KUSTOMIZE, () => {
    const final = stages(file).at(-1) as Stage;
    for (const o of render(overlay).filter((x) => x.kind === 'Job')) {
      for (const c of containersOf(o)) {
        assert.ok(Array.isArray(c.command) && c.command.length > 0, `${o.metadata.name}: names its command`);
        const program = c.command[0] as string;
        if (program.startsWith('/')) {
          const source = final.files.get(program);
          assert.ok(source, `${o.metadata.name}: ${program} is not copied into the image`);
          assert.ok(existsSync(repoPath(source)), `${program} ← ${source}`);
          assert.ok(final.runs.some((r) => new RegExp(`chmod \\d+ [^&]*${relative('/app', program).replace(/[./]/g, '\\$&')}`).test(r)), `${program} is executable`);
        } else {
          assert.ok(program in pkg.bin, `${o.metadata.name}: ${program} is one of package.json's bins`);
        }
      }
    }
  });

  test(`${kind} image: the ${relative(K8S, overlay)} overlay runs it (mnist-ddp:${pkg.version}-${tag}), its workers on the engine it holds`, KUSTOMIZE, () => {
    const objects = render(overlay);
    const [coordinator, worker] = ['mnist-coordinator', 'mnist-worker'].map((name) => findObject(objects, 'Job', name).spec.template.spec.containers[0] as KObject);
    // The overlay pins the release: package.json's version, then the image's variant.
    for (const c of [coordinator, worker]) assert.equal(c.image, `mnist-ddp:${pkg.version}-${tag}`, c.name);
    // The build command in the Dockerfile's header builds that variant (docs/kubernetes.md, step 1,
    // tags it with the release for the registry).
    const build = new RegExp(`^#\\s+docker build -f ${relative(repoPath(), file).replace(/[./]/g, '\\$&')} -t mnist-ddp:${tag} \\.$`, 'm');
    assert.match(readFileSync(file, 'utf8'), build);
    // The workers pin the image's engine (none: auto); the coordinator computes nothing heavy and never takes a GPU.
    const args = worker.args as string[];
    assert.ok(args.filter((a) => a === '--engine').length <= 1);
    const pinned = args.includes('--engine') ? args[args.indexOf('--engine') + 1] : undefined;
    assert.equal(pinned, engine, 'the workers\' --engine');
    if (pinned !== undefined) assert.ok(ENGINES.includes(pinned), `--engine ${pinned}`);
    assert.ok((coordinator.args as string[]).includes('--no-cuda'));
  });
}

test('webgpu image: Debian and Node.js 20, no CUDA; the Vulkan loader, and the NVIDIA driver\'s graphics capability', () => {
  const { file, base } = DOCKERFILES.webgpu;
  const all = stages(file);
  const final = all.at(-1) as Stage;
  // No CUDA anywhere: every stage is the Node.js image itself, and nothing installs CUDA or tfjs-node.
  for (const stage of all) {
    assert.equal(stage.image, base);
    for (const p of aptPackages(stage)) assert.doesNotMatch(p, /cuda|cudnn|nvidia|tensorrt/i, `apt-get install ${p}`);
    for (const r of stage.runs) assert.doesNotMatch(r, /cuda|cudnn|tfjs-node/i, `RUN ${r}`);
  }
  assert.doesNotMatch(base, /cuda|nvidia/i);

  // The Vulkan loader (Dawn opens libvulkan.so.1) and the libraries that the NVIDIA driver's Vulkan
  // driver, mounted from the node, loads beside it; no Vulkan driver of its own.
  const apt = aptPackages(final);
  for (const p of ['libvulkan1', 'libegl1', 'libxext6', 'fonts-dejavu-core']) assert.ok(apt.includes(p), `apt-get install ${p}: ${apt.join(' ')}`);
  assert.ok(!apt.some((p) => /mesa-vulkan|swiftshader|lavapipe/.test(p)), 'no software Vulkan driver');
  assert.ok(all.slice(0, -1).every((s) => aptPackages(s).length === 0), 'the build stage needs no system package');

  // The NVIDIA Container Toolkit mounts the driver's Vulkan ICD and libraries only for `graphics`.
  const caps = (final.env.get('NVIDIA_DRIVER_CAPABILITIES') ?? '').split(',');
  for (const c of ['graphics', 'compute', 'utility']) assert.ok(caps.includes(c), `NVIDIA_DRIVER_CAPABILITIES=${caps.join(',')}: ${c}`);
  assert.equal(final.env.get('NVIDIA_VISIBLE_DEVICES'), 'all');
  assert.equal(final.env.get('NODE_ENV'), 'production');

  // The engine's two packages come from package-lock.json with `npm ci`, no install script run:
  // Dawn's binding for Node (its binary prebuilt in the package) and tfjs's WebGPU backend, the
  // version of tfjs-core. The build stops if either is missing.
  const lockVersion = (name: string): string | undefined => lock.packages[`node_modules/${name}`]?.version;
  for (const name of ['webgpu', '@tensorflow/tfjs-backend-webgpu']) {
    assert.ok(pkg.dependencies[name], `${name} is one of package.json's dependencies`);
    assert.ok(lockVersion(name), `${name} is in package-lock.json`);
  }
  assert.equal(lockVersion('@tensorflow/tfjs-backend-webgpu'), lockVersion('@tensorflow/tfjs-core'));
  assert.equal(pkg.allowScripts.webgpu, false, 'webgpu\'s install script (macOS only) stays off');
  const buildStage = all.find((s) => s.runs.some((r) => /\bnpm ci\b/.test(r))) as Stage;
  assert.match(runPart(buildStage, 'npm ci') ?? '', /--ignore-scripts/);
  assert.ok(!buildStage.runs.some((r) => /npm (install|i) /.test(r)), 'nothing installed beside package-lock.json');
  const checks = buildStage.runs.flatMap((r) => r.split(/\s+&&\s+/)).filter((p) => p.startsWith('test -f '));
  assert.ok(checks.some((c) => c.includes('node_modules/webgpu/dist/') && c.endsWith('/dawn.node"')), checks.join('\n'));
  assert.ok(checks.includes('test -f node_modules/@tensorflow/tfjs-backend-webgpu/package.json'), checks.join('\n'));
});

test('webgpu image: the Vulkan loader\'s runtime folder and HOME are writable in every pod of its overlay', KUSTOMIZE, () => {
  const { file, overlay } = DOCKERFILES.webgpu;
  const final = stages(file).at(-1) as Stage;
  // The Vulkan loader's runtime folder and HOME: a folder that every pod mounts writable (an
  // emptyDir), their root filesystem being read-only.
  const jobs = render(overlay).filter((o) => o.kind === 'Job');
  for (const name of ['XDG_RUNTIME_DIR', 'HOME']) {
    const dir = final.env.get(name);
    assert.ok(dir?.startsWith('/'), `${name}=${dir}`);
    for (const job of jobs) {
      const pod = job.spec.template.spec;
      for (const c of containersOf(job)) {
        const mount = (c.volumeMounts as KObject[]).find((m) => m.mountPath === dir);
        assert.ok(mount && !mount.readOnly, `${job.metadata.name}: ${name}=${dir} is mounted writable`);
        assert.ok((pod.volumes as KObject[]).find((v) => v.name === mount.name)?.emptyDir, `${job.metadata.name}: ${dir} is an emptyDir`);
        assert.ok(!(c.env as KObject[] | undefined)?.some((e) => e.name === name && e.value !== dir), `${job.metadata.name}: ${name} is not set elsewhere`);
      }
    }
  }
});

test('images: of the webgpu package\'s prebuilt Dawn, each keeps the binary the package loads on its platform', { skip: process.platform !== 'linux' && 'the images are Linux' }, () => {
  const installed = repoPath('node_modules', 'webgpu');
  assert.ok(existsSync(join(installed, 'package.json')), 'npm ci installed webgpu');
  const platforms = readdirSync(join(installed, 'dist'));
  assert.ok(platforms.length > 1 && platforms.includes(`linux-${process.arch}`), platforms.join(' '));
  for (const [kind, { file }] of Object.entries(DOCKERFILES)) {
    const build = stages(file).find((s) => s.runs.some((r) => r.includes('node_modules/webgpu/dist')));
    const prune = build && runPart(build, 'find node_modules/webgpu/dist');
    assert.ok(prune, `${kind}: prunes node_modules/webgpu/dist`);
    // The build stage's package: its own files, and its dist/ folders as links to the installed ones.
    const pkgDir = join(tempDir('mnist-dawn-'), 'node_modules', 'webgpu');
    mkdirSync(join(pkgDir, 'dist'), { recursive: true });
    for (const f of readdirSync(installed)) if (statSync(join(installed, f)).isFile()) copyFileSync(join(installed, f), join(pkgDir, f));
    for (const p of platforms) symlinkSync(join(installed, 'dist', p), join(pkgDir, 'dist', p));
    execFileSync('sh', ['-c', prune], { cwd: dirname(dirname(pkgDir)), env: { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH}` } });
    assert.deepEqual(readdirSync(join(pkgDir, 'dist')), [`linux-${process.arch}`], kind);
    assert.ok(platforms.every((p) => existsSync(join(installed, 'dist', p))), 'only the copy was pruned');
    // What is left is what the package loads.
    const load = spawnSync(process.execPath, ['--input-type=module', '-e', `const m = await import(${JSON.stringify(pathToFileURL(join(pkgDir, 'index.js')).href)}); process.exit(typeof m.create === 'function' ? 0 : 3);`], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(load.status, 0, `${kind}: ${load.stderr}`);
  }
});

test('.dockerignore keeps keys, builds, runs and the git folder out of the build context', () => {
  const dockerIgnored = dockerIgnoredBy(readDockerignore());
  for (const path of ['keys/coordinator.secret', 'mnist-keys/worker.public', 'src/worker.secret', 'node_modules/zeromq/package.json', 'dist/src/cli/coordinator.js', 'runs/r/checkpoint.bin', 'scratch/t.mjs', '.git/config', 'test/helpers.ts', 'k8s/base/kustomization.yaml', 'npm-debug.log']) {
    assert.ok(dockerIgnored(path), `${path} reaches the build context`);
  }
  for (const path of ['package.json', 'package-lock.json', 'tsconfig.json', 'src/cli/coordinator.ts', 'src/models/net.ts', 'deploy/coordinator-entrypoint.sh']) {
    assert.ok(!dockerIgnored(path), `${path} is left out of the build context`);
  }
});

test('the images build from src/ alone: no source imports a file outside it', () => {
  for (const f of filesUnder(repoPath('src')).filter((p) => p.endsWith('.ts'))) {
    for (const m of readFileSync(f, 'utf8').matchAll(/(?:from\s+|import\s*\(\s*)'(\.{1,2}\/[^']+)'/g)) {
      const target = resolve(dirname(f), m[1]);
      assert.ok(!relative(repoPath('src'), target).startsWith('..'), `${relative(repoPath(), f)} imports ${m[1]}`);
    }
  }
});

test('coordinator-entrypoint.sh adds --resume when --out holds a checkpoint, and only then', () => {
  assert.ok((statSync(ENTRYPOINT).mode & 0o111) !== 0, 'executable');
  execFileSync('sh', ['-n', ENTRYPOINT]);
  const dir = tempDir('mnist-entrypoint-');
  // A stand-in `coordinator` that records its arguments and exits with $EXIT.
  const bin = join(dir, 'bin');
  mkdirSync(bin, { recursive: true });
  writeFileSync(join(bin, 'coordinator'), '#!/bin/sh\nprintf "%s\\n" "$@" > "$ARGS_FILE"\nexit "${EXIT:-0}"\n');
  chmodSync(join(bin, 'coordinator'), 0o755);
  const run = (args: string[], exit = 0): { args: string[]; code: number | null; stderr: string } => {
    const argsFile = join(dir, 'args');
    const r = spawnSync(ENTRYPOINT, args, { env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, ARGS_FILE: argsFile, EXIT: String(exit) }, encoding: 'utf8' });
    return { args: readFileSync(argsFile, 'utf8').split('\n').slice(0, -1), code: r.status, stderr: r.stderr };
  };
  const out = join(dir, 'runs', 'mnist');
  const base = ['--workers', '2', '--no-spawn', '--listen', 'tcp://0.0.0.0:5555', '--keys', '/keys', '--out', out, '--epochs', '3'];

  let r = run(base);
  assert.deepEqual(r.args, base, 'a first start: as given');
  assert.equal(r.stderr, '');

  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'checkpoint.prev.bin'), 'x');
  assert.deepEqual(run(base).args, [...base, '--resume'], 'the previous checkpoint alone is enough to resume from');
  writeFileSync(join(out, 'checkpoint.bin'), 'x');
  r = run(base);
  assert.deepEqual(r.args, [...base, '--resume'], 'a restarted pod: resumes');
  assert.match(r.stderr, /holds a checkpoint: continuing that run \(--resume\)/);
  assert.deepEqual(run([...base, '--resume']).args, [...base, '--resume'], 'never twice');
  const withEquals = ['--workers', '2', `--out=${out}`];
  assert.deepEqual(run(withEquals).args, [...withEquals, '--resume']);
  assert.deepEqual(run(['--workers', '2', '--out', join(dir, 'elsewhere')]).args, ['--workers', '2', '--out', join(dir, 'elsewhere')]);
  assert.equal(run(base, 3).code, 3, 'the exit status is the coordinator\'s');
  assert.equal(run(['--out', 'a b']).args.join('|'), '--out|a b', 'arguments pass through unsplit');
});
