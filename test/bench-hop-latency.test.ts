import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { runCli, tempDir } from './helpers.js';

const HOP_LATENCY = fileURLToPath(new URL('../bench/hop-latency.js', import.meta.url));

test('hop-latency: real round trips per variant, the real message sizes, nothing left in the temporary folder', async () => {
  const tmp = tempDir();
  const r = await runCli(HOP_LATENCY, ['--round-trips', '5', '--rounds', '2', '--variants', 'tcp,ipc,net-unix'], { env: { ...process.env, TMPDIR: tmp }, timeoutMs: 60_000 });
  assert.equal(r.code, 0, r.stderr);
  // A 32-sample `net` shard: 32 sample indices and dropout keys in the header, 21 840 float32 weights
  // out, as many gradients back.
  assert.match(r.stdout, /^out: assignment header 3\d\d B \(32 samples, sample indices\) \+ weights 87360 B; back: result 874\d\d B$/m);
  assert.match(r.stdout, /^2 rounds × 5 round trips per variant/m);
  const rows = r.stdout.split('\n').filter((l) => /^\| (tcp|ipc|net-unix) \|/.test(l));
  assert.deepEqual(
    rows.map((l) => l.split('|')[1].trim()),
    ['tcp', 'ipc', 'net-unix'],
  );
  for (const row of rows) {
    const [, , , median, p90, , , faster] = row.split('|').map((c) => c.trim());
    assert.ok(Number(median) > 0 && Number(p90) >= Number(median), row);
    assert.match(faster, /^[0-2]\/2$/, row);
  }
  // The ipc variants' socket files went with their folder.
  assert.deepEqual(readdirSync(tmp), []);
});

test('hop-latency --workers 2: a round trip is one assignment to each worker and both results back', async () => {
  const r = await runCli(HOP_LATENCY, ['--workers', '2', '--round-trips', '3', '--rounds', '1', '--variants', 'tcp,net-tcp,codec'], { timeoutMs: 60_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^# round trip coordinator → 2 workers → coordinator/m);
  assert.match(r.stdout, /^a round trip: one assignment to each of 2 workers \(the weights frame shared\), then every result back$/m);
  assert.equal(r.stdout.split('\n').filter((l) => /^\| (tcp|net-tcp|codec) \|/.test(l)).length, 3, r.stdout);
});

test('hop-latency: a bad flag is one line naming it, exit status 2', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['--variants', 'tcp,udp'], /^hop-latency: --variants: unknown udp; known: tcp, ipc, /],
    [['--rounds', '0'], /^hop-latency: --rounds 0: must be a positive integer$/],
    [['--round-trips', 'many'], /^hop-latency: --round-trips many: must be a positive integer$/],
    [['--workers', '0'], /^hop-latency: --workers 0: must be a positive integer$/],
  ];
  for (const [args, pattern] of cases) {
    const r = await runCli(HOP_LATENCY, args);
    assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], pattern);
  }
});
