/**
 * A run's report.html as a person sees it: Debian's headless chromium driven by puppeteer-core
 * (which downloads no browser). Checks the page as rendered at a phone's, a tablet's and two desktop
 * widths. Without /usr/bin/chromium (`apt-get install -y chromium`) the test skips, or fails under CI.
 * REPORT_SCREENSHOTS=DIR keeps the screenshots in DIR to look at.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import pngjs from 'pngjs';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { writeRunReport } from '../src/report/index.js';
import { COORDINATOR, runCli, tempDir } from './helpers.js';

const CHROMIUM = '/usr/bin/chromium';
const WIDTHS = [375, 768, 1280, 1920];
const missing = existsSync(CHROMIUM) ? undefined : `${CHROMIUM} is absent: install Debian's chromium (apt-get install -y chromium) to run this test`;

/** Opens `file` in a new tab; `errors` collects console errors, page errors and failed requests. */
async function open(browser: Browser, file: string): Promise<{ page: Page; errors: string[] }> {
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on('console', (m) => m.type() === 'error' && errors.push(`console: ${m.text()}`));
  page.on('pageerror', (e) => errors.push(`page: ${String(e)}`));
  page.on('requestfailed', (r) => errors.push(`request: ${r.url()} ${r.failure()?.errorText ?? ''}`));
  await page.goto(pathToFileURL(file).href, { waitUntil: 'load' });
  return { page, errors };
}

/** Evaluates a JavaScript expression in the page (the tests compile without the DOM's types). */
function js<T>(page: Page, expression: string): Promise<T> {
  return page.evaluate(expression) as Promise<T>;
}

/** For each width: how wide the page is against the viewport, and the widest elements that stick out. */
async function overflow(page: Page): Promise<Array<{ width: number; scrollWidth: number; out: string[] }>> {
  const found = [];
  for (const width of WIDTHS) {
    await page.setViewport({ width, height: 800 });
    found.push({
      width,
      ...(await js<{ scrollWidth: number; out: string[] }>(page, `({
        scrollWidth: document.documentElement.scrollWidth,
        out: [...document.querySelectorAll('body *')]
          .filter((e) => e.getBoundingClientRect().right > innerWidth + 0.5 && !e.parentElement.closest('.scroll'))
          .map((e) => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className ? '.' + e.className : '')).slice(0, 5),
      })`)),
    });
  }
  return found;
}

const images = (page: Page): Promise<Array<{ src: string; loaded: boolean; shown: number }>> =>
  js(page, `[...document.images].map((i) => ({ src: i.getAttribute('src'), loaded: i.complete && i.naturalWidth > 0, shown: i.getBoundingClientRect().width }))`);

test('report.html as rendered: headline figures above the fold, plots loaded, no overflow at 375–1920 px', { skip: missing && process.env.CI !== 'true' ? missing : false }, async () => {
  if (missing) throw new Error(`${missing} (CI installs it: see .ci/run)`);
  const root = tempDir('mnist-browser-');
  const shots = process.env.REPORT_SCREENSHOTS ?? join(root, 'shots');
  mkdirSync(shots, { recursive: true });
  const run = join(root, 'run');
  const r = await runCli(COORDINATOR, ['--workers', '0', '--epochs', '1', '--train-limit', '320', '--test-limit', '100', '--lr', '0.05', '--out', run], { timeoutMs: 120_000 });
  assert.equal(r.code, 0, r.stderr);
  // The same run as a GPU run with long names (a pod id, an adapter, a data path): they must wrap.
  const gpuRun = join(root, 'gpu-run');
  mkdirSync(gpuRun);
  for (const f of ['loss.png', 'accuracy.png']) writeFileSync(join(gpuRun, f), readFileSync(join(run, f)));
  const { config, ...summary } = JSON.parse(readFileSync(join(run, 'summary.json'), 'utf8')) as Record<string, unknown>;
  const adapter = { vendor: 'nvidia', architecture: 'hopper', device: '0x2335', description: 'NVIDIA H200 NVL with a description longer than any phone is wide', software: false };
  const worker = (i: number): object => ({ id: `mnist-ddp-worker-${i}-5f7c9d6b8d-x2k4q-averyveryverylongpodnamewithoutbreaks`, backend: 'webgpu', device: 'gpu NVIDIA H200, fused kernels', adapter });
  await writeRunReport(gpuRun, {
    title: 'MNIST training run: net, 2 workers',
    subtitle: `/mnt/${'x'.repeat(150)}`,
    summary: { ...summary, workers: 2, backend: 'webgpu', devices: { coordinator: { backend: 'webgpu', device: 'gpu', adapter }, workers: [worker(0), worker(1)] } },
    config: { ...(config as object), dataDir: `/data/${'mnist'.repeat(40)}` },
  });
  // A page with a broken image and a box wider than a phone: proves that the checks below would see both.
  const broken = join(run, 'broken.html');
  writeFileSync(broken, '<!DOCTYPE html><html><head><title>broken</title></head><body><img src="missing.png"><img src="loss.png"><div style="width:600px">x</div></body></html>');

  const browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  try {
    const { page, errors } = await open(browser, join(run, 'report.html'));
    assert.match(await page.title(), /^MNIST training run: net, single node/);
    const text = await js<string>(page, 'document.body.innerText');
    for (const heading of ['Plots', 'Confusion matrix', 'Summary', 'Configuration']) assert.ok(text.includes(heading), `no "${heading}" in the page`);

    // Every image loaded and shown.
    const imgs = await images(page);
    for (const png of ['loss.png', 'accuracy.png', 'confusion.png']) assert.ok(imgs.some((i) => i.src === png), `report lacks ${png}`);
    for (const img of imgs) assert.ok(img.loaded && img.shown > 0, `${img.src} did not load or is not shown`);

    // At 1280×800 the headline figures are there, formatted, and all within the first screen, before the plots.
    await page.setViewport({ width: 1280, height: 800 });
    const expected: Record<string, RegExp> = {
      accuracy: /^Test accuracy\s*\d{1,3}\.\d\d %\s*[\d,]+ of 100 test images$/,
      loss: /^Test loss\s*\d+\.\d{4}\b/,
      throughput: /^Training speed\s*[\d,]+ samples\/s\s*320 samples in 5 steps$/,
      time: /^Training time\s*([\d.]+ ms|[\d.]+ s|\d+ min \d+ s)\s*1 epoch, evaluation excluded$/,
      engine: /^Workers and engine\s*single node · \w+/,
    };
    for (const [id, re] of Object.entries(expected)) {
      const el = await page.$(`#stat-${id}`);
      assert.ok(el, `no headline figure ${id}`);
      assert.match((await js<string>(page, `document.getElementById('stat-${id}').innerText`)).replace(/\n/g, ' '), re);
      const box = await el.boundingBox();
      assert.ok(box && box.width > 0 && box.x >= 0 && box.y >= 0 && box.x + box.width <= 1280 && box.y + box.height <= 800, `${id} is not within the first screen: ${JSON.stringify(box)}`);
    }
    const headlineBottom = (await (await page.$('#headline'))!.boundingBox())!;
    const plotsTop = (await (await page.$('#plots'))!.boundingBox())!;
    assert.ok(plotsTop.y >= headlineBottom.y + headlineBottom.height, 'the plots come after the headline');
    assert.ok(plotsTop.y < 800, 'the plots begin within the first screen');
    // No raw floats anywhere in what a person reads.
    assert.doesNotMatch(text, /\d\.\d{6,}/);

    await page.screenshot({ path: join(shots, 'report-1280.png') });
    const png = pngjs.PNG.sync.read(readFileSync(join(shots, 'report-1280.png')));
    assert.equal(png.width, 1280);
    const levels = new Set<number>();
    for (let i = 0; i < png.data.length; i += 4) levels.add(png.data[i]!);
    assert.ok(levels.size > 20, 'the screenshot shows a rendered page');

    // Nothing sticks out of the viewport at any width (the confusion table scrolls inside its own box).
    for (const o of await overflow(page)) assert.ok(o.scrollWidth <= o.width, `at ${o.width} px the page is ${o.scrollWidth} px wide: ${o.out.join(', ')}`);
    await page.setViewport({ width: 375, height: 800 });
    await page.screenshot({ path: join(shots, 'report-375.png'), fullPage: true });
    assert.deepEqual(errors, [], 'console errors');

    const gpu = await open(browser, join(gpuRun, 'report.html'));
    const engine = await js<string>(gpu.page, `document.querySelector('#stat-engine .value').textContent`);
    assert.equal(engine, '2 workers · webgpu on NVIDIA H200 NVL with a description longer than any phone is wide');
    for (const o of await overflow(gpu.page)) assert.ok(o.scrollWidth <= o.width, `long names: at ${o.width} px the page is ${o.scrollWidth} px wide: ${o.out.join(', ')}`);
    await gpu.page.setViewport({ width: 375, height: 800 });
    await gpu.page.screenshot({ path: join(shots, 'report-gpu-375.png') });
    assert.deepEqual(gpu.errors, [], 'console errors');

    const control = await open(browser, broken);
    assert.deepEqual((await images(control.page)).map((i) => [i.src, i.loaded]), [['missing.png', false], ['loss.png', true]]);
    assert.ok(control.errors.some((e) => e.includes('missing.png')), `the missing image was not reported: ${JSON.stringify(control.errors)}`);
    assert.ok((await overflow(control.page))[0]!.scrollWidth > 375, 'a box wider than the phone is seen');
  } finally {
    await browser.close();
    rmSync(root, { recursive: true, force: true });
  }
});
