/**
 * Shared by the k8s-*.test.ts files: render k8s/ with kustomize itself (`kubectl kustomize`),
 * validate what it renders against Kubernetes' own schemas (kubernetes-models), and read the
 * Dockerfiles (dockerfile-ast) and .dockerignore (@balena/dockerignore).
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
import dockerignoreModule from '@balena/dockerignore';
import { DockerfileParser, JSONInstruction, ModifiableInstruction } from 'dockerfile-ast';
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
  /** The arguments, continuation lines joined, comments dropped, without the flags. */
  args: string;
  /** The flags (`--from=build` → from: build; a flag without a value → 'true'). */
  flags: Record<string, string>;
  /** The arguments one by one: the JSON form's strings, or the words of the plain form. */
  words: string[];
  line: number;
}

/** A Dockerfile's instructions, as Docker reads them (dockerfile-ast's parser). */
export function parseDockerfile(path: string): DockerInstruction[] {
  return DockerfileParser.parse(readFileSync(path, 'utf8'))
    .getInstructions()
    .map((ins) => {
      const flags = ins instanceof ModifiableInstruction ? Object.fromEntries(ins.getFlags().map((f) => [f.getName(), f.getValue() ?? 'true'])) : {};
      const json = ins instanceof JSONInstruction ? ins.getJSONStrings().map((j) => j.getJSONValue()) : [];
      const words = json.length > 0 ? json : ins.getArguments().map((a) => a.getValue());
      return { keyword: ins.getKeyword().toUpperCase(), args: (ins.getArgumentsContent() ?? '').trim(), flags, words, line: ins.getRange().start.line + 1 };
    });
}

/** COPY/ADD: flags, sources and destination. */
export function copyParts(ins: DockerInstruction): { flags: Record<string, string>; sources: string[]; dest: string } {
  return { flags: ins.flags, sources: ins.words.slice(0, -1), dest: ins.words[ins.words.length - 1] };
}

// The package is CommonJS (`module.exports = factory`) but its types say `export default`: under
// Node's ESM the default import is the factory itself.
const dockerignore = dockerignoreModule as unknown as typeof dockerignoreModule.default;

/**
 * Whether `docker build` leaves a path (relative to the repository) out of the build context, by
 * the repository's .dockerignore: @balena/dockerignore, a port of Docker's own matcher.
 */
export function dockerIgnoredBy(dockerignoreText: string): (path: string) => boolean {
  const rules = dockerignore().add(dockerignoreText);
  return (path) => rules.ignores(path);
}

export function readDockerignore(): string {
  return readFileSync(join(REPO, '.dockerignore'), 'utf8');
}

export function repoPath(...parts: string[]): string {
  return join(REPO, ...parts);
}
