/**
 * Shared by the k8s-*.test.ts files: render k8s/ with kustomize itself (`kubectl kustomize`),
 * validate what it renders against Kubernetes' own schemas, and read the Dockerfiles.
 *
 * k8s/ uses kustomize's `replacements` (the worker count, set once in settings.yaml, copied into
 * both Jobs, integers staying integers), which kustomize has from v4; the tests ask for v5, the
 * kustomize of kubectl 1.27 and later. Debian's `kubernetes-client` (kubectl 1.20, kustomize
 * v2.0.3) renders none of k8s/: no `replacements`, no folders under `resources`; its `vars` turn
 * the Jobs' integers into strings. `.ci/run` installs kubectl where it is missing or too old.
 * Without it, a test that renders skips with one line, and fails under CI (CI=true).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';

/** The repository root (this file runs from dist/test/). */
export const REPO = resolve(fileURLToPath(new URL('../..', import.meta.url)));
export const K8S = join(REPO, 'k8s');

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type KObject = Record<string, any>;

function isMap(v: unknown): v is KObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * YAML as Kubernetes reads it (sigs.k8s.io/yaml: YAML 1.1, so `0440` is octal), every document
 * but empty ones.
 */
export function parseYamlDocuments(text: string, source: string): KObject[] {
  const out: KObject[] = [];
  for (const doc of parseAllDocuments(text, { version: '1.1', uniqueKeys: true })) {
    if (doc.errors.length > 0) throw new Error(`${source}: ${doc.errors[0].message}`);
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) continue;
    if (!isMap(value)) throw new Error(`${source}: a document that is not a mapping`);
    out.push(value);
  }
  return out;
}

export function parseYamlFile(path: string): KObject[] {
  return parseYamlDocuments(readFileSync(path, 'utf8'), path);
}

function apiGroup(apiVersion: string): string {
  return apiVersion.includes('/') ? apiVersion.split('/')[0] : '';
}

/** kustomize's resource id: group, kind, namespace, name. */
export function objectId(o: KObject): string {
  return `${apiGroup(String(o.apiVersion ?? ''))}/${o.kind}/${o.metadata?.namespace ?? ''}/${o.metadata?.name}`;
}

/** The kustomize major version k8s/ needs. */
const KUSTOMIZE_MAJOR = 5;

let missing: string | undefined | null = null;
/** Why `kubectl kustomize` cannot render k8s/ here, or undefined where it can. */
export function kustomizeMissing(): string | undefined {
  if (missing === null) {
    try {
      const out = execFileSync('kubectl', ['version', '--client', '-o', 'json'], { encoding: 'utf8', timeout: 30_000, stdio: ['ignore', 'pipe', 'ignore'] });
      const { kustomizeVersion, clientVersion } = JSON.parse(out) as { kustomizeVersion?: string; clientVersion?: { gitVersion?: string } };
      const major = Number(/^v?(\d+)\./.exec(kustomizeVersion ?? '')?.[1]);
      missing = major >= KUSTOMIZE_MAJOR ? undefined : `kubectl ${clientVersion?.gitVersion ?? ''} is too old: its kustomize (${kustomizeVersion ?? 'before v4'}) cannot render k8s/`;
    } catch {
      missing = 'kubectl is not installed here';
    }
  }
  return missing;
}

/**
 * The options of a test that renders k8s/: it skips, with one line saying why, where kubectl's
 * kustomize is missing, except under CI, where .ci/run installs it and the test fails instead.
 */
export function needsKustomize(): { skip: string | false } {
  const why = kustomizeMissing();
  return { skip: why !== undefined && process.env.CI !== 'true' ? `${why}; kubectl 1.27 or later runs this test (.ci/run installs it)` : false };
}

/** `kubectl kustomize DIR`: what `kubectl apply -k DIR` would send, as objects. */
export function render(dir: string): KObject[] {
  const why = kustomizeMissing();
  if (why) throw new Error(`${why} (CI installs it: see .ci/run)`);
  let text: string;
  try {
    text = execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8', timeout: 60_000, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const stderr = String((e as { stderr?: unknown }).stderr ?? '').trim();
    throw new Error(`kubectl kustomize ${shortPath(dir)}: ${stderr || (e as Error).message}`);
  }
  return parseYamlDocuments(text, `kubectl kustomize ${shortPath(dir)}`);
}

/** A path inside the repository relative to it, any other as it is. */
function shortPath(path: string): string {
  const inRepo = relative(REPO, path);
  return inRepo === '' || inRepo.startsWith('..') ? path : inRepo;
}

/** Every container of a workload (pod templates and pods). */
export function containersOf(o: KObject): KObject[] {
  const spec = o.kind === 'Pod' ? o.spec : o.spec?.template?.spec;
  return [...(spec?.initContainers ?? []), ...(spec?.containers ?? [])] as KObject[];
}

export function findObject(objects: KObject[], kind: string, name: string): KObject {
  const found = objects.find((o) => o.kind === kind && o.metadata?.name === name);
  if (!found) throw new Error(`no ${kind} ${name} among ${objects.map((o) => `${o.kind}/${o.metadata?.name}`).join(', ')}`);
  return found;
}

// ---------------------------------------------------------------------------------------------
// Validation against Kubernetes' OpenAPI schemas (the kubernetes-models package)

interface ModelClass {
  new (data: KObject): { validate(): void };
  prototype: { validate(): void };
}

const MODELS: Record<string, () => Promise<ModelClass>> = {
  'batch/v1/Job': async () => (await import('kubernetes-models/batch/v1/Job')).Job as unknown as ModelClass,
  'v1/Service': async () => (await import('kubernetes-models/v1/Service')).Service as unknown as ModelClass,
  'v1/PersistentVolumeClaim': async () => (await import('kubernetes-models/v1/PersistentVolumeClaim')).PersistentVolumeClaim as unknown as ModelClass,
  'v1/ConfigMap': async () => (await import('kubernetes-models/v1/ConfigMap')).ConfigMap as unknown as ModelClass,
  'v1/Secret': async () => (await import('kubernetes-models/v1/Secret')).Secret as unknown as ModelClass,
  'v1/Pod': async () => (await import('kubernetes-models/v1/Pod')).Pod as unknown as ModelClass,
  'monitoring.coreos.com/v1/ServiceMonitor': async () => (await import('@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor')).ServiceMonitor as unknown as ModelClass,
};

/**
 * Problems with one object: what the schema rejects (types, enums, required fields), and fields
 * the schema does not know (which `kubectl apply` refuses with strict field validation).
 */
export async function schemaProblems(o: KObject): Promise<string[]> {
  const name = `${o.kind}/${o.metadata?.name}`;
  const load = MODELS[`${o.apiVersion}/${o.kind}`];
  if (!load) return [`${name}: no schema here for ${o.apiVersion} ${o.kind}`];
  const Model = await load();
  const problems: string[] = [];
  try {
    new Model(o).validate();
  } catch (e) {
    problems.push(`${name}: ${(e as Error).message}`);
  }
  for (const field of unknownFields(Model, o)) problems.push(`${name}: unknown field ${field}`);
  return problems;
}

/**
 * The schema validators read every field they know; a field present in the object that the
 * validator never read is one the schema does not have. Maps of free keys (labels, data,
 * resources) are read whole, so their keys count as read.
 */
function unknownFields(Model: ModelClass, o: KObject): string[] {
  const read = new Map<string, { keys: Set<string>; value: KObject }>();
  const wrap = (value: unknown, path: string): unknown => {
    if (typeof value !== 'object' || value === null) return value;
    let entry = read.get(path);
    if (!entry) read.set(path, (entry = { keys: new Set(), value: value as KObject }));
    const keys = entry.keys;
    return new Proxy(value as KObject, {
      get(target, key, receiver) {
        const v: unknown = Reflect.get(target, key, receiver);
        if (typeof key !== 'string' || !Object.hasOwn(target, key)) return v;
        keys.add(key);
        return wrap(v, `${path}/${key}`);
      },
      has(target, key) {
        if (typeof key === 'string') keys.add(key);
        return Reflect.has(target, key);
      },
    });
  };
  try {
    Model.prototype.validate.call(wrap(structuredClone(o), '') as never);
  } catch {
    // reported by schemaProblems
  }
  const unknown: string[] = [];
  for (const [path, { keys, value }] of read) {
    if (Array.isArray(value)) continue;
    for (const key of Object.keys(value)) if (!keys.has(key)) unknown.push(`${path}/${key}`);
  }
  return unknown.sort();
}

// ---------------------------------------------------------------------------------------------
// Dockerfiles and .dockerignore

export interface DockerInstruction {
  keyword: string;
  args: string;
  line: number;
}

/** A Dockerfile's instructions: continuation lines joined, comments and blank lines dropped. */
export function parseDockerfile(path: string): DockerInstruction[] {
  const lines = readFileSync(path, 'utf8').split('\n');
  const out: DockerInstruction[] = [];
  let buffer = '';
  let start = 0;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (buffer === '' && /^\s*(#|$)/.test(line)) continue;
    if (buffer !== '' && /^\s*#/.test(line)) continue; // comment inside a continued instruction
    if (buffer === '') start = i + 1;
    if (/\\\s*$/.test(line)) {
      buffer += `${line.replace(/\\\s*$/, '')} `;
      continue;
    }
    buffer += line;
    const m = /^\s*([A-Za-z]+)\s+([\s\S]*)$/.exec(buffer);
    if (!m) throw new Error(`${path}:${start}: cannot parse ${buffer}`);
    out.push({ keyword: m[1].toUpperCase(), args: m[2].trim(), line: start });
    buffer = '';
  }
  if (buffer !== '') throw new Error(`${path}: ends inside a continued line`);
  return out;
}

/** COPY/ADD sources and destination, flags (--from=, --chown=, ...) apart. */
export function copyParts(args: string): { flags: Record<string, string>; sources: string[]; dest: string } {
  const flags: Record<string, string> = {};
  let rest = args;
  for (let m = /^--([\w-]+)(?:=(\S+))?\s+/.exec(rest); m; m = /^--([\w-]+)(?:=(\S+))?\s+/.exec(rest)) {
    flags[m[1]] = m[2] ?? 'true';
    rest = rest.slice(m[0].length);
  }
  const words = rest.startsWith('[') ? (JSON.parse(rest) as string[]) : rest.split(/\s+/);
  return { flags, sources: words.slice(0, -1), dest: words[words.length - 1] };
}

/**
 * Docker's .dockerignore rules: each line a pattern (`*`, `?`, `**`), `!` re-includes, the last
 * matching line wins, and a pattern that matches a folder matches everything in it.
 */
export function dockerIgnored(patterns: string[], path: string): boolean {
  let ignored = false;
  const parts = path.split('/');
  for (const raw of patterns) {
    const negate = raw.startsWith('!');
    const pattern = (negate ? raw.slice(1) : raw).trim().replace(/^\/+|\/+$/g, '');
    if (pattern === '') continue;
    const re = globToRegExp(pattern);
    let matches = false;
    for (let n = 1; n <= parts.length && !matches; n++) matches = re.test(parts.slice(0, n).join('/'));
    if (matches) ignored = !negate;
  }
  return ignored;
}

function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i];
    if (ch === '*' && glob[i + 1] === '*') {
      re += '.*';
      i++;
      if (glob[i + 1] === '/') i++;
    } else if (ch === '*') re += '[^/]*';
    else if (ch === '?') re += '[^/]';
    else re += ch.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

export function readDockerignore(): string[] {
  return readFileSync(join(REPO, '.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
}

export function repoPath(...parts: string[]): string {
  return join(REPO, ...parts);
}
