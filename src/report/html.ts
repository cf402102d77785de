/** Self-contained, offline HTML report of one training run. */
import { mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { isAbsolute, join, normalize, sep } from 'node:path';
import { confusionMatrixHtml } from './confusion.js';
import { escapeHtml } from './escape.js';
import type { RunReport } from './types.js';

export type { RunReport } from './types.js';
export { escapeHtml } from './escape.js';

export const REPORT_FILE = 'report.html';

const CSS = `
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f4f5f7; color: #1f2328;
  font: 15px/1.5 -apple-system, "Segoe UI", "DejaVu Sans", Roboto, Helvetica, Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 20px 48px; }
header { margin-bottom: 20px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 0 0 12px; border-bottom: 1px solid #e1e4e8; padding-bottom: 6px; }
.subtitle { color: #57606a; margin: 0; }
section { background: #fff; border: 1px solid #e1e4e8; border-radius: 8px; padding: 16px 20px; margin: 16px 0; }
.two { display: grid; grid-template-columns: repeat(auto-fit, minmax(360px, 1fr)); gap: 16px; }
.two > section { margin: 0; }
table.kv { border-collapse: collapse; width: 100%; }
table.kv th, table.kv td { text-align: left; padding: 4px 10px; border-bottom: 1px solid #eef0f2; vertical-align: top; }
table.kv th { font-weight: 600; white-space: nowrap; color: #424a53; width: 1%; }
table.kv td { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 13.5px; word-break: break-word; }
table.kv tr:nth-child(even) { background: #fafbfc; }
td pre { margin: 0; white-space: pre-wrap; }
figure { margin: 0 0 18px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #eaecef; border-radius: 4px; background: #fff; }
figcaption { color: #57606a; font-size: 13px; margin-top: 4px; }
.scroll { overflow-x: auto; }
table.confusion { border-collapse: collapse; font-size: 13px; margin-bottom: 12px; }
table.confusion caption { caption-side: top; text-align: left; color: #57606a; padding-bottom: 6px; }
table.confusion th, table.confusion td { border: 1px solid #e1e4e8; padding: 4px 8px; text-align: right; min-width: 44px; }
table.confusion th { background: #f6f8fa; }
table.confusion td.diag { font-weight: 700; }
table.confusion td.total { background: #f6f8fa; color: #424a53; }
.empty { color: #8c959f; font-style: italic; }
footer { color: #8c959f; font-size: 12px; text-align: center; margin-top: 24px; }
`;

/** One table cell's text for an arbitrary value (numbers keep full precision). */
function formatCell(v: unknown): { html: string; pre: boolean } {
  if (v === null) return { html: 'null', pre: false };
  if (v === undefined) return { html: '', pre: false };
  if (typeof v === 'string') return { html: escapeHtml(v), pre: v.includes('\n') };
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return { html: escapeHtml(String(v)), pre: false };
  if (v instanceof Date) return { html: escapeHtml(Number.isNaN(v.getTime()) ? 'Invalid Date' : v.toISOString()), pre: false };
  if (Array.isArray(v) && v.every((x) => x === null || ['string', 'number', 'boolean'].includes(typeof x))) {
    return { html: escapeHtml(v.map((x) => String(x)).join(', ')), pre: false };
  }
  try {
    const s = JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? String(x) : x), 2);
    return { html: escapeHtml(s ?? String(v)), pre: true };
  } catch {
    return { html: escapeHtml(String(v)), pre: false };
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
  const p = Object.getPrototypeOf(v) as unknown;
  return p === Object.prototype || p === null;
}

/** Flattens nested plain objects into "a.b.c" keys (depth-limited). */
function flatten(obj: Record<string, unknown>, prefix = '', depth = 0, out: [string, unknown][] = []): [string, unknown][] {
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (isPlainObject(v) && depth < 4 && Object.keys(v).length > 0) flatten(v, key, depth + 1, out);
    else out.push([key, v]);
  }
  return out;
}

/** HTML key–value table from a plain object (keys and values escaped). */
export function objectTableHtml(obj: Record<string, unknown> | undefined): string {
  const rows = obj ? flatten(obj) : [];
  if (rows.length === 0) return '<p class="empty">(none)</p>';
  const body = rows.map(([k, v]) => {
    const c = formatCell(v);
    return `<tr><th scope="row">${escapeHtml(k)}</th><td>${c.pre ? `<pre>${c.html}</pre>` : c.html}</td></tr>`;
  });
  return `<table class="kv"><tbody>${body.join('')}</tbody></table>`;
}

/** URL of a relative file name, percent-encoded per path segment. */
function fileUrl(name: string): string {
  return name.split('/').map(encodeURIComponent).join('/');
}

/** A relative file name that stays inside the report directory. */
function isSafeRelative(name: string): boolean {
  if (name === '' || isAbsolute(name) || name.includes('\\') || name.includes('\0')) return false;
  const n = normalize(name);
  return !(n === '..' || n.startsWith(`..${sep}`) || n.startsWith('../'));
}

function figure(name: string, caption: string): string {
  return `<figure><img src="${escapeHtml(fileUrl(name))}" alt="${escapeHtml(caption)}"><figcaption>${escapeHtml(caption)}</figcaption></figure>`;
}

const PLOT_ORDER = ['loss.png', 'accuracy.png'];

/**
 * Builds the report HTML (pure). Images are only referenced when their
 * relative file name is in `files` (the names present in the report dir).
 */
export function runReportHtml(report: RunReport, files: Iterable<string>, generatedAt: Date = new Date()): string {
  const present = new Set(files);
  const has = (f: string | undefined): f is string => f !== undefined && isSafeRelative(f) && present.has(f);
  const special = new Set([report.confusionImage, report.misclassifiedImage, report.featureMapsImage].filter((x): x is string => !!x));
  let plots: string[];
  if (report.plots) {
    plots = report.plots.filter(has);
  } else {
    plots = [...present].filter((f) => /\.png$/i.test(f) && !f.includes('/') && !special.has(f)).sort((a, b) => {
      const ia = PLOT_ORDER.indexOf(a);
      const ib = PLOT_ORDER.indexOf(b);
      if (ia !== ib) return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib);
      return a < b ? -1 : a > b ? 1 : 0;
    });
  }
  const title = report.title ?? 'Training run report';
  const parts: string[] = [];
  parts.push('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">');
  parts.push('<meta name="viewport" content="width=device-width, initial-scale=1">');
  parts.push(`<meta http-equiv="Content-Security-Policy" content="script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'">`);
  parts.push(`<title>${escapeHtml(title)}</title><style>${CSS}</style></head><body><main>`);
  parts.push(`<header><h1>${escapeHtml(title)}</h1>`);
  if (report.subtitle) parts.push(`<p class="subtitle">${escapeHtml(report.subtitle)}</p>`);
  parts.push('</header>');

  parts.push('<div class="two">');
  parts.push(`<section id="summary"><h2>Summary</h2>${objectTableHtml(report.summary)}</section>`);
  parts.push(`<section id="config"><h2>Configuration</h2>${objectTableHtml(report.config)}</section>`);
  parts.push('</div>');

  parts.push('<section id="plots"><h2>Plots</h2>');
  if (plots.length === 0) parts.push('<p class="empty">(no plots)</p>');
  for (const p of plots) parts.push(figure(p, p));
  parts.push('</section>');

  if (report.confusion || has(report.confusionImage)) {
    parts.push('<section id="confusion"><h2>Confusion matrix</h2>');
    if (report.confusion) parts.push(`<div class="scroll">${confusionMatrixHtml(report.confusion, report.classNames)}</div>`);
    if (has(report.confusionImage)) parts.push(figure(report.confusionImage, report.confusionImage));
    parts.push('</section>');
  }
  if (has(report.misclassifiedImage)) {
    parts.push(`<section id="misclassified"><h2>Misclassified test images</h2>${figure(report.misclassifiedImage, report.misclassifiedImage)}</section>`);
  }
  if (has(report.featureMapsImage)) {
    parts.push(`<section id="feature-maps"><h2>Feature maps</h2>${figure(report.featureMapsImage, report.featureMapsImage)}</section>`);
  }
  if (report.notes && report.notes.length > 0) {
    parts.push(`<section id="notes"><h2>Notes</h2>${report.notes.map((n) => `<p>${escapeHtml(n)}</p>`).join('')}</section>`);
  }
  const when = Number.isNaN(generatedAt.getTime()) ? '' : ` on ${generatedAt.toISOString()}`;
  parts.push(`<footer>Generated${escapeHtml(when)}</footer>`);
  parts.push('</main></body></html>\n');
  return parts.join('\n');
}

/**
 * Writes `outDir/report.html` (creating outDir if needed) referencing the
 * images that exist in outDir by relative file name; returns its path.
 */
export async function writeRunReport(outDir: string, report: RunReport): Promise<string> {
  await mkdir(outDir, { recursive: true });
  const names = new Set<string>(await readdir(outDir));
  // explicitly named files may live in sub-folders
  const wanted = [...(report.plots ?? []), report.confusionImage, report.misclassifiedImage, report.featureMapsImage];
  for (const f of wanted) {
    if (!f || names.has(f) || !isSafeRelative(f)) continue;
    try {
      if ((await stat(join(outDir, f))).isFile()) names.add(f);
    } catch {
      // missing: not referenced
    }
  }
  const file = join(outDir, REPORT_FILE);
  await writeFile(file, runReportHtml(report, names), 'utf8');
  return file;
}
