/**
 * A run's report.html in a real browser: Debian's headless chromium, driven over the Chrome
 * DevTools protocol through --remote-debugging-pipe (no websocket client needed). Skipped where
 * /usr/bin/chromium is absent (`apt-get install -y chromium`).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import type { Readable, Writable } from 'node:stream';
import pngjs from 'pngjs';
import { COORDINATOR, runCli, tempDir } from './helpers.js';

const { PNG } = pngjs;
const CHROMIUM = '/usr/bin/chromium';
const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-dev-shm-usage', '--remote-debugging-pipe',
];

interface CdpMessage {
  id?: number;
  method?: string;
  params?: Record<string, unknown>;
  result?: Record<string, unknown>;
  error?: { message: string };
  sessionId?: string;
}

/** The browser end of --remote-debugging-pipe: JSON messages separated by NUL on fds 3 (in) and 4 (out). */
class Browser {
  private nextId = 0;
  private buffer = '';
  private readonly pending = new Map<number, { resolve: (m: CdpMessage) => void; reject: (e: Error) => void }>();
  private readonly listeners: Array<(m: CdpMessage) => void> = [];
  stderr = '';

  private constructor(readonly child: ChildProcess) {
    const input = child.stdio[4] as Readable;
    input.setEncoding('utf8');
    input.on('data', (chunk: string) => {
      this.buffer += chunk;
      let end: number;
      while ((end = this.buffer.indexOf('\0')) >= 0) {
        const msg = JSON.parse(this.buffer.slice(0, end)) as CdpMessage;
        this.buffer = this.buffer.slice(end + 1);
        const waiter = msg.id !== undefined ? this.pending.get(msg.id) : undefined;
        if (waiter && msg.id !== undefined) {
          this.pending.delete(msg.id);
          if (msg.error) waiter.reject(new Error(`CDP: ${msg.error.message}`));
          else waiter.resolve(msg);
        } else {
          this.listeners.forEach((l) => l(msg));
        }
      }
    });
    child.stderr?.on('data', (d: Buffer) => (this.stderr += d.toString()));
    child.on('exit', () => this.pending.forEach((w) => w.reject(new Error(`chromium exited\n${this.stderr.slice(-2000)}`))));
  }

  static launch(profile: string): Browser {
    const child = spawn(CHROMIUM, [...FLAGS, `--user-data-dir=${profile}`, 'about:blank'], {
      stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'],
      detached: true, // its own process group, so that a hung browser can be ended with its helpers
    });
    return new Browser(child);
  }

  send(method: string, params: Record<string, unknown> = {}, sessionId?: string, timeoutMs = 30_000): Promise<Record<string, unknown>> {
    const id = ++this.nextId;
    const message: CdpMessage = { id, method, params, ...(sessionId ? { sessionId } : {}) };
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`CDP ${method}: no answer in ${timeoutMs} ms\n${this.stderr.slice(-2000)}`)), timeoutMs);
      this.pending.set(id, {
        resolve: (m) => { clearTimeout(timer); resolve(m.result ?? {}); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      });
      (this.child.stdio[3] as Writable).write(`${JSON.stringify(message)}\0`);
    });
  }

  on(listener: (m: CdpMessage) => void): void {
    this.listeners.push(listener);
  }

  waitFor(pred: (m: CdpMessage) => boolean, timeoutMs = 30_000): Promise<CdpMessage> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no such event in ${timeoutMs} ms`)), timeoutMs);
      this.on((m) => {
        if (pred(m)) {
          clearTimeout(timer);
          resolve(m);
        }
      });
    });
  }

  async close(): Promise<void> {
    const exited = new Promise<void>((resolve) => (this.child.exitCode !== null ? resolve() : this.child.once('exit', () => resolve())));
    await this.send('Browser.close', {}, undefined, 5_000).catch(() => {});
    const timer = setTimeout(() => {
      if (this.child.pid !== undefined && this.child.exitCode === null) {
        try {
          process.kill(-this.child.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }, 5_000);
    await exited;
    clearTimeout(timer);
  }
}

interface PageCheck {
  title: string;
  text: string;
  images: Array<{ src: string; complete: boolean; naturalWidth: number; shownWidth: number }>;
  errors: string[];
  screenshot: { width: number; height: number; data: Buffer };
}

/** Opens `file` in a new tab and reports its images, console errors and a screenshot. */
async function checkPage(browser: Browser, file: string): Promise<PageCheck> {
  const { targetId } = (await browser.send('Target.createTarget', { url: 'about:blank' })) as { targetId: string };
  const { sessionId } = (await browser.send('Target.attachToTarget', { targetId, flatten: true })) as { sessionId: string };
  const errors: string[] = [];
  browser.on((m) => {
    if (m.sessionId !== sessionId || !m.params) return;
    const p = m.params as Record<string, any>;
    if (m.method === 'Runtime.exceptionThrown') errors.push(`exception: ${p.exceptionDetails?.exception?.description ?? p.exceptionDetails?.text}`);
    if (m.method === 'Runtime.consoleAPICalled' && (p.type === 'error' || p.type === 'assert')) errors.push(`console.${p.type}: ${JSON.stringify(p.args)}`);
    if (m.method === 'Log.entryAdded' && p.entry?.level === 'error') errors.push(`${p.entry.source}: ${p.entry.text} ${p.entry.url ?? ''}`);
  });
  for (const domain of ['Runtime', 'Log', 'Page']) await browser.send(`${domain}.enable`, {}, sessionId);
  const loaded = browser.waitFor((m) => m.sessionId === sessionId && m.method === 'Page.loadEventFired');
  const nav = (await browser.send('Page.navigate', { url: pathToFileURL(file).href }, sessionId)) as { errorText?: string };
  assert.equal(nav.errorText, undefined, `navigation failed: ${nav.errorText}`);
  await loaded;
  const expression = `JSON.stringify({
    title: document.title,
    text: document.body.innerText,
    images: [...document.images].map((i) => ({ src: i.getAttribute('src'), complete: i.complete, naturalWidth: i.naturalWidth, shownWidth: i.getBoundingClientRect().width })),
  })`;
  const evaluated = (await browser.send('Runtime.evaluate', { expression, returnByValue: true }, sessionId)) as { result: { value: string } };
  const page = JSON.parse(evaluated.result.value) as Omit<PageCheck, 'errors' | 'screenshot'>;
  const shot = (await browser.send('Page.captureScreenshot', { format: 'png' }, sessionId)) as { data: string };
  await browser.send('Target.closeTarget', { targetId });
  return { ...page, errors, screenshot: PNG.sync.read(Buffer.from(shot.data, 'base64')) };
}

const skip = existsSync(CHROMIUM) ? false : `${CHROMIUM} is absent: install Debian's chromium (apt-get install -y chromium) to run this test`;

test('report.html renders in headless chromium: no console error, every image loaded', { skip }, async () => {
  const root = tempDir('mnist-browser-');
  const run = join(root, 'run');
  const r = await runCli(COORDINATOR, ['--workers', '0', '--epochs', '1', '--train-limit', '320', '--test-limit', '100', '--lr', '0.05', '--out', run], { timeoutMs: 120_000 });
  assert.equal(r.code, 0, r.stderr);
  // A page with a broken image: proves that the checks below would see one.
  const broken = join(run, 'broken.html');
  writeFileSync(broken, '<!DOCTYPE html><html><head><title>broken</title></head><body><img src="missing.png"><img src="loss.png"></body></html>');

  const browser = Browser.launch(join(root, 'profile'));
  try {
    const report = await checkPage(browser, join(run, 'report.html'));
    assert.deepEqual(report.errors, [], 'console errors');
    assert.match(report.title, /^MNIST training run: net, single node/);
    for (const heading of ['Summary', 'Configuration', 'Confusion']) assert.ok(report.text.includes(heading), `no "${heading}" in the page`);
    const sources = report.images.map((i) => i.src);
    for (const png of ['loss.png', 'accuracy.png', 'confusion.png']) assert.ok(sources.includes(png), `report lacks ${png}: ${sources.join(', ')}`);
    for (const img of report.images) {
      assert.ok(img.complete && img.naturalWidth > 0, `${img.src} did not load`);
      assert.ok(img.shownWidth > 0, `${img.src} is not shown`);
    }
    const { width, height, data } = report.screenshot;
    assert.ok(width > 0 && height > 0);
    const levels = new Set<number>();
    for (let i = 0; i < data.length; i += 4) levels.add(data[i]);
    assert.ok(levels.size > 20, 'the screenshot shows a rendered page');

    const control = await checkPage(browser, broken);
    assert.deepEqual(control.images.map((i) => [i.src, i.naturalWidth > 0]), [['missing.png', false], ['loss.png', true]]);
    assert.ok(control.errors.some((e) => e.includes('missing.png')), `the missing image was not reported: ${JSON.stringify(control.errors)}`);
  } finally {
    await browser.close();
    rmSync(root, { recursive: true, force: true });
  }
});
