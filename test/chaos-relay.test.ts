/**
 * The chaos test's TCP relay on real loopback sockets: it forwards both ways, a stall holds the
 * bytes without closing and resume delivers them, a drop cuts the connections and refuses new ones
 * for a while, latency delays, and a restarted target is reached again.
 */
import assert from 'node:assert/strict';
import { type Server, type Socket, connect, createServer } from 'node:net';
import { test } from 'node:test';
import { TcpRelay } from '../bench/chaos/relay.js';
import { waitFor } from './helpers.js';

/** An echo server on a free loopback port (or on `port`). */
function echoServer(port = 0): Promise<{ server: Server; port: number }> {
  return new Promise((resolve) => {
    const server = createServer((s) => s.pipe(s));
    server.listen(port, '127.0.0.1', () => resolve({ server, port: (server.address() as { port: number }).port }));
  });
}

/** A client of the relay that collects what comes back. */
function client(port: number): Promise<{ socket: Socket; received: () => string; closed: () => boolean }> {
  return new Promise((resolve, reject) => {
    let data = '';
    let closed = false;
    const socket = connect({ host: '127.0.0.1', port }, () => resolve({ socket, received: () => data, closed: () => closed }));
    socket.on('data', (d: Buffer) => (data += d.toString()));
    socket.on('close', () => (closed = true));
    socket.on('error', (e) => (closed ? undefined : reject(e)));
  });
}

test('forwards both ways; a stall holds the bytes without closing, resume delivers them', async () => {
  const target = await echoServer();
  const relay = await TcpRelay.start({ targetHost: '127.0.0.1', targetPort: target.port });
  try {
    const c = await client(relay.port);
    c.socket.write('hello');
    assert.ok(await waitFor(() => c.received() === 'hello', 5000), `got ${JSON.stringify(c.received())}`);

    relay.stall();
    c.socket.write(' world');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(c.received(), 'hello', 'nothing passes a stalled relay');
    assert.equal(c.closed(), false, 'a stall closes nothing');
    assert.equal(relay.open, 1);

    relay.resume();
    assert.ok(await waitFor(() => c.received() === 'hello world', 5000), `got ${JSON.stringify(c.received())}`);
    assert.deepEqual(relay.stats(), { connections: 1, refused: 0, drops: 0, stalls: 1 });
    c.socket.destroy();
  } finally {
    await relay.close();
    target.server.close();
  }
});

test('a drop cuts the connections and refuses new ones for its time, then forwards again', async () => {
  const target = await echoServer();
  const relay = await TcpRelay.start({ targetHost: '127.0.0.1', targetPort: target.port });
  try {
    const c = await client(relay.port);
    relay.drop(800);
    assert.ok(await waitFor(() => c.closed(), 5000), 'the connection through the relay is cut');
    assert.equal(relay.open, 0);

    const refused = await client(relay.port);
    assert.ok(await waitFor(() => refused.closed(), 5000), 'a connection during the drop is refused');

    await new Promise((r) => setTimeout(r, 900));
    const again = await client(relay.port);
    again.socket.write('back');
    assert.ok(await waitFor(() => again.received() === 'back', 5000));
    const stats = relay.stats();
    assert.equal(stats.drops, 1);
    assert.equal(stats.refused, 1);
    assert.equal(stats.connections, 2);
    again.socket.destroy();
  } finally {
    await relay.close();
    target.server.close();
  }
});

test('latency delays each chunk; a target that goes and comes back on its port is reached again', async () => {
  const first = await echoServer();
  const relay = await TcpRelay.start({ targetHost: '127.0.0.1', targetPort: first.port, latencyMs: 150 });
  try {
    const c = await client(relay.port);
    const sent = Date.now();
    c.socket.write('slow');
    assert.ok(await waitFor(() => c.received() === 'slow', 5000));
    // There and back: two delays of 150 ms (only a lower bound: a loaded machine adds, never removes).
    assert.ok(Date.now() - sent >= 290, `echo after ${Date.now() - sent} ms`);

    // The target goes (its open connection with it): the client's connection goes too.
    const gone = new Promise<void>((r) => first.server.close(() => r()));
    relay.drop(0);
    await gone;
    assert.ok(await waitFor(() => c.closed(), 5000));
    // Nothing listens: a new connection is accepted, then closed when the target refuses it.
    const orphan = await client(relay.port);
    assert.ok(await waitFor(() => orphan.closed(), 5000), 'a connection with no target behind it is closed');
    // The target is back on the same port: the relay reaches it.
    const second = await echoServer(first.port);
    const d = await client(relay.port);
    d.socket.write('again');
    assert.ok(await waitFor(() => d.received() === 'again', 5000));
    d.socket.destroy();
    second.server.close();
  } finally {
    await relay.close();
  }
});
