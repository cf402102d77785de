/**
 * A TCP relay for fault injection: it listens on a loopback port and forwards every connection to a
 * target (the coordinator), so that a test can break one worker's link without touching the worker
 * or the coordinator:
 *
 *   drop(ms)   destroys the connections through it and refuses new ones for `ms` (a cut cable, a
 *              restarted router): ZeroMQ sees the connection go and reconnects once it is refused no more;
 *   stall()    stops forwarding without closing anything (a partition that keeps the TCP
 *              connection up): bytes wait in the buffers until resume();
 *   latency    delays each chunk by that many ms each way (a distant worker), so that a short run
 *              lasts long enough for faults to land in it.
 *
 * A new connection to the relay opens a new one to the target: when the target goes away and comes
 * back on the same address (a coordinator restarted), the relay keeps pointing at it.
 */
import { type Server, type Socket, connect, createServer } from 'node:net';

export interface RelayOptions {
  /** Where connections go. */
  targetHost: string;
  targetPort: number;
  /** The port to listen on (default: a free one), on 127.0.0.1. */
  port?: number;
  /** Delay every chunk by this many ms, each way (default 0). */
  latencyMs?: number;
}

/** What went through a relay. */
export interface RelayCounts {
  /** Connections accepted and forwarded. */
  connections: number;
  /** Connections refused while dropping. */
  refused: number;
  drops: number;
  stalls: number;
}

/** One accepted connection and its twin to the target. */
interface Pair {
  client: Socket;
  upstream: Socket;
}

export class TcpRelay {
  private readonly pairs = new Set<Pair>();
  private refuseUntil = 0;
  private stalled = false;
  /** Settles when a stall ends: chunks already on their way through the latency wait for it. */
  private flowing: Promise<void> = Promise.resolve();
  private endStall: () => void = () => {};
  private readonly counts: RelayCounts = { connections: 0, refused: 0, drops: 0, stalls: 0 };

  private constructor(
    private readonly server: Server,
    private readonly opts: RelayOptions,
    readonly port: number,
  ) {}

  static start(opts: RelayOptions): Promise<TcpRelay> {
    return new Promise((resolve, reject) => {
      const server = createServer({ noDelay: true });
      server.once('error', reject);
      server.listen(opts.port ?? 0, '127.0.0.1', () => {
        server.off('error', reject);
        const relay = new TcpRelay(server, opts, (server.address() as { port: number }).port);
        server.on('connection', (client) => relay.accept(client));
        resolve(relay);
      });
    });
  }

  /** The ZeroMQ address of the relay, for `worker --connect`. */
  get address(): string {
    return `tcp://127.0.0.1:${this.port}`;
  }

  /** Connections open through the relay now. */
  get open(): number {
    return this.pairs.size;
  }

  get isStalled(): boolean {
    return this.stalled;
  }

  stats(): RelayCounts {
    return { ...this.counts };
  }

  /** Destroys every connection through the relay, and refuses new ones for `refuseMs`. */
  drop(refuseMs: number): void {
    this.counts.drops++;
    this.refuseUntil = Date.now() + refuseMs;
    for (const pair of [...this.pairs]) this.cut(pair);
  }

  /** Stops forwarding, both ways, until resume(); nothing is closed. */
  stall(): void {
    if (this.stalled) return;
    this.counts.stalls++;
    this.stalled = true;
    this.flowing = new Promise((r) => (this.endStall = r));
    for (const { client, upstream } of this.pairs) {
      client.pause();
      upstream.pause();
    }
  }

  /** Forwards again what waited during a stall, and what comes after. */
  resume(): void {
    if (!this.stalled) return;
    this.stalled = false;
    this.endStall();
    for (const { client, upstream } of this.pairs) {
      client.resume();
      upstream.resume();
    }
  }

  /** Stops listening and closes every connection. */
  close(): Promise<void> {
    for (const pair of [...this.pairs]) this.cut(pair);
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: Socket): void {
    if (Date.now() < this.refuseUntil) {
      this.counts.refused++;
      client.destroy();
      return;
    }
    this.counts.connections++;
    client.setNoDelay(true);
    const upstream = connect({ host: this.opts.targetHost, port: this.opts.targetPort, noDelay: true });
    const pair: Pair = { client, upstream };
    upstream.once('connect', () => {
      // With nothing listening on a loopback target port in the ephemeral range, the kernel can
      // give the connection that very port as its source: a TCP self-connect, which would echo the
      // client's bytes back to it. That is a refused connection, not a coordinator.
      if (upstream.localPort === upstream.remotePort && upstream.localAddress === upstream.remoteAddress) this.cut(pair);
    });
    this.pairs.add(pair);
    this.forward(client, upstream);
    this.forward(upstream, client);
    for (const socket of [client, upstream]) {
      // A refused or reset target, or a peer gone: both ends go, and the client reconnects.
      socket.on('error', () => this.cut(pair));
      socket.on('close', () => this.cut(pair));
    }
    if (this.stalled) {
      client.pause();
      upstream.pause();
    }
  }

  /** Copies `from` to `to`, with the relay's latency and the receiver's back-pressure. */
  private forward(from: Socket, to: Socket): void {
    const latency = this.opts.latencyMs ?? 0;
    // Chunks leave in order: each waits for its own time, and for the one before it.
    let last: Promise<void> = Promise.resolve();
    from.on('data', (chunk: Buffer) => {
      const write = (): void => {
        if (to.destroyed) return;
        if (!to.write(chunk)) {
          from.pause();
          to.once('drain', () => {
            if (!this.stalled) from.resume();
          });
        }
      };
      if (latency <= 0) return write();
      const due = Date.now() + latency;
      last = last
        .then(() => new Promise<void>((r) => setTimeout(r, Math.max(0, due - Date.now()))))
        .then(() => this.flowing)
        .then(write);
    });
  }

  private cut(pair: Pair): void {
    if (!this.pairs.delete(pair)) return;
    pair.client.destroy();
    pair.upstream.destroy();
  }
}

