/**
 * The transport floor for `npm run bench:scale`: the same bytes over the same kind of sockets with no
 * trainer on either side. A child process binds a ZeroMQ ROUTER (as the coordinator does) and, every
 * step, sends each of N DEALERs in this process an assignment of the run's size (a header and the
 * shared weights frame: one buffer, sent without a copy, as the coordinator sends it); each DEALER
 * answers after the same timer as a simulated worker, in as many parts as the run's results had; the
 * next step starts when the last part is in. Nothing is encoded, decoded, reduced or updated.
 *
 * What it measures is what any single coordinator that sends every worker its weights would pay on
 * this machine before doing any work of its own: the kernel's copies, ZeroMQ's I/O threads and the
 * wake-ups, all on the cores the simulated workers share. The coordinator's own cost is the
 * difference between a run's step time and this one's.
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Dealer, Router } from 'zeromq';
import { MAX_MESSAGE_BYTES, SendQueue } from '../../src/protocol/messages.js';
import { quantile } from '../../src/util/quantile.js';

export interface FloorPlan {
  workers: number;
  /** A shard's simulated compute time, ms (the timer of bench/scale/simulator.ts). */
  computeMs: number;
  /** One assignment: its header's bytes and the weights frame's. */
  headerBytes: number;
  weightsBytes: number;
  /** One worker's result per step: the bytes of each part, in the order they are sent. */
  resultPartBytes: number[];
  /** Steps measured; WARMUP_STEPS more are run first. */
  steps: number;
}

export interface FloorResult {
  /** From one step's first assignment to the next step's, as the DEALERs see it, ms. */
  step_ms: { median: number; p90: number };
  steps_measured: number;
}

/** Steps at the start left out (connections warming up), as in the runs. */
const WARMUP_STEPS = 2;
/** A floor not done by then has hung (256 workers take a few seconds): the bench fails instead of waiting. */
const FLOOR_TIMEOUT_MS = 120_000;
const THIS_FILE = fileURLToPath(import.meta.url);

/** Runs the floor for one plan: the child's ROUTER against `plan.workers` DEALERs here. */
export async function measureTransportFloor(plan: FloorPlan): Promise<FloorResult> {
  const child = fork(THIS_FILE, ['router', JSON.stringify(plan)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  const watchdog = setTimeout(() => child.kill('SIGKILL'), FLOOR_TIMEOUT_MS);
  const endpoint = await Promise.race([
    new Promise<string>((resolve) => child.once('message', (m) => resolve(String(m)))),
    exited.then((code) =>
      Promise.reject(
        new Error(code === null ? `the transport floor's ROUTER process did not bind within ${FLOOR_TIMEOUT_MS / 1000} s` : `the transport floor's ROUTER process exited with status ${code} before binding`),
      ),
    ),
  ]).catch((e: unknown) => {
    clearTimeout(watchdog);
    throw e;
  });
  const arrivals: number[] = []; // per step, when its first assignment arrived
  const sockets: Dealer[] = [];
  const parts = plan.resultPartBytes.map((n) => Buffer.alloc(n, 1));
  const served: Array<Promise<void>> = [];
  for (let i = 0; i < plan.workers; i++) {
    const socket = new Dealer({ linger: 0, maxMessageSize: MAX_MESSAGE_BYTES });
    const queue = new SendQueue((frames) => socket.send(frames));
    socket.connect(endpoint);
    sockets.push(socket);
    void queue.send(['hello']);
    served.push(
      (async () => {
        for (let step = 0; step < WARMUP_STEPS + plan.steps + 1; step++) {
          await socket.receive();
          const arrived = performance.now();
          if (arrivals.length === step) arrivals.push(arrived);
          // As a simulated worker: the tail part at half the compute time, the rest at the end.
          const send = (part: Buffer): void => void queue.send([part]).catch(() => {});
          if (parts.length === 1) setTimeout(() => send(parts[0]), plan.computeMs);
          else {
            setTimeout(() => {
              for (const part of parts.slice(0, -1)) send(part);
              setTimeout(() => send(parts[parts.length - 1]), Math.max(0, arrived + plan.computeMs - performance.now()));
            }, plan.computeMs / 2);
          }
        }
      })().catch((e: unknown) => {
        // Closed below when the ROUTER failed or hung: its error is the one to tell.
        if (!socket.closed) throw e;
      }),
    );
  }
  try {
    // The ROUTER leaves once the last step's parts are in; the DEALERs' sockets stay open until then.
    const code = await exited;
    if (code === null) throw new Error(`the transport floor of ${plan.workers} worker${plan.workers === 1 ? '' : 's'} did not finish within ${FLOOR_TIMEOUT_MS / 1000} s`);
    if (code !== 0) throw new Error(`the transport floor's ROUTER process exited with status ${code}`);
    await Promise.all(served);
  } finally {
    clearTimeout(watchdog);
    for (const s of sockets) if (!s.closed) s.close();
  }
  const walls: number[] = [];
  for (let step = WARMUP_STEPS; step + 1 < arrivals.length; step++) walls.push(arrivals[step + 1] - arrivals[step]);
  return { step_ms: { median: quantile(walls, 0.5), p90: quantile(walls, 0.9) }, steps_measured: walls.length };
}

/** The child: a ROUTER that only sends and receives, step after step. */
async function routerProcess(plan: FloorPlan): Promise<void> {
  const router = new Router({ linger: 0, maxMessageSize: MAX_MESSAGE_BYTES });
  await router.bind('tcp://127.0.0.1:*');
  process.send!(router.lastEndpoint);
  const ids: Buffer[] = [];
  while (ids.length < plan.workers) ids.push((await router.receive())[0]);
  const header = Buffer.alloc(plan.headerBytes, 2);
  const weights = Buffer.alloc(plan.weightsBytes, 3);
  const expected = plan.workers * plan.resultPartBytes.length;
  // The steps measured, the warm-up ones, and one more: a step's time ends where the next begins.
  for (let step = 0; step < WARMUP_STEPS + plan.steps + 1; step++) {
    for (const id of ids) await router.send([id, header, weights]);
    for (let received = 0; received < expected; received++) await router.receive();
  }
  router.close();
}

if (process.argv[1] === THIS_FILE && process.argv[2] === 'router') {
  routerProcess(JSON.parse(process.argv[3]) as FloorPlan).then(
    () => process.exit(0),
    (e: unknown) => {
      process.stderr.write(`transport floor: ${(e as Error).message}\n`);
      process.exit(1);
    },
  );
}
