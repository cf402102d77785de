/** Self-contained, offline HTML report of one training run. */
import { mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { isAbsolute, join, normalize, sep } from 'node:path';
import { confusionMatrixHtml } from './confusion.js';
import { escapeHtml } from './escape.js';
import { CONFIG_CATALOG, type FieldCatalog, type FieldRow, type HeadlineFigure, type Shown, SUMMARY_CATALOG, groupFields, runHeadline } from './fields.js';
import { formatTimestamp } from './format.js';
import type { RunReport } from './types.js';

export type { RunReport } from './types.js';
export { escapeHtml } from './escape.js';

export const REPORT_FILE = 'report.html';

const CSS = `
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f4f5f7; color: #1f2328;
  font: 15px/1.5 -apple-system, "Segoe UI", "DejaVu Sans", Roboto, Helvetica, Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 20px 20px 40px; }
header { margin-bottom: 14px; }
h1 { font-size: 24px; line-height: 1.25; margin: 0 0 4px; overflow-wrap: anywhere; }
h2 { font-size: 18px; margin: 0 0 12px; border-bottom: 1px solid #e1e4e8; padding-bottom: 6px; }
h3 { font-size: 13px; text-transform: uppercase; letter-spacing: .04em; color: #57606a; margin: 16px 0 4px; }
h2 + h3, h2 + .scroll + h3 { margin-top: 4px; }
.subtitle { color: #57606a; margin: 0; overflow-wrap: anywhere; }
section { background: #fff; border: 1px solid #e1e4e8; border-radius: 8px; padding: 16px 20px; margin: 14px 0; min-width: 0; }
.warning { background: #fff8c5; border-color: #d4a72c; }
dl.stats { display: flex; flex-wrap: wrap; gap: 12px; margin: 0; }
.stat { flex: 1 1 168px; min-width: 0; background: #f6f8fa; border: 1px solid #e1e4e8; border-radius: 6px; padding: 10px 14px; }
.stat.wide { flex: 1.6 1 280px; }
.stat dt { color: #57606a; font-size: 13px; }
.stat dd { margin: 0; }
.stat .value { font-size: 24px; font-weight: 650; line-height: 1.3; font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }
.stat.wide .value { font-size: 19px; padding-top: 3px; }
.stat .unit { font-size: .62em; font-weight: 500; color: #424a53; white-space: nowrap; }
.stat .detail { color: #57606a; font-size: 12.5px; overflow-wrap: anywhere; }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 440px), 1fr)); gap: 16px; }
figure { margin: 0; min-width: 0; }
figure img { display: block; width: 100%; max-width: 100%; height: auto; border: 1px solid #eaecef; border-radius: 4px; background: #fff; }
figure.single img { width: auto; }
figcaption { color: #57606a; font-size: 13px; margin-top: 4px; overflow-wrap: anywhere; }
.side { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.side > * { flex: 0 1 auto; min-width: 0; max-width: 100%; }
.two { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 420px), 1fr)); gap: 14px; margin: 14px 0; align-items: start; }
.two > section { margin: 0; }
.scroll { overflow-x: auto; max-width: 100%; }
table.kv { border-collapse: collapse; width: 100%; }
table.kv th, table.kv td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eef0f2; vertical-align: top; overflow-wrap: anywhere; }
table.kv th { font-weight: 500; color: #424a53; width: 45%; }
table.kv td { font-variant-numeric: tabular-nums; }
table.kv td.mono, table.kv td pre { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; }
table.kv td pre { margin: 0; white-space: pre-wrap; overflow-wrap: anywhere; }
table.kv .key { display: block; font: 11px/1.4 "DejaVu Sans Mono", Menlo, Consolas, monospace; color: #8c959f; overflow-wrap: anywhere; }
table.kv .line { display: block; }
.files { color: #57606a; font-size: 13px; margin: 12px 0 0; }
table.confusion { border-collapse: collapse; font-size: 13px; margin-bottom: 12px; }
table.confusion caption { caption-side: top; text-align: left; color: #57606a; padding-bottom: 6px; }
table.confusion th, table.confusion td { border: 1px solid #e1e4e8; padding: 4px 8px; text-align: right; min-width: 44px; }
table.confusion th { background: #f6f8fa; }
table.confusion td.diag { font-weight: 700; }
table.confusion td.total { background: #f6f8fa; color: #424a53; }
.empty { color: #8c959f; font-style: italic; }
footer { color: #8c959f; font-size: 12px; text-align: center; margin-top: 24px; }
@media (max-width: 600px) {
  body { font-size: 14px; }
  main { padding: 12px 10px 32px; }
  h1 { font-size: 20px; }
  section { padding: 12px; }
  dl.stats { gap: 8px; }
  .stat { flex-basis: 132px; padding: 8px 10px; }
  .stat.wide { flex-basis: 100%; }
  .stat .value { font-size: 20px; }
  .stat.wide .value { font-size: 16px; }
  table.kv th, table.kv td { display: block; width: auto; border: 0; padding: 2px 4px; }
  table.kv td { padding-bottom: 8px; border-bottom: 1px solid #eef0f2; }
}
`;

/** A value's cell: rounded text with its unit, JSON in a <pre>, or lines (all escaped). */
function cellHtml(v: Shown): string {
  if (v.html !== undefined) return `<td>${v.html}</td>`;
  const text = v.text ?? '';
  if (v.mono && text.includes('\n')) return `<td><pre>${escapeHtml(text)}</pre></td>`;
  return `<td${v.mono ? ' class="mono"' : ''}>${escapeHtml(text)}</td>`;
}

function rowsHtml(rows: FieldRow[]): string {
  const body = rows.map((r) => `<tr><th scope="row">${escapeHtml(r.label)}<code class="key">${escapeHtml(r.key)}</code></th>${cellHtml(r.value)}</tr>`);
  return `<div class="scroll"><table class="kv"><tbody>${body.join('')}</tbody></table></div>`;
}

/** Grouped tables of an object's fields: a heading per group, a human label and the field's name per row. */
export function fieldsHtml(obj: Record<string, unknown> | undefined, catalog: FieldCatalog): string {
  const groups = groupFields(obj, catalog);
  if (groups.length === 0) return '<p class="empty">(none)</p>';
  return groups.map((g) => `<h3>${escapeHtml(g.title)}</h3>${rowsHtml(g.rows)}`).join('');
}

/** A key–value table of any object: readable labels, rounded values, each field's name beside it. */
export function objectTableHtml(obj: Record<string, unknown> | undefined): string {
  const rows = groupFields(obj, { groups: [], fields: {} }).flatMap((g) => g.rows);
  return rows.length === 0 ? '<p class="empty">(none)</p>' : rowsHtml(rows);
}

function headlineHtml(figures: HeadlineFigure[]): string {
  const items = figures.map((f) => {
    const detail = f.detail ? `<dd class="detail">${escapeHtml(f.detail)}</dd>` : '';
    return `<div class="stat${f.id === 'engine' ? ' wide' : ''}" id="stat-${escapeHtml(f.id)}"><dt>${escapeHtml(f.label)}</dt><dd class="value">${escapeHtml(f.value)}${f.unit ? `<span class="unit"> ${escapeHtml(f.unit)}</span>` : ''}</dd>${detail}</div>`;
  });
  return `<section id="headline" aria-label="Results at a glance"><dl class="stats">${items.join('')}</dl></section>`;
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

function figure(name: string, caption: string, cls = ''): string {
  return `<figure${cls ? ` class="${cls}"` : ''}><img src="${escapeHtml(fileUrl(name))}" alt="${escapeHtml(caption)}"><figcaption>${escapeHtml(caption)}</figcaption></figure>`;
}

const PLOT_ORDER = ['loss.png', 'accuracy.png'];
const CAPTIONS: Record<string, string> = {
  'loss.png': 'Loss: training loss against samples seen, test loss at each evaluation',
  'accuracy.png': 'Test accuracy after each epoch',
};

/** The raw files a person may want beside the page, when they are there. */
const RAW_FILES = [['summary.json', 'summary.json (exact values)'], ['metrics.jsonl', 'metrics.jsonl (every log line and evaluation)']] as const;

/**
 * Builds the report HTML (pure). It opens with the headline figures taken from `summary` (test
 * accuracy and loss, training speed and time, workers and engine), then the plots, confusion matrix
 * and images, then every field of the summary and configuration in labelled groups. Images are only
 * referenced when their relative file name is in `files` (the names present in the report dir).
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
  const summary = report.summary;
  const parts: string[] = [];
  parts.push('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">');
  parts.push('<meta name="viewport" content="width=device-width, initial-scale=1">');
  parts.push(`<meta http-equiv="Content-Security-Policy" content="script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'">`);
  parts.push(`<title>${escapeHtml(title)}</title><style>${CSS}</style></head><body><main>`);
  parts.push(`<header><h1>${escapeHtml(title)}</h1>`);
  const finished = typeof summary?.finished_at === 'string' ? `finished ${formatTimestamp(summary.finished_at)}` : '';
  const sub = [report.subtitle, finished].filter(Boolean).join(' · ');
  if (sub) parts.push(`<p class="subtitle">${escapeHtml(sub)}</p>`);
  parts.push('</header>');

  if (summary?.interrupted === true) {
    parts.push('<section class="warning" role="note"><strong>This run was interrupted.</strong> The figures below are those of the moment it stopped.</section>');
  }
  const headline = runHeadline(summary);
  if (headline.length > 0) parts.push(headlineHtml(headline));

  parts.push('<section id="plots"><h2>Plots</h2>');
  if (plots.length === 0) parts.push('<p class="empty">(no plots)</p>');
  else parts.push(`<div class="plots">${plots.map((p) => figure(p, CAPTIONS[p] ?? p)).join('')}</div>`);
  parts.push('</section>');

  if (report.confusion || has(report.confusionImage)) {
    parts.push('<section id="confusion"><h2>Confusion matrix</h2><div class="side">');
    if (report.confusion) parts.push(`<div class="scroll">${confusionMatrixHtml(report.confusion, report.classNames)}</div>`);
    if (has(report.confusionImage)) parts.push(figure(report.confusionImage, 'The same matrix drawn: rows are the true digit, columns the predicted one', 'single'));
    parts.push('</div></section>');
  }
  if (has(report.misclassifiedImage)) {
    parts.push(`<section id="misclassified"><h2>Misclassified test images</h2>${figure(report.misclassifiedImage, 'Test images the model got wrong, with the predicted and the true digit', 'single')}</section>`);
  }
  if (has(report.featureMapsImage)) {
    parts.push(`<section id="feature-maps"><h2>Feature maps</h2>${figure(report.featureMapsImage, 'What each convolution layer outputs', 'single')}</section>`);
  }
  if (report.notes && report.notes.length > 0) {
    parts.push(`<section id="notes"><h2>Notes</h2>${report.notes.map((n) => `<p>${escapeHtml(n)}</p>`).join('')}</section>`);
  }

  const raw = RAW_FILES.filter(([f]) => has(f)).map(([f, text]) => `<a href="${escapeHtml(fileUrl(f))}">${escapeHtml(text)}</a>`);
  parts.push('<div class="two">');
  parts.push(`<section id="summary"><h2>Summary</h2>${fieldsHtml(summary, SUMMARY_CATALOG)}${raw.length > 0 ? `<p class="files">Raw: ${raw.join(' · ')}</p>` : ''}</section>`);
  parts.push(`<section id="config"><h2>Configuration</h2>${fieldsHtml(report.config, CONFIG_CATALOG)}</section>`);
  parts.push('</div>');

  const when = Number.isNaN(generatedAt.getTime()) ? '' : ` ${formatTimestamp(generatedAt)}`;
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
