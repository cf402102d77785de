/**
 * What a run's summary and configuration fields mean to a person: a label, a group and how to
 * show the value (rounded, with its unit). Fields not listed here still appear, under a label made
 * from their name and with a unit guessed from it (`_ms`, `_s`, `_mb`, `bytes`, `_per_s`).
 */
import { escapeHtml } from './escape.js';
import {
  formatBytes, formatCount, formatDuration, formatLoss, formatMs, formatNumber, formatPercent, formatRate, formatTimestamp, plural,
} from './format.js';

/** How a value is shown. `html` values are already escaped. */
export type Shown = { text: string; mono?: boolean; html?: never } | { html: string; mono?: boolean; text?: never };

type Kind = 'percent' | 'loss' | 'rate' | 'duration' | 'ms' | 'bytes' | 'mib' | 'count' | 'number' | 'bool' | 'date' | 'text' | 'mono';

export interface FieldInfo {
  label: string;
  group: string;
  kind?: Kind;
  /** Shown when the value is null or absent (a field without it is left out when absent). */
  none?: string;
  /** A custom rendering of the value (plain text). */
  show?: (v: unknown) => string | undefined;
}

export interface FieldRow {
  /** The field's path in the object, e.g. `distributed.bytes_sent_per_step` or `devices.workers[0]`. */
  key: string;
  label: string;
  value: Shown;
}

export interface FieldGroup {
  title: string;
  rows: FieldRow[];
}

export interface FieldCatalog {
  /** Group titles in the order they are shown; groups not named here follow, "Other" last. */
  groups: string[];
  fields: Record<string, FieldInfo>;
  /** Group of a field not in `fields`, from its path (default "Other"). */
  groupOf?: (key: string) => string;
  /** Fields shown by a custom renderer instead of one row per leaf. */
  special?: Record<string, (v: unknown, key: string) => FieldRow[]>;
}

const OTHER = 'Other';

function num(v: unknown): number | undefined {
  return typeof v === 'number' ? v : undefined;
}

/** The text of a value of a known kind (undefined: show it as a generic value). */
function formatKind(kind: Kind, v: unknown): string | undefined {
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  const n = num(v);
  switch (kind) {
    case 'percent': return n === undefined ? undefined : formatPercent(n);
    case 'loss': return n === undefined ? undefined : formatLoss(n);
    case 'rate': return n === undefined ? undefined : formatRate(n);
    case 'duration': return n === undefined ? undefined : formatDuration(n);
    case 'ms': return n === undefined ? undefined : formatMs(n);
    case 'bytes': return n === undefined ? undefined : formatBytes(n);
    case 'mib': return n === undefined ? undefined : formatBytes(n * 2 ** 20);
    case 'count': return n === undefined ? undefined : formatCount(n);
    case 'date': return typeof v === 'string' || v instanceof Date ? formatTimestamp(v) : undefined;
    default: return undefined;
  }
}

/** Any value as readable text: numbers rounded, booleans yes/no, lists joined, objects as JSON. */
export function genericText(v: unknown): Shown {
  if (v === null) return { text: 'none' };
  if (v === undefined) return { text: '' };
  if (typeof v === 'number') return { text: formatNumber(v) };
  if (typeof v === 'boolean') return { text: v ? 'yes' : 'no' };
  if (typeof v === 'bigint') return { text: formatNumber(Number(v)) };
  if (typeof v === 'string') return { text: v };
  if (v instanceof Date) return { text: formatTimestamp(v) };
  if (Array.isArray(v) && v.every((x) => x === null || ['string', 'number', 'boolean'].includes(typeof x))) {
    return { text: v.map((x) => (typeof x === 'number' ? formatNumber(x) : String(x))).join(', ') };
  }
  try {
    const s = JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? String(x) : typeof x === 'number' ? Number(formatNumber(x).replace(/,/g, '')) : x), 2);
    return { text: s ?? String(v), mono: true };
  } catch {
    return { text: String(v) };
  }
}

const UNIT_WORDS: Array<[RegExp, Kind]> = [
  [/^ms$/, 'ms'],
  [/^(s|sec|secs|seconds)$/, 'duration'],
  [/^mb$/, 'mib'],
  [/^bytes?$/, 'bytes'],
];

/** Words of a field name: `bytes_sent_per_step` → [bytes, sent, per, step]; `batchSize` → [batch, size]. */
function words(name: string): string[] {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .split(/[\s_\-.]+/)
    .filter(Boolean)
    .map((w) => w.toLowerCase());
}

function capitalise(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** Label and unit of a field that no catalog names, from its path (the group segment left out). */
export function guessField(path: string[]): { label: string; kind?: Kind } {
  let kind: Kind | undefined;
  const parts = path.map((seg) => {
    let ws = words(seg);
    if (ws.length > 2 && ws[ws.length - 2] === 'per' && ws[ws.length - 1] === 's') {
      kind = 'rate';
      ws = ws.slice(0, -2);
    }
    const unit = ws.length > 1 ? UNIT_WORDS.find(([re]) => re.test(ws[ws.length - 1]!)) : undefined;
    if (unit) {
      kind ??= unit[1];
      ws = ws.slice(0, -1);
    }
    return ws.join(' ');
  });
  const [head, ...rest] = parts.filter(Boolean);
  const label = capitalise(head ?? path.join('.')) + (rest.length > 0 ? ` (${rest.join(', ')})` : '');
  return { label, ...(kind ? { kind } : {}) };
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
  const p = Object.getPrototypeOf(v) as unknown;
  return p === Object.prototype || p === null;
}

function shownOf(info: { kind?: Kind; show?: (v: unknown) => string | undefined }, v: unknown): Shown {
  const custom = info.show?.(v);
  if (custom !== undefined) return { text: custom };
  const text = info.kind && info.kind !== 'text' && info.kind !== 'mono' ? formatKind(info.kind, v) : undefined;
  if (text !== undefined) return { text };
  const g = genericText(v);
  return info.kind === 'mono' ? { ...g, mono: true } : g;
}

/**
 * The rows of `obj` in groups, in the catalog's order. Every field with a value appears once: known
 * fields under their label, nested objects flattened (`a.b`), the rest under a label from its name.
 */
export function groupFields(obj: Record<string, unknown> | undefined, catalog: FieldCatalog): FieldGroup[] {
  const groups = new Map<string, FieldRow[]>();
  const add = (group: string, row: FieldRow): void => {
    const rows = groups.get(group) ?? [];
    rows.push(row);
    groups.set(group, rows);
  };
  const visit = (value: unknown, path: string[], depth: number): void => {
    const key = path.join('.');
    const info = catalog.fields[key];
    const special = catalog.special?.[key];
    if (special) {
      for (const row of special(value, key)) add(info?.group ?? catalog.groupOf?.(key) ?? OTHER, row);
      return;
    }
    if (value === undefined || value === null) {
      if (info?.none !== undefined) add(info.group, { key, label: info.label, value: { text: info.none } });
      else if (value === null) add(info?.group ?? catalog.groupOf?.(key) ?? OTHER, { key, label: info?.label ?? guessField(path.slice(-2)).label, value: { text: 'none' } });
      return;
    }
    if (!info && isPlainObject(value) && depth < 4 && Object.keys(value).length > 0) {
      for (const [k, v] of Object.entries(value)) visit(v, [...path, k], depth + 1);
      return;
    }
    if (info) {
      add(info.group, { key, label: info.label, value: shownOf(info, value) });
      return;
    }
    const group = catalog.groupOf?.(key) ?? OTHER;
    // a nested field of a known group (distributed.x): its label leaves out the group's segment
    const guessed = guessField(path.length > 1 && group !== OTHER ? path.slice(1) : path);
    add(group, { key, label: guessed.label, value: shownOf(guessed, value) });
  };
  for (const [k, v] of Object.entries(obj ?? {})) visit(v, [k], 0);
  const order = [...catalog.groups, ...[...groups.keys()].filter((g) => !catalog.groups.includes(g) && g !== OTHER), OTHER];
  return order.filter((g) => groups.has(g)).map((title) => ({ title, rows: groups.get(title)! }));
}

// ------------------------------------------------------------------ a run's devices

interface Adapter { vendor?: string; architecture?: string; device?: string; description?: string; software?: boolean }
interface Device { id?: string; backend?: string; device?: string; adapter?: Adapter }

function asDevice(v: unknown): Device | undefined {
  return isPlainObject(v) ? (v as Device) : undefined;
}

/** The name a person knows a GPU adapter by: its description, else its device or vendor and architecture. */
export function adapterName(a: Adapter | undefined): string | undefined {
  if (!isPlainObject(a)) return undefined;
  const { description, device, vendor, architecture } = a as Adapter;
  const name = [description, device, [vendor, architecture].filter((s) => typeof s === 'string').join(' ')].find((s): s is string => typeof s === 'string' && s.trim() !== '');
  return name?.trim();
}

/**
 * One device, every field of it: "wasm · cpu (wasm, simd, 1 thread)", and for a GPU a second line
 * "GPU: NVIDIA H200 (vendor nvidia, architecture hopper, device …)".
 */
function deviceShown(d: Device): Shown {
  const first = [d.backend, d.device].filter((s) => s !== undefined && s !== '').map(String).join(' · ');
  const lines = first ? [first] : [];
  if (isPlainObject(d.adapter)) {
    const a = d.adapter;
    const name = adapterName(a);
    const more = ([['vendor', a.vendor], ['architecture', a.architecture], ['device', a.device]] as const)
      .filter(([, v]) => typeof v === 'string' && v !== '' && v !== name)
      .map(([k, v]) => `${k} ${v}`);
    if (a.software) more.push('software');
    lines.push(`GPU: ${name ?? 'unnamed adapter'}${more.length > 0 ? ` (${more.join(', ')})` : ''}`);
  }
  const known = new Set(['id', 'backend', 'device', 'adapter']);
  for (const [k, v] of Object.entries(d)) if (!known.has(k) && v !== undefined) lines.push(`${guessField([k]).label}: ${genericText(v).text ?? ''}`);
  if (lines.length === 0) return genericText(d);
  return { html: lines.map((l) => `<span class="line">${escapeHtml(l)}</span>`).join('') };
}

function devicesRows(v: unknown, key: string): FieldRow[] {
  if (!isPlainObject(v)) return v === undefined ? [] : [{ key, label: 'Devices', value: genericText(v) }];
  const rows: FieldRow[] = [];
  for (const [k, x] of Object.entries(v)) {
    if (k === 'coordinator') {
      const d = asDevice(x);
      rows.push({ key: `${key}.coordinator`, label: 'Coordinator', value: d ? deviceShown(d) : genericText(x) });
    } else if (k === 'workers' && Array.isArray(x)) {
      x.forEach((w, i) => {
        const d = asDevice(w);
        const id = d?.id ? ` (${d.id})` : '';
        rows.push({ key: `${key}.workers[${i}]`, label: `Worker ${i + 1}${id}`, value: d ? deviceShown(d) : genericText(w) });
      });
    } else {
      rows.push({ key: `${key}.${k}`, label: guessField([k]).label, value: genericText(x) });
    }
  }
  return rows;
}

// ------------------------------------------------------------------ the catalogs

const RESULTS = 'Results';
const TRAINING = 'Training';
const DATA = 'Data';
const DISTRIBUTED = 'Distributed';
const ENGINE = 'Engine and devices';
const RUN = 'Run';

/** summary.json's fields (RunSummary). */
export const SUMMARY_CATALOG: FieldCatalog = {
  groups: [RESULTS, TRAINING, ENGINE, DISTRIBUTED, RUN],
  fields: {
    test_accuracy: { label: 'Test accuracy', group: RESULTS, kind: 'percent' },
    test_loss: { label: 'Test loss (cross-entropy)', group: RESULTS, kind: 'loss' },
    test_correct: { label: 'Correct test predictions', group: RESULTS, kind: 'count' },
    test_count: { label: 'Test images', group: RESULTS, kind: 'count' },
    model: { label: 'Model', group: TRAINING },
    epochs: { label: 'Epochs completed', group: TRAINING, kind: 'count' },
    steps: { label: 'Optimisation steps', group: TRAINING, kind: 'count' },
    samples_seen: { label: 'Training samples seen', group: TRAINING, kind: 'count' },
    train_seconds: { label: 'Training time (evaluation excluded)', group: TRAINING, kind: 'duration' },
    train_samples_per_s: { label: 'Training throughput', group: TRAINING, kind: 'rate' },
    deterministic: { label: 'Deterministic', group: TRAINING, kind: 'bool' },
    'momentum.start': { label: 'Momentum at the start', group: TRAINING, kind: 'number' },
    'momentum.final': { label: 'Momentum at the end', group: TRAINING, kind: 'number', none: 'constant' },
    'momentum.ramp_steps': { label: 'Momentum ramp', group: TRAINING, none: 'none', show: (v) => (typeof v === 'number' ? plural(v, 'step') : undefined) },
    backend: { label: 'Engine', group: ENGINE },
    devices: { label: 'Devices', group: ENGINE },
    workers: { label: 'Workers', group: DISTRIBUTED, show: (v) => (v === 0 ? '0 (single node, no sockets)' : typeof v === 'number' ? formatCount(v) : undefined) },
    worker_failures: { label: 'Workers lost', group: DISTRIBUTED, kind: 'count' },
    'distributed.bytes_sent_per_step': { label: 'Sent to workers per step', group: DISTRIBUTED, kind: 'bytes' },
    'distributed.bytes_received_per_step': { label: 'Received from workers per step', group: DISTRIBUTED, kind: 'bytes' },
    'distributed.coordinator_ms_per_step': { label: 'Coordinator time per step', group: DISTRIBUTED, kind: 'ms' },
    'distributed.worker_compute_ms_per_shard': { label: 'Worker compute per shard', group: DISTRIBUTED, kind: 'ms' },
    'distributed.worker_peak_rss_mb': { label: 'Worker peak memory', group: DISTRIBUTED, kind: 'mib' },
    'distributed.rejected_messages': { label: 'Rejected messages', group: DISTRIBUTED, kind: 'count' },
    'distributed.stale_results': { label: 'Stale results', group: DISTRIBUTED, kind: 'count' },
    'distributed.reassigned_shards': { label: 'Shards reassigned', group: DISTRIBUTED, kind: 'count' },
    'distributed.refused_connections': { label: 'Refused connections', group: DISTRIBUTED, kind: 'count' },
    interrupted: { label: 'Interrupted', group: RUN, kind: 'bool' },
    finished_at: { label: 'Finished', group: RUN, kind: 'date' },
    weights_sha256: { label: 'Weights SHA-256', group: RUN, kind: 'mono' },
    peak_rss_mb: { label: 'Coordinator peak memory', group: RUN, kind: 'mib' },
  },
  groupOf: (key) => (key.startsWith('distributed.') ? DISTRIBUTED : key.startsWith('devices.') ? ENGINE : OTHER),
  special: { devices: devicesRows },
};

/** The run's configuration (TrainConfig). */
export const CONFIG_CATALOG: FieldCatalog = {
  groups: [TRAINING, DATA, DISTRIBUTED, ENGINE, RUN],
  fields: {
    model: { label: 'Model', group: TRAINING },
    epochs: { label: 'Epochs', group: TRAINING, kind: 'count' },
    batchSize: { label: 'Batch size (all workers together)', group: TRAINING, kind: 'count' },
    lr: { label: 'Learning rate', group: TRAINING, kind: 'number' },
    lrSchedule: { label: 'Learning-rate schedule', group: TRAINING },
    momentum: { label: 'Momentum', group: TRAINING, kind: 'number' },
    momentumFinal: { label: 'Momentum at the end', group: TRAINING, kind: 'number' },
    momentumRampSteps: { label: 'Momentum ramp', group: TRAINING, show: (v) => (typeof v === 'number' ? plural(v, 'step') : undefined) },
    seed: { label: 'Seed', group: TRAINING, kind: 'number' },
    deterministic: { label: 'Deterministic', group: TRAINING, kind: 'bool' },
    trainLimit: { label: 'Training samples used', group: DATA, kind: 'count', none: 'all' },
    testLimit: { label: 'Test samples used', group: DATA, kind: 'count', none: 'all' },
    testBatchSize: { label: 'Test batch size', group: DATA, kind: 'count' },
    augment: { label: 'Augmentation (rotation, scale, shift)', group: DATA, kind: 'bool' },
    dataDir: { label: 'Data folder', group: DATA, none: 'the bundled MNIST' },
    workers: { label: 'Workers', group: DISTRIBUTED, show: (v) => (v === 0 ? '0 (single node, no sockets)' : typeof v === 'number' ? formatCount(v) : undefined) },
    shardSize: { label: 'Shard size', group: DISTRIBUTED, show: (v) => (typeof v === 'number' ? plural(v, 'sample') : undefined) },
    engine: { label: 'Engine asked for', group: ENGINE },
    noCuda: { label: 'GPU turned off (--no-cuda)', group: ENGINE, kind: 'bool' },
    outDir: { label: 'Output folder', group: RUN },
    logInterval: { label: 'Log every', group: RUN, show: (v) => (typeof v === 'number' ? plural(v, 'batch', 'batches') : undefined) },
    checkpointEvery: { label: 'Checkpoint every', group: RUN, show: (v) => (v === 0 ? 'epoch end only' : typeof v === 'number' ? plural(v, 'step') : undefined) },
  },
};

// ------------------------------------------------------------------ headline

export interface HeadlineFigure {
  /** Stable id (the element's id is `stat-<id>`). */
  id: string;
  label: string;
  /** The figure, e.g. "98.21" or "1 min 53 s". */
  value: string;
  /** Its unit when it follows the figure, e.g. "%" or "samples/s" (shown smaller). */
  unit?: string;
  detail?: string;
}

/** "98.21 %" → { value: "98.21", unit: "%" }; text without a trailing unit is left whole. */
function splitUnit(text: string, unit: string): { value: string; unit?: string } {
  return text.endsWith(` ${unit}`) ? { value: text.slice(0, -unit.length - 1), unit } : { value: text };
}

function unique<T>(xs: T[]): T[] {
  return [...new Set(xs)];
}

/** "2 workers · webgpu on NVIDIA H200", "single node · wasm". */
export function engineLine(summary: Record<string, unknown>): string | undefined {
  const workers = num(summary.workers);
  const devices = isPlainObject(summary.devices) ? summary.devices : {};
  const coordinator = asDevice(devices.coordinator);
  const workerDevices = (Array.isArray(devices.workers) ? devices.workers : []).map(asDevice).filter((d): d is Device => d !== undefined);
  const computing = workerDevices.length > 0 ? workerDevices : coordinator ? [coordinator] : [];
  const backends = unique(computing.map((d) => d.backend).filter((b): b is string => typeof b === 'string' && b !== ''));
  if (backends.length === 0 && typeof summary.backend === 'string') backends.push(summary.backend);
  let gpus = unique(computing.map((d) => adapterName(d.adapter)).filter((g): g is string => g !== undefined));
  if (gpus.length === 0 && coordinator) gpus = [adapterName(coordinator.adapter)].filter((g): g is string => g !== undefined);
  const who = workers === undefined ? undefined : workers === 0 ? 'single node' : plural(workers, 'worker');
  const engine = backends.length > 0 ? `${backends.join(', ')}${gpus.length > 0 ? ` on ${gpus.join(', ')}` : ''}` : undefined;
  const line = [who, engine].filter(Boolean).join(' · ');
  return line || undefined;
}

/** What a person opens a run's report for, from its summary; figures whose fields are absent are left out. */
export function runHeadline(summary: Record<string, unknown> | undefined): HeadlineFigure[] {
  if (!summary) return [];
  const out: HeadlineFigure[] = [];
  const acc = num(summary.test_accuracy);
  const correct = num(summary.test_correct);
  const count = num(summary.test_count);
  if (acc !== undefined) {
    out.push({ id: 'accuracy', label: 'Test accuracy', ...splitUnit(formatPercent(acc), '%'), ...(correct !== undefined && count !== undefined ? { detail: `${formatCount(correct)} of ${formatCount(count)} test images` } : {}) });
  }
  const loss = num(summary.test_loss);
  if (loss !== undefined) out.push({ id: 'loss', label: 'Test loss', value: formatLoss(loss), detail: 'cross-entropy, test set' });
  const rate = num(summary.train_samples_per_s);
  const seen = num(summary.samples_seen);
  const steps = num(summary.steps);
  if (rate !== undefined) {
    const detail = [seen !== undefined ? `${formatCount(seen)} samples` : '', steps !== undefined ? plural(steps, 'step') : ''].filter(Boolean).join(' in ');
    out.push({ id: 'throughput', label: 'Training speed', ...splitUnit(formatRate(rate), 'samples/s'), ...(detail ? { detail } : {}) });
  }
  const secs = num(summary.train_seconds);
  const epochs = num(summary.epochs);
  if (secs !== undefined) {
    out.push({ id: 'time', label: 'Training time', value: formatDuration(secs), detail: `${epochs !== undefined ? `${plural(epochs, 'epoch')}, ` : ''}evaluation excluded` });
  }
  const engine = engineLine(summary);
  if (engine) {
    const failures = num(summary.worker_failures);
    const details: string[] = [];
    if (typeof summary.model === 'string') details.push(`model ${summary.model}`);
    if (summary.deterministic === true) details.push('deterministic');
    if (failures) details.push(`${plural(failures, 'worker')} lost`);
    out.push({ id: 'engine', label: 'Workers and engine', value: engine, ...(details.length > 0 ? { detail: details.join(' · ') } : {}) });
  }
  return out;
}
