/**
 * deploy/Dockerfile (GPU) and deploy/Dockerfile.cpu, read without a Docker engine: every path,
 * script and command they name exists in the project and reaches the build context, the images
 * give the pods what they run, and the coordinator's entrypoint adds --resume when it should.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, posix, relative, resolve } from 'node:path';
import { test } from 'node:test';
import { tempDir } from './helpers.js';
import {
  type DockerInstruction,
  K8S,
  type KObject,
  containersOf,
  copyParts,
  dockerIgnored,
  parseDockerfile,
  readDockerignore,
  render,
  repoPath,
} from './k8s-helpers.js';

interface PackageJson {
  bin: Record<string, string>;
  scripts: Record<string, string>;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
  allowScripts: Record<string, boolean>;
}
const pkg = JSON.parse(readFileSync(repoPath('package.json'), 'utf8')) as PackageJson;
const ENTRYPOINT = repoPath('deploy', 'coordinator-entrypoint.sh');
const DOCKERFILES = {
  gpu: { file: repoPath('deploy', 'Dockerfile'), base: 'nvidia/cuda:11.2.2-cudnn8-runtime-ubuntu20.04', overlay: join(K8S, 'overlays', 'gpu') },
  cpu: { file: repoPath('deploy', 'Dockerfile.cpu'), base: 'node:20-bookworm-slim', overlay: join(K8S, 'overlays', 'cpu') },
} as const;

interface Stage {
  name?: string;
  image: string;
  instructions: DockerInstruction[];
  /** Files this stage's COPY instructions put in the image: image path → where from. */
  files: Map<string, string>;
  user?: string;
  runs: string[];
}

function stages(file: string): Stage[] {
  const out: Stage[] = [];
  let workdir = '/';
  for (const ins of parseDockerfile(file)) {
    if (ins.keyword === 'FROM') {
      const m = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
      assert.ok(m, `${file}:${ins.line}: FROM ${ins.args}`);
      out.push({ image: m[1], name: m[2], instructions: [], files: new Map(), runs: [] });
      workdir = '/';
      continue;
    }
    const stage = out[out.length - 1];
    assert.ok(stage, `${file}:${ins.line}: ${ins.keyword} before FROM`);
    stage.instructions.push(ins);
    if (ins.keyword === 'WORKDIR') workdir = posix.resolve(workdir, ins.args);
    if (ins.keyword === 'USER') stage.user = ins.args;
    if (ins.keyword === 'RUN') stage.runs.push(ins.args);
    if (ins.keyword === 'COPY' || ins.keyword === 'ADD') {
      const { flags, sources, dest } = copyParts(ins.args);
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

for (const [kind, { file, base, overlay }] of Object.entries(DOCKERFILES)) {
  test(`${kind} image (${relative(repoPath(), file)}): what it copies exists and is in the build context`, () => {
    const ignore = readDockerignore();
    const all = stages(file);
    const names = new Set<string>();
    for (const stage of all) {
      for (const ins of stage.instructions.filter((i) => i.keyword === 'COPY' || i.keyword === 'ADD')) {
        const { flags, sources } = copyParts(ins.args);
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
          for (const f of files) assert.ok(!dockerIgnored(ignore, relative(repoPath(), f)), `${file}:${ins.line}: ${relative(repoPath(), f)} is left out by .dockerignore`);
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

    // tfjs-node-gpu: in the GPU image only, the version of the tfjs packages the project pins, its install step allowed.
    const gpuEngine = /@tensorflow\/tfjs-node-gpu@([\d.]+)/.exec(runs);
    if (kind === 'gpu') {
      assert.ok(gpuEngine, 'the GPU image installs @tensorflow/tfjs-node-gpu');
      assert.equal(gpuEngine[1], '4.22.0');
      assert.equal(gpuEngine[1], pkg.dependencies['@tensorflow/tfjs-core'], 'one tfjs-core for the engine and the project');
      assert.equal(pkg.allowScripts['@tensorflow/tfjs-node-gpu'], true);
      assert.doesNotMatch(runs.split('\n').find((r) => r.includes('tfjs-node-gpu')) ?? '', /--ignore-scripts/);
    } else assert.equal(gpuEngine, null, 'the CPU image has no GPU engine');

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
    for (const o of render(overlay).filter((x) => x.kind === 'Job')) {
      const sc = (o as KObject).spec.template.spec.securityContext;
      assert.equal(sc.runAsUser, uid, `${o.metadata.name}: runAsUser`);
      assert.equal(sc.runAsGroup, gid, `${o.metadata.name}: runAsGroup`);
    }
  });

  test(`${kind} image: it holds every command the ${kind} overlay's pods run`, () => {
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
}

test('.dockerignore keeps keys, builds, runs and the git folder out of the build context', () => {
  const ignore = readDockerignore();
  for (const path of ['keys/coordinator.secret', 'mnist-keys/worker.public', 'src/worker.secret', 'node_modules/zeromq/package.json', 'dist/src/cli/coordinator.js', 'runs/r/checkpoint.bin', 'scratch/t.mjs', '.git/config', 'test/helpers.ts', 'k8s/base/kustomization.yaml', 'npm-debug.log']) {
    assert.ok(dockerIgnored(ignore, path), `${path} reaches the build context`);
  }
  for (const path of ['package.json', 'package-lock.json', 'tsconfig.json', 'src/cli/coordinator.ts', 'src/models/net.ts', 'deploy/coordinator-entrypoint.sh']) {
    assert.ok(!dockerIgnored(ignore, path), `${path} is left out of the build context`);
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
