/**
 * `node --import ./dist/test/load-trace.js SCRIPT`, with MNIST_LOAD_TRACE=FILE: appends the URL of
 * every module the process loads to FILE, one a line (ES modules and the CommonJS modules they
 * import), so that a test can tell which packages a command loaded. The same file is both the
 * --import entry (it registers itself) and the module-loading hooks (on Node's hooks thread).
 */
import { appendFileSync } from 'node:fs';
import { register } from 'node:module';
import { isMainThread } from 'node:worker_threads';

let traceFile: string | undefined;

export function initialize(data: { file?: string } | undefined): void {
  traceFile = data?.file;
}

type NextLoad = (url: string, context: unknown) => Promise<unknown>;

export async function load(url: string, context: unknown, nextLoad: NextLoad): Promise<unknown> {
  if (traceFile) appendFileSync(traceFile, `${url}\n`);
  return nextLoad(url, context);
}

if (isMainThread && process.env.MNIST_LOAD_TRACE) {
  register(import.meta.url, { data: { file: process.env.MNIST_LOAD_TRACE } });
}
