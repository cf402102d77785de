/**
 * The chaos run: a deterministic coordinator (`--no-spawn --listen`) and N worker processes, each
 * connected through its own TCP relay (relay.ts), while faults drawn from a seeded generator hit
 * them at random steps and after random delays:
 *
 *   worker-kill        SIGKILL a worker, start it again (through the same relay)
 *   worker-freeze      SIGSTOP a worker past --worker-timeout, then SIGCONT
 *   relay-drop         cut a worker's connections and refuse new ones for a while
 *   relay-stall        stop forwarding a worker's bytes past --worker-timeout, then resume
 *   coordinator-kill   SIGKILL the coordinator, start it again with --resume on the same address
 *
 * Faults come one after another: the next waits until training has gone on after the one before.
 * At the end the run's weights_sha256 is compared with an undisturbed run of the same flags
 * (--workers 0: the same digest in deterministic mode), with its steps, and every epoch's
 * evaluation must be in metrics.jsonl. Prints a table (fault, injected, survived) and writes
 * DIR/chaos.json and DIR/chaos.md; every process's output is in DIR/logs/.
 *
 *   node dist/bench/chaos/run.js [--workers 3] [--in-process-worker] [--epochs 3] [--train-limit 1920] [--faults-per-kind 2]
 *                                [--seed 1] [--latency-ms 100] [--worker-timeout 2] [--out DIR]
 *
 * Exit status: 0 every fault injected and survived, nothing lost; 1 otherwise; 2 bad flags.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { SeededRng } from '../../src/util/rng.js';
import { freeLoopbackPort } from '../free-port.js';
import { TcpRelay } from './relay.js';

const COORDINATOR = fileURLToPath(new URL('../../src/cli/coordinator.js', import.meta.url));
const WORKER = fileURLToPath(new URL('../../src/cli/worker.js', import.meta.url));

export const FAULT_KINDS = ['worker-kill', 'worker-freeze', 'relay-drop', 'relay-stall', 'coordinator-kill'] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

const FAULT_NAMES: Record<FaultKind, string> = {
  'worker-kill': 'worker killed (SIGKILL), restarted',
  'worker-freeze': 'worker frozen (SIGSTOP) past --worker-timeout',
  'relay-drop': 'worker link dropped, reconnects refused a while',
  'relay-stall': 'worker link stalled past --worker-timeout',
  'coordinator-kill': 'coordinator killed (SIGKILL), resumed',
};

export interface ChaosOptions {
  /** Worker processes, each through its own relay. */
  workers: number;
  /** The coordinator runs --in-process-worker: one more worker, in its own process (--workers N + 1). */
  inProcessWorker?: boolean;
  epochs: number;
  trainLimit: number;
  testLimit: number;
  batchSize: number;
  /** Seeds the fault plan (the training's own seed stays 1). */
  seed: number;
  faultsPerKind: number;
  /** Each relay's delay per chunk, each way: makes a short run last long enough for its faults. */
  latencyMs: number;
  /** --worker-timeout of the coordinator, in s; freezes and stalls last longer than it. */
  workerTimeoutS: number;
  /** Steps between checkpoints (--checkpoint-every): what a coordinator kill computes again. */
  checkpointEvery: number;
  out: string;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
  /** The whole chaos run must end within this (ms); past it, everything is stopped and the report says so. */
  timeoutMs?: number;
}

export interface FaultRecord {
  kind: FaultKind;
  /** The worker it hit (index), if it hit one. */
  worker?: number;
  /** The highest step seen when it was injected. */
  step: number;
  /** ms since the start of the chaos run. */
  atMs: number;
  /** How long it lasted (freeze, stall, refusal, restart delay), ms. */
  durationMs: number;
  /** Training went on after it (a step recorded after it was injected). */
  progressed: boolean;
  survived: boolean;
}

export interface ChaosReport {
  options: ChaosOptions;
  faults: FaultRecord[];
  table: Array<{ kind: FaultKind; fault: string; injected: number; survived: number }>;
  weightsSha256: string | undefined;
  referenceSha256: string;
  steps: number | undefined;
  referenceSteps: number;
  /** Epochs whose evaluation is in metrics.jsonl. */
  evaluatedEpochs: number[];
  coordinatorStarts: number;
  workerStarts: number;
  /** Worker or coordinator exits that no fault caused. */
  unexpectedExits: string[];
  workerFailures: number | undefined;
  seconds: number;
  /** Every fault kind injected at least once and survived, the digest and steps equal, every evaluation there. */
  ok: boolean;
  problems: string[];
}

/** A process of the run, its output in a log file. */
interface Proc {
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Set when the driver killed it on purpose. */
  killedByChaos: boolean;
  output: () => string;
}

function startProcess(script: string, args: string[], logFile: string): Proc {
  const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const log = createWriteStream(logFile);
  let output = '';
  const collect = (d: Buffer): void => {
    log.write(d);
    // What the driver looks for is near the end; the log file keeps it all.
    output = (output + d.toString()).slice(-200_000);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    child.on('exit', (code, signal) => {
      log.end();
      r({ code, signal });
    }),
  );
  return { child, exited, killedByChaos: false, output: () => output };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface MetricRecord {
  type: string;
  epoch: number;
  step: number;
}

function readMetrics(out: string): MetricRecord[] {
  try {
    return readFileSync(join(out, 'metrics.jsonl'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as MetricRecord);
  } catch {
    return []; // not there yet, or a line half-written: read again at the next poll
  }
}

/** The training flags, shared by the undisturbed run and the chaos run. */
function trainingFlags(o: ChaosOptions): string[] {
  return [
    '--deterministic',
    '--epochs', String(o.epochs),
    '--train-limit', String(o.trainLimit),
    '--test-limit', String(o.testLimit),
    '--batch-size', String(o.batchSize),
    '--log-interval', '1',
    '--checkpoint-every', String(o.checkpointEvery),
  ];
}

/**
 * The plan: every kind `faultsPerKind` times, in a seeded order, each at a seeded step of its own
 * slice of the first 60% of the run.
 */
export function planFaults(o: Pick<ChaosOptions, 'seed' | 'faultsPerKind' | 'workers'>, totalSteps: number): Array<{ kind: FaultKind; step: number; worker: number; delayMs: number; durationMs: number }> {
  const rng = SeededRng.create(o.seed, 0xc4a05);
  const kinds = rng.shuffle(FAULT_KINDS.flatMap((k) => Array.from({ length: o.faultsPerKind }, () => k)));
  // Faults last seconds, steps a fraction of one: the plan fits in the first 60% of the steps,
  // and a fault that finds its step passed (the one before it took longer) comes at once.
  const slice = (0.6 * totalSteps) / kinds.length;
  return kinds.map((kind, i) => ({
    kind,
    // Not before step 2: the first checkpoint (a coordinator kill resumes from it).
    step: Math.max(2, Math.floor(slice * i + rng.uniform() * slice)),
    worker: rng.int(o.workers),
    delayMs: Math.floor(rng.uniform() * 300),
    // Scaled by --worker-timeout where the fault must outlast it.
    durationMs: rng.uniform(),
  }));
}

export async function runChaos(o: ChaosOptions): Promise<ChaosReport> {
  const log = o.log ?? (() => {});
  const started = Date.now();
  const deadline = started + (o.timeoutMs ?? 30 * 60_000);
  const logs = join(o.out, 'logs');
  mkdirSync(logs, { recursive: true });
  const problems: string[] = [];
  const unexpectedExits: string[] = [];

  // The undisturbed run: one process, the same training flags.
  const referenceDir = join(o.out, 'undisturbed');
  log(`undisturbed run (--workers 0) in ${referenceDir}`);
  const reference = startProcess(COORDINATOR, [...trainingFlags(o), '--workers', '0', '--out', referenceDir], join(logs, 'undisturbed.log'));
  const refExit = await reference.exited;
  if (refExit.code !== 0) throw new Error(`the undisturbed run failed (${refExit.code ?? refExit.signal}): ${reference.output().slice(-2000)}`);
  const refSummary = JSON.parse(readFileSync(join(referenceDir, 'summary.json'), 'utf8')) as { weights_sha256: string; steps: number };

  const runDir = join(o.out, 'run');
  const port = await freeLoopbackPort();
  const listen = `tcp://127.0.0.1:${port}`;
  const relays = await Promise.all(Array.from({ length: o.workers }, () => TcpRelay.start({ targetHost: '127.0.0.1', targetPort: port, latencyMs: o.latencyMs })));
  const distributedFlags = [
    '--workers', String(o.workers + (o.inProcessWorker ? 1 : 0)),
    ...(o.inProcessWorker ? ['--in-process-worker'] : []),
    '--no-spawn', '--listen', listen,
    '--worker-timeout', String(o.workerTimeoutS),
    '--connect-timeout', '120',
    '--empty-pool-timeout', '120',
    '--out', runDir,
  ];

  let coordinatorStarts = 0;
  let workerStarts = 0;
  let finished = false;
  let coordinator: Proc;
  const startCoordinator = (resume: boolean): Proc => {
    coordinatorStarts++;
    const args = resume ? ['--resume', ...distributedFlags] : [...trainingFlags(o), ...distributedFlags];
    const p = startProcess(COORDINATOR, args, join(logs, `coordinator-${coordinatorStarts}.log`));
    void p.exited.then(({ code, signal }) => {
      if (p.killedByChaos) return;
      if (code === 0) finished = true;
      else {
        unexpectedExits.push(`coordinator (start ${coordinatorStarts}) exited with ${code ?? signal}`);
        finished = true;
      }
    });
    return p;
  };

  const workers: Proc[] = [];
  const startWorker = (i: number): Proc => {
    workerStarts++;
    const p = startProcess(WORKER, ['--connect', relays[i].address, '--connect-timeout', '120'], join(logs, `worker-${i}-${workerStarts}.log`));
    workers[i] = p;
    void p.exited.then(({ code, signal }) => {
      if (p.killedByChaos || finished || workers[i] !== p) return;
      // A worker that left on its own mid-run: the product lost it. Started again so that the run
      // can go on; the report counts it against the run.
      unexpectedExits.push(`worker ${i} exited with ${code ?? signal} mid-run: ${p.output().trim().split('\n').slice(-2).join(' | ')}`);
      startWorker(i);
    });
    return p;
  };

  coordinator = startCoordinator(false);
  for (let i = 0; i < o.workers; i++) startWorker(i);

  const totalSteps = refSummary.steps;
  const plan = planFaults(o, totalSteps);
  log(`chaos run: ${o.workers} workers${o.inProcessWorker ? ' and one in the coordinator\'s process' : ''}, ${totalSteps} steps, ${plan.length} faults (seed ${o.seed}) in ${runDir}`);
  const faults: FaultRecord[] = [];
  const highestStep = (records: MetricRecord[]): number => records.reduce((m, r) => (r.type === 'train' && r.step > m ? r.step : m), 0);
  const trainRecords = (records: MetricRecord[]): number => records.filter((r) => r.type === 'train').length;
  /** Train records at the end of the last fault: the next one waits for training to go on after it. */
  let recordsAfterLastFault = 0;
  const recordsAtInjection: number[] = [];

  const timedOut = (): boolean => Date.now() > deadline;
  for (const f of plan) {
    // Wait for the fault's step, and for training to have gone on since the last fault.
    for (;;) {
      const m = readMetrics(runDir);
      if (finished || timedOut() || (highestStep(m) >= f.step && trainRecords(m) > recordsAfterLastFault)) break;
      await sleep(50);
    }
    if (finished || timedOut()) break;
    await sleep(f.delayMs);
    if (finished) break;
    const before = readMetrics(runDir);
    const step = highestStep(before);
    recordsAtInjection.push(trainRecords(before));
    const atMs = Date.now() - started;
    const timeoutMs = o.workerTimeoutS * 1000;
    let durationMs = 0;
    let worker: number | undefined = f.worker;
    switch (f.kind) {
      case 'worker-kill': {
        const victim = workers[f.worker];
        victim.killedByChaos = true;
        victim.child.kill('SIGKILL');
        await victim.exited;
        durationMs = Math.floor(f.durationMs * 1000);
        await sleep(durationMs);
        startWorker(f.worker);
        break;
      }
      case 'worker-freeze': {
        const victim = workers[f.worker];
        durationMs = Math.floor(timeoutMs * (1.5 + f.durationMs));
        victim.child.kill('SIGSTOP');
        await sleep(durationMs);
        victim.child.kill('SIGCONT');
        break;
      }
      case 'relay-drop':
        durationMs = Math.floor(timeoutMs * (0.25 + f.durationMs));
        relays[f.worker].drop(durationMs);
        await sleep(durationMs);
        break;
      case 'relay-stall':
        durationMs = Math.floor(timeoutMs * (1.5 + f.durationMs));
        relays[f.worker].stall();
        await sleep(durationMs);
        relays[f.worker].resume();
        break;
      case 'coordinator-kill': {
        worker = undefined;
        const victim = coordinator;
        victim.killedByChaos = true;
        victim.child.kill('SIGKILL');
        await victim.exited;
        durationMs = Math.floor(f.durationMs * 1000);
        await sleep(durationMs);
        coordinator = startCoordinator(true);
        break;
      }
    }
    log(`step ${step}: ${f.kind}${worker !== undefined ? ` (worker ${worker})` : ''} for ${durationMs} ms`);
    recordsAfterLastFault = trainRecords(readMetrics(runDir));
    faults.push({ kind: f.kind, ...(worker !== undefined ? { worker } : {}), step, atMs, durationMs, progressed: false, survived: false });
  }

  // The end: the coordinator finishes (or the time is up).
  while (!finished && !timedOut()) await sleep(100);
  if (!finished) {
    problems.push(`the run did not finish within ${Math.round(((o.timeoutMs ?? 0) || 1_800_000) / 1000)} s`);
    coordinator.killedByChaos = true;
    coordinator.child.kill('SIGKILL');
  }
  await coordinator.exited;
  // Workers leave when the coordinator says the run is finished; one that is away at that moment
  // (frozen, or its link stalled) is told nothing: stop it.
  const stragglers = await Promise.all(workers.map((w) => Promise.race([w.exited.then(() => false), sleep(5000).then(() => true)])));
  workers.forEach((w, i) => {
    if (stragglers[i]) {
      w.killedByChaos = true;
      w.child.kill('SIGKILL');
    }
  });
  await Promise.all(workers.map((w) => w.exited));
  await Promise.all(relays.map((r) => r.close()));

  // What the run left.
  const records = readMetrics(runDir);
  for (const [i, f] of faults.entries()) f.progressed = trainRecords(records) > recordsAtInjection[i];
  const summaryPath = join(runDir, 'summary.json');
  const summary = existsSync(summaryPath) ? (JSON.parse(readFileSync(summaryPath, 'utf8')) as { weights_sha256: string; steps: number; worker_failures: number }) : undefined;
  const evaluatedEpochs = [...new Set(records.filter((r) => r.type === 'test').map((r) => r.epoch))].sort((a, b) => a - b);
  const digestEqual = summary?.weights_sha256 === refSummary.weights_sha256;
  if (!summary) problems.push('the run left no summary.json');
  else {
    if (!digestEqual) problems.push(`weights_sha256 ${summary.weights_sha256} differs from the undisturbed ${refSummary.weights_sha256}`);
    if (summary.steps !== refSummary.steps) problems.push(`${summary.steps} steps, the undisturbed run ${refSummary.steps}`);
  }
  const missing = Array.from({ length: o.epochs }, (_, i) => i + 1).filter((e) => !evaluatedEpochs.includes(e));
  if (missing.length > 0) problems.push(`no evaluation of epoch ${missing.join(', ')} in metrics.jsonl`);
  problems.push(...unexpectedExits);
  const clean = problems.length === 0;
  for (const f of faults) f.survived = clean && f.progressed;
  const table = FAULT_KINDS.map((kind) => ({
    kind,
    fault: FAULT_NAMES[kind],
    injected: faults.filter((f) => f.kind === kind).length,
    survived: faults.filter((f) => f.kind === kind && f.survived).length,
  }));
  for (const row of table) if (row.injected === 0) problems.push(`no ${row.kind} was injected (the run ended first)`);
  return {
    options: { ...o, log: undefined },
    faults,
    table,
    weightsSha256: summary?.weights_sha256,
    referenceSha256: refSummary.weights_sha256,
    steps: summary?.steps,
    referenceSteps: refSummary.steps,
    evaluatedEpochs,
    coordinatorStarts,
    workerStarts,
    unexpectedExits,
    workerFailures: summary?.worker_failures,
    seconds: (Date.now() - started) / 1000,
    ok: problems.length === 0,
    problems,
  };
}

/** The report as markdown: the fault table, then what was compared. */
export function formatReport(r: ChaosReport): string {
  const lines = [
    '| fault | injected | survived |',
    '|---|---:|---:|',
    ...r.table.map((row) => `| ${row.fault} | ${row.injected} | ${row.survived} |`),
    '',
    `- weights_sha256: ${r.weightsSha256 ?? 'none'} (${r.weightsSha256 === r.referenceSha256 ? 'equal to' : 'DIFFERS from'} the undisturbed run's)`,
    `- steps: ${r.steps ?? 'none'} of ${r.referenceSteps}; epochs evaluated: ${r.evaluatedEpochs.join(', ') || 'none'} of ${r.options.epochs}`,
    `- coordinator started ${r.coordinatorStarts} times, workers ${r.workerStarts} times; worker_failures ${r.workerFailures ?? 'n/a'}; ${r.seconds.toFixed(0)} s in all`,
    `- ${r.ok ? 'nothing lost' : `FAILED: ${r.problems.join('; ')}`}`,
  ];
  return lines.join('\n');
}

const USAGE = `usage: node dist/bench/chaos/run.js [options]   (or: npm run bench:chaos -- [options])
  --workers N           worker processes, each through its own relay (default 3)
  --in-process-worker   the coordinator computes as one more worker (--workers N + 1 --in-process-worker)
  --epochs N            epochs (default 3)
  --train-limit N       training samples per epoch (default 1920)
  --test-limit N        test samples evaluated after each epoch (default 500)
  --batch-size B        (default 32)
  --faults-per-kind K   how many faults of each of the ${FAULT_KINDS.length} kinds (default 2)
  --seed S              seeds the fault plan: kinds' order, steps, delays, durations, victims (default 1)
  --latency-ms MS       each relay's delay per chunk, each way (default 100)
  --worker-timeout S    the coordinator's --worker-timeout; freezes and stalls outlast it (default 2)
  --checkpoint-every N  steps between checkpoints (default 4)
  --timeout S           give up after S seconds (default 1800)
  --out DIR             where everything goes (default runs/chaos-<time>)
  -h, --help            this text`;

function positive(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!/^\d+$/.test(value) || n <= 0) throw new Error(`--${name} ${value}: expected a positive integer`);
  return n;
}

async function main(): Promise<number> {
  let o: ChaosOptions;
  try {
    const { values } = parseArgs({
      options: {
        workers: { type: 'string' },
        'in-process-worker': { type: 'boolean', default: false },
        epochs: { type: 'string' },
        'train-limit': { type: 'string' },
        'test-limit': { type: 'string' },
        'batch-size': { type: 'string' },
        'faults-per-kind': { type: 'string' },
        seed: { type: 'string' },
        'latency-ms': { type: 'string' },
        'worker-timeout': { type: 'string' },
        'checkpoint-every': { type: 'string' },
        timeout: { type: 'string' },
        out: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
    if (values.help) {
      process.stdout.write(`${USAGE}\n`);
      return 0;
    }
    const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
    o = {
      workers: positive('workers', values.workers, 3),
      inProcessWorker: values['in-process-worker'],
      epochs: positive('epochs', values.epochs, 3),
      trainLimit: positive('train-limit', values['train-limit'], 1920),
      testLimit: positive('test-limit', values['test-limit'], 500),
      batchSize: positive('batch-size', values['batch-size'], 32),
      faultsPerKind: positive('faults-per-kind', values['faults-per-kind'], 2),
      seed: positive('seed', values.seed, 1),
      latencyMs: values['latency-ms'] === '0' ? 0 : positive('latency-ms', values['latency-ms'], 100),
      workerTimeoutS: positive('worker-timeout', values['worker-timeout'], 2),
      checkpointEvery: positive('checkpoint-every', values['checkpoint-every'], 4),
      timeoutMs: positive('timeout', values.timeout, 1800) * 1000,
      out: resolve(values.out ?? join('runs', `chaos-${stamp}`)),
    };
  } catch (e) {
    process.stderr.write(`chaos: ${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const report = await runChaos({ ...o, log: (line) => process.stdout.write(`${line}\n`) });
  const text = formatReport(report);
  writeFileSync(join(o.out, 'chaos.json'), `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(join(o.out, 'chaos.md'), `${text}\n`);
  process.stdout.write(`\n${text}\n\nwrote ${join(o.out, 'chaos.md')} and chaos.json\n`);
  return report.ok ? 0 : 1;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then(
    (code) => (process.exitCode = code),
    (e: Error) => {
      process.stderr.write(`chaos: ${e.message}\n`);
      process.exitCode = 1;
    },
  );
}
