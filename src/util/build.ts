/**
 * Which build of the program this process runs: the package version and a digest of the code that
 * runs. Workers say it in their hello, so that a coordinator can tell a worker of another build.
 *
 * The digest is the SHA-256 of every file of the built code (dist/src: the JavaScript and the
 * WebAssembly kernels, source maps and type declarations left out), by path and content, computed
 * once per process. Not the git commit: an image or an installed copy has no .git, a commit says
 * nothing of uncommitted changes or of a stale build, and the code that runs is what decides the bits.
 */
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

/** dist/src: this file is dist/src/util/build.js. */
const CODE_ROOT = fileURLToPath(new URL('..', import.meta.url));
/** The package's package.json, beside dist/. */
const PACKAGE_JSON = fileURLToPath(new URL('../../../package.json', import.meta.url));

/** Files that carry no behaviour. */
const IGNORED = /\.(map|d\.ts|tsbuildinfo)$/;

function codeFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...codeFiles(path));
    else if (entry.isFile() && !IGNORED.test(entry.name)) out.push(path);
  }
  return out;
}

/** Hex SHA-256 over the files under `root`, in path order: each path, then its bytes. */
export function codeDigest(root: string = CODE_ROOT): string {
  const hash = createHash('sha256');
  for (const file of codeFiles(root).sort()) {
    const bytes = readFileSync(file);
    hash.update(`${relative(root, file).split('\\').join('/')}\0${bytes.length}\0`);
    hash.update(bytes);
  }
  return hash.digest('hex');
}

function packageVersion(): string {
  try {
    return String((JSON.parse(readFileSync(PACKAGE_JSON, 'utf8')) as { version?: unknown }).version ?? 'unknown');
  } catch {
    return 'unknown';
  }
}

let cached: string | undefined;

/** "0.1.0+sha256:<first 16 hex digits of the code digest>", computed once per process. */
export function buildId(): string {
  cached ??= `${packageVersion()}+sha256:${codeDigest().slice(0, 16)}`;
  return cached;
}
