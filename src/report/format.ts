/**
 * Numbers as a person reads them: rounded to what matters, with thousands separators and units.
 * Every function is pure and returns plain text (the caller escapes it).
 */

const grouped = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const significant = new Map<number, Intl.NumberFormat>();

/**
 * A number rounded to `digits` significant digits (integers and numbers of `digits` or more integer
 * digits are shown whole), with thousands separators: 9768.702824276672 → "9,769", 2.758 → "2.758".
 */
export function formatNumber(x: number, digits = 4): string {
  if (!Number.isFinite(x)) return String(x);
  if (Number.isInteger(x) || Math.abs(x) >= 10 ** (digits - 1)) return grouped.format(Math.round(x));
  if (Math.abs(x) < 1e-4) return x.toPrecision(Math.min(digits, 3));
  let f = significant.get(digits);
  if (!f) significant.set(digits, (f = new Intl.NumberFormat('en-US', { maximumSignificantDigits: digits })));
  return f.format(x);
}

/** A whole count: 60000 → "60,000". */
export function formatCount(x: number): string {
  return formatNumber(x);
}

/** A fraction 0..1 as a percentage with two decimals: 0.98214 → "98.21 %". */
export function formatPercent(fraction: number): string {
  return Number.isFinite(fraction) ? `${(fraction * 100).toFixed(2)} %` : String(fraction);
}

/** A loss: four decimals, or three significant digits below 0.01: 0.05423 → "0.0542". */
export function formatLoss(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  return Math.abs(x) >= 0.01 || x === 0 ? x.toFixed(4) : x.toPrecision(3);
}

/** A rate: 5875.3 → "5,875 samples/s" (three significant digits below 100). */
export function formatRate(x: number, unit = 'samples/s'): string {
  if (!Number.isFinite(x)) return `${x} ${unit}`;
  return `${Math.abs(x) >= 100 ? grouped.format(Math.round(x)) : formatNumber(x, 3)} ${unit}`;
}

/** A duration in seconds: "608 ms", "4.2 s", "53 s", "1 min 53 s", "2 h 5 min". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return `${seconds} s`;
  const s = Math.abs(seconds);
  const sign = seconds < 0 ? '−' : '';
  if (s < 1) return `${sign}${formatNumber(s * 1000, 3)} ms`;
  if (s < 9.95) return `${sign}${s.toFixed(1)} s`;
  const whole = Math.round(s);
  if (whole < 60) return `${sign}${whole} s`;
  if (whole < 3600) return `${sign}${Math.floor(whole / 60)} min ${whole % 60} s`;
  const minutes = Math.round(s / 60);
  return `${sign}${grouped.format(Math.floor(minutes / 60))} h ${minutes % 60} min`;
}

/** Milliseconds: 2.758 → "2.76 ms", 1558.93 → "1,559 ms". */
export function formatMs(ms: number): string {
  return `${formatNumber(ms, 3)} ms`;
}

const BINARY_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/** A size in bytes, binary units: 225394 → "220 KiB". */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return `${bytes} B`;
  let v = Math.abs(bytes);
  let u = 0;
  while (v >= 1024 && u < BINARY_UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  const shown = u === 0 ? grouped.format(Math.round(v)) : formatNumber(v, 3);
  return `${bytes < 0 ? '−' : ''}${shown} ${BINARY_UNITS[u]}`;
}

/** A time stamp (ISO text or Date) as "2026-11-30 08:18:24 UTC"; other text unchanged. */
export function formatTimestamp(value: string | Date): string {
  const d = value instanceof Date ? value : new Date(value);
  if (Number.isNaN(d.getTime()) || (typeof value === 'string' && !/^\d{4}-\d{2}-\d{2}T/.test(value))) return String(value);
  return `${d.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

/** "1 worker", "2 workers". */
export function plural(n: number, one: string, many = `${one}s`): string {
  return `${formatCount(n)} ${n === 1 ? one : many}`;
}
