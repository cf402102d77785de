/**
 * Shared by the k8s-*.test.ts files: render k8s/ offline, validate what it renders against
 * Kubernetes' own schemas, and read the Dockerfiles.
 *
 * Rendering: `renderKustomization` implements exactly the kustomize features that k8s/ uses, and
 * refuses every other one, so that k8s/ keeps to them (docs/kubernetes.md says which):
 *   - `resources`: files (one or more YAML documents) and directories holding a kustomization;
 *   - `patches` with `path:` only: strategic merge patches, the target named by the patch's own
 *     apiVersion/kind/metadata.name (lists merged by their Kubernetes merge key: containers,
 *     env, volumes, ...; other lists replaced; `null` deletes a field);
 *   - `images`: name → newName / newTag / digest;
 *   - `replacements`: a source field (kind, name, fieldPath) copied into target fieldPaths
 *     (`a.b`, `list.[key=value]`, `list.3`); a target scalar keeps its type, as in kustomize;
 *   - the `config.kubernetes.io/local-config` annotation: such objects feed replacements and are
 *     left out of the output.
 * Order within one kustomization, as in kustomize: resources, patches, images, replacements.
 * Where `kubectl` is installed, `renderWithKubectl` gives kustomize's own output, and a test
 * checks that both agree.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
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

const KUSTOMIZATION_FILES = ['kustomization.yaml', 'kustomization.yml', 'Kustomization'];
const SUPPORTED_FIELDS = new Set(['apiVersion', 'kind', 'resources', 'patches', 'images', 'replacements']);

function readKustomization(dir: string): KObject {
  const file = KUSTOMIZATION_FILES.map((f) => join(dir, f)).find((f) => existsSync(f));
  if (!file) throw new Error(`${dir}: no kustomization.yaml`);
  const docs = parseYamlFile(file);
  if (docs.length !== 1) throw new Error(`${file}: expected one document`);
  const k = docs[0];
  for (const key of Object.keys(k)) {
    if (!SUPPORTED_FIELDS.has(key)) throw new Error(`${file}: kustomize feature '${key}' is not one the test renderer implements (see test/k8s-helpers.ts)`);
  }
  if (k.kind !== undefined && k.kind !== 'Kustomization') throw new Error(`${file}: kind ${k.kind}, expected Kustomization`);
  return k;
}

/** Renders a kustomization directory like `kubectl kustomize DIR` (object order aside). */
export function renderKustomization(dir: string): KObject[] {
  return build(resolve(dir)).filter((o) => o.metadata?.annotations?.['config.kubernetes.io/local-config'] !== 'true');
}

function build(dir: string): KObject[] {
  const k = readKustomization(dir);
  let objects: KObject[] = [];
  for (const entry of (k.resources ?? []) as unknown[]) {
    if (typeof entry !== 'string' || /^[a-z]+:\/\//i.test(entry) || entry.includes('?ref=')) throw new Error(`${dir}: resource ${String(entry)}: only local files and directories`);
    const path = resolve(dir, entry);
    if (!existsSync(path)) throw new Error(`${dir}: resource ${entry} does not exist`);
    objects.push(...(statSync(path).isDirectory() ? build(path) : parseYamlFile(path)));
  }
  const ids = new Set<string>();
  for (const o of objects) {
    const id = objectId(o);
    if (ids.has(id)) throw new Error(`${dir}: two resources with the id ${id}`);
    ids.add(id);
  }
  for (const p of (k.patches ?? []) as KObject[]) {
    const keys = Object.keys(p);
    if (keys.length !== 1 || typeof p.path !== 'string') throw new Error(`${dir}: patches: only { path: FILE } entries are implemented`);
    for (const patch of parseYamlFile(resolve(dir, p.path))) {
      const target = objects.find((o) => objectId(o) === objectId(patch));
      if (!target) throw new Error(`${dir}: patch ${p.path}: no resource ${objectId(patch)}`);
      objects = objects.map((o) => (o === target ? (strategicMerge(o, patch, []) as KObject) : o));
    }
  }
  for (const image of (k.images ?? []) as KObject[]) setImages(objects, image, dir);
  for (const r of (k.replacements ?? []) as KObject[]) replace(objects, r, dir);
  return objects;
}

/** Lists that a strategic merge patch merges element by element, and the key that pairs them. */
const MERGE_KEYS: Record<string, string> = {
  containers: 'name',
  initContainers: 'name',
  env: 'name',
  volumes: 'name',
  volumeMounts: 'mountPath',
  imagePullSecrets: 'name',
};
/** Lists that do merge in Kubernetes' strategic merge but that this renderer does not merge. */
const UNMERGED_LISTS = new Set(['ports', 'volumeDevices', 'hostAliases', 'topologySpreadConstraints', 'resourceClaims', 'finalizers']);

/**
 * Kubernetes' strategic merge, for the fields above: maps merge, `null` deletes, lists with a
 * merge key pair their elements (patch elements first, in the patch's order, then the others, as
 * kustomize writes them), every other list and scalar is replaced.
 */
export function strategicMerge(dest: unknown, patch: unknown, path: string[]): unknown {
  if (isMap(patch)) {
    for (const key of Object.keys(patch)) if (key.startsWith('$')) throw new Error(`patch directive ${key} at ${path.join('.')} is not implemented`);
    if (!isMap(dest)) return structuredClone(patch);
    const out: KObject = { ...dest };
    for (const [key, value] of Object.entries(patch)) {
      if (value === null) delete out[key];
      else out[key] = strategicMerge(dest[key], value, [...path, key]);
    }
    return out;
  }
  if (Array.isArray(patch)) {
    const field = path[path.length - 1] ?? '';
    if (UNMERGED_LISTS.has(field)) throw new Error(`patching the list ${path.join('.')} is not implemented`);
    const key = MERGE_KEYS[field];
    if (!key || !Array.isArray(dest)) return structuredClone(patch);
    const used = new Set<unknown>();
    const merged = patch.map((p: unknown) => {
      if (!isMap(p) || p[key] === undefined) throw new Error(`${path.join('.')}: a patch element without its merge key ${key}`);
      const match = dest.find((d: unknown) => isMap(d) && d[key] === p[key]);
      if (match === undefined) return structuredClone(p);
      used.add(match);
      return strategicMerge(match, p, path);
    });
    return [...merged, ...dest.filter((d: unknown) => !used.has(d))];
  }
  return patch;
}

/** Every container of a workload (pod templates and pods). */
export function containersOf(o: KObject): KObject[] {
  const spec = o.kind === 'Pod' ? o.spec : o.spec?.template?.spec;
  return [...(spec?.initContainers ?? []), ...(spec?.containers ?? [])] as KObject[];
}

function setImages(objects: KObject[], image: KObject, dir: string): void {
  for (const key of Object.keys(image)) if (!['name', 'newName', 'newTag', 'digest'].includes(key)) throw new Error(`${dir}: images: '${key}' is not implemented`);
  for (const o of objects) {
    for (const c of containersOf(o)) {
      if (typeof c.image !== 'string') continue;
      const m = /^(.*?)(?::([\w][\w.-]*))?(?:@(sha256:[0-9a-f]+))?$/.exec(c.image);
      if (!m || m[1] !== image.name) continue;
      const name = image.newName ?? m[1];
      if (image.digest) c.image = `${name}@${image.digest}`;
      else {
        const tag = image.newTag ?? m[2];
        c.image = `${name}${tag ? `:${tag}` : ''}${!image.newTag && m[3] ? `@${m[3]}` : ''}`;
      }
    }
  }
}

/** kustomize field paths: `spec.template.spec.containers.[name=worker].args.1`. */
export function splitFieldPath(fieldPath: string): string[] {
  const parts: string[] = [];
  let current = '';
  let depth = 0;
  for (const ch of fieldPath) {
    if (ch === '[') depth++;
    if (ch === ']') depth--;
    if (ch === '.' && depth === 0) {
      parts.push(current);
      current = '';
    } else current += ch;
  }
  parts.push(current);
  if (parts.some((p) => p === '')) throw new Error(`bad field path ${fieldPath}`);
  return parts;
}

/** The parent node and the key of the field a path names; throws where the path leads nowhere. */
function locate(root: KObject, fieldPath: string): { parent: KObject | unknown[]; key: string | number } {
  const parts = splitFieldPath(fieldPath);
  let node: unknown = root;
  for (let i = 0; i < parts.length - 1; i++) node = step(node, parts[i], fieldPath);
  const last = parts[parts.length - 1];
  if (Array.isArray(node)) {
    const index = listIndex(node, last, fieldPath);
    return { parent: node, key: index };
  }
  if (!isMap(node) || !(last in node)) throw new Error(`field path ${fieldPath}: no field ${last}`);
  return { parent: node, key: last };
}

function listIndex(list: unknown[], part: string, fieldPath: string): number {
  const select = /^\[([^=\]]+)=([^\]]*)\]$/.exec(part);
  const index = select ? list.findIndex((e) => isMap(e) && String(e[select[1]]) === select[2]) : /^\d+$/.test(part) ? Number(part) : -1;
  if (index < 0 || index >= list.length) throw new Error(`field path ${fieldPath}: no element ${part}`);
  return index;
}

function step(node: unknown, part: string, fieldPath: string): unknown {
  if (Array.isArray(node)) return node[listIndex(node, part, fieldPath)];
  if (isMap(node) && part in node) return node[part];
  throw new Error(`field path ${fieldPath}: no field ${part}`);
}

export function getField(o: KObject, fieldPath: string): unknown {
  const { parent, key } = locate(o, fieldPath);
  return (parent as Record<string | number, unknown>)[key];
}

function selects(o: KObject, select: KObject): boolean {
  for (const key of Object.keys(select)) if (!['kind', 'name', 'group', 'version'].includes(key)) throw new Error(`replacements: select.${key} is not implemented`);
  if (select.kind !== undefined && o.kind !== select.kind) return false;
  if (select.name !== undefined && o.metadata?.name !== select.name) return false;
  const [group, version] = String(o.apiVersion).includes('/') ? String(o.apiVersion).split('/') : ['', String(o.apiVersion)];
  if (select.group !== undefined && group !== select.group) return false;
  if (select.version !== undefined && version !== select.version) return false;
  return true;
}

function replace(objects: KObject[], r: KObject, dir: string): void {
  for (const key of Object.keys(r)) if (!['source', 'targets'].includes(key)) throw new Error(`${dir}: replacements: '${key}' is not implemented`);
  const { fieldPath = 'metadata.name', ...select } = r.source as KObject;
  const sources = objects.filter((o) => selects(o, select));
  if (sources.length !== 1) throw new Error(`${dir}: replacement source ${JSON.stringify(r.source)} matches ${sources.length} resources`);
  const value = getField(sources[0], fieldPath as string);
  if (isMap(value) || Array.isArray(value)) throw new Error(`${dir}: replacement source ${fieldPath}: only scalars are implemented`);
  for (const t of r.targets as KObject[]) {
    for (const key of Object.keys(t)) if (!['select', 'fieldPaths'].includes(key)) throw new Error(`${dir}: replacements: targets.${key} is not implemented`);
    const targets = objects.filter((o) => selects(o, t.select as KObject));
    if (targets.length === 0) throw new Error(`${dir}: replacement target ${JSON.stringify(t.select)} matches no resource`);
    for (const o of targets) {
      for (const fp of t.fieldPaths as string[]) {
        const { parent, key } = locate(o, fp);
        const old = (parent as Record<string | number, unknown>)[key];
        // kustomize copies the scalar's text and keeps the target's type (int stays int).
        let next: unknown = value;
        if (typeof old === 'number') {
          next = Number(value);
          if (!Number.isFinite(next as number)) throw new Error(`${dir}: replacement ${fp}: ${String(value)} is not a number`);
        } else if (typeof old === 'string') next = String(value);
        else if (typeof old === 'boolean') next = String(value) === 'true';
        (parent as Record<string | number, unknown>)[key] = next;
      }
    }
  }
}

/** `kubectl kustomize DIR`, where kubectl is installed; undefined where it is not. */
export function renderWithKubectl(dir: string): KObject[] | undefined {
  if (!kubectlAvailable()) return undefined;
  const text = execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8', timeout: 60_000, stdio: ['ignore', 'pipe', 'pipe'] });
  return parseYamlDocuments(text, `kubectl kustomize ${relative(REPO, dir)}`);
}

let kubectlChecked: boolean | undefined;
export function kubectlAvailable(): boolean {
  if (kubectlChecked === undefined) {
    try {
      execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore', timeout: 30_000 });
      kubectlChecked = true;
    } catch {
      kubectlChecked = false;
    }
  }
  return kubectlChecked;
}

/** The rendering the tests check: kubectl's where it exists, else the renderer above. */
export function render(dir: string): KObject[] {
  return renderWithKubectl(dir) ?? renderKustomization(dir);
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
