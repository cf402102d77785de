/** The member table, driven as a plain object: admission, identity, the liveness clock, removal. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Membership } from '../src/coordinator/membership.js';
import { type Hello, PROTOCOL_VERSION } from '../src/protocol/messages.js';

const hello = (workerId: string, extra: Partial<Hello> = {}): Hello => ({
  type: 'hello',
  protocol: PROTOCOL_VERSION,
  workerId,
  pid: 1000,
  host: 'h',
  backend: 'wasm',
  device: 'cpu',
  build: '0.1.0+sha256:aaaa',
  engine: 'wasm (fused kernels)',
  models: { net: 'net-digest', lenet: 'lenet-digest' },
  ...extra,
});

test('a hello is admitted once; a repeated one changes nothing; another protocol is refused', () => {
  const m = new Membership(5000);
  const a = m.admit('a', hello('a'), 100);
  assert.equal(a.kind, 'admitted');
  assert.equal(m.size, 1);
  const again = m.admit('a', hello('a', { device: 'other' }), 200);
  assert.equal(again.kind, 'repeated');
  assert.equal(again.kind === 'repeated' && again.member, a.kind === 'admitted' && a.member);
  assert.equal(m.get('a')?.hello.device, 'cpu', 'the first hello stands');
  assert.equal(m.get('a')?.lastHeard, 100);

  const old = m.admit('b', hello('b', { protocol: PROTOCOL_VERSION + 1 }), 100);
  assert.deepEqual(old, {
    kind: 'refused',
    reason: `protocol version ${PROTOCOL_VERSION + 1}, coordinator speaks ${PROTOCOL_VERSION}`,
    error: `worker b speaks protocol ${PROTOCOL_VERSION + 1}`,
  });
  assert.equal(m.size, 1);
  // A member saying hello with another version is refused too, and stays a member.
  assert.equal(m.admit('a', hello('a', { protocol: 1 }), 0).kind, 'refused');
  assert.equal(m.size, 1);
});

test('members are listed in order of joining, and every device that ever joined is remembered', () => {
  const m = new Membership(5000);
  for (const id of ['x', 'y', 'z']) m.admit(id, hello(id, { device: `dev-${id}` }), 0);
  assert.deepEqual([...m.all()].map((w) => [w.id, w.joined]), [['x', 0], ['y', 1], ['z', 2]]);
  assert.ok(m.remove(m.get('y')!));
  assert.deepEqual([...m.all()].map((w) => w.id), ['x', 'z']);
  assert.deepEqual(m.devices().map((d) => [d.id, d.device]), [['x', 'dev-x'], ['y', 'dev-y'], ['z', 'dev-z']]);
});

test('the liveness clock: silent past the timeout, with the reason the log gives', () => {
  const m = new Membership(2000);
  m.admit('a', hello('a'), 0);
  m.admit('b', hello('b'), 0);
  assert.deepEqual(m.silent(2000), [], 'exactly the timeout is not yet silent');
  assert.equal(m.heard('b', 1500)?.id, 'b');
  assert.equal(m.heard('stranger', 1500), undefined, 'a stranger has no clock');
  const lost = m.silent(2500);
  assert.deepEqual(lost.map((s) => [s.member.id, s.reason]), [['a', 'silent for 2.5 s']]);
  assert.equal(m.size, 2, 'it says who is lost; it removes no one');
  assert.deepEqual(m.silent(3600).map((s) => s.member.id), ['a', 'b']);
});

test('removal: once; a later hello under the same id is a new member the old record cannot remove', () => {
  const m = new Membership(5000);
  const first = m.admit('a', hello('a'), 0);
  assert.equal(first.kind, 'admitted');
  const old = first.kind === 'admitted' ? first.member : undefined!;
  assert.ok(m.has(old));
  assert.equal(m.remove(old), true);
  assert.equal(m.remove(old), false);
  assert.ok(!m.has(old));
  const second = m.admit('a', hello('a'), 10);
  assert.equal(second.kind, 'admitted');
  const fresh = second.kind === 'admitted' ? second.member : undefined!;
  assert.notEqual(fresh, old);
  assert.equal(fresh.joined, 1);
  assert.equal(m.remove(old), false, 'the old record does not evict its successor');
  assert.ok(m.has(fresh));
});

test('identity: a member is a spawned child only when the hub has proved it is; a child is claimed once', () => {
  const m = new Membership(5000);
  // The same pid and host as child 7, but nothing proven: not the child.
  const claimer = m.admit('claimer', hello('claimer', { pid: 4242 }), 0);
  assert.equal(claimer.kind === 'admitted' && claimer.member.local, undefined);
  assert.equal(m.byLocal(7), undefined);
  const child = m.admit('child', hello('child', { pid: 4242 }), 0, 7);
  assert.equal(child.kind === 'admitted' && child.member.local, 7);
  assert.equal(m.byLocal(7)?.id, 'child');
  // A second hello proving the same child under another id does not take it over.
  const twin = m.admit('twin', hello('twin'), 0, 7);
  assert.equal(twin.kind === 'admitted' && twin.member.local, undefined);
  assert.equal(m.byLocal(7)?.id, 'child');
});

const RUN = { build: '0.1.0+sha256:aaaa', model: 'net', modelDigest: 'net-digest' };

test('build, engine and model: another model is always refused; another engine or build only in deterministic mode', () => {
  const relaxed = new Membership(5000, { ...RUN, deterministic: false });
  const strict = new Membership(5000, { ...RUN, deterministic: true });
  for (const m of [relaxed, strict]) {
    const otherModel = m.admit('m', hello('m', { models: { net: 'another', lenet: 'lenet-digest' } }), 0);
    assert.equal(otherModel.kind, 'refused');
    assert.match(otherModel.kind === 'refused' ? otherModel.reason : '', /^model net differs: this worker's digest another, the coordinator's net-digest/);
    const unknown = m.admit('u', hello('u', { models: { lenet: 'lenet-digest' } }), 0);
    assert.match(unknown.kind === 'refused' ? unknown.reason : '', /does not know model net/);
    // The first admitted worker sets the run's engine (the coordinator's --engine is auto).
    const first = m.admit('a', hello('a'), 0);
    assert.deepEqual(first.kind === 'admitted' && first.differs, []);
  }
  const fused = { engine: 'wasm (fused kernels)' };
  const library = { engine: 'wasm (library kernels)' };
  const otherBuild = { build: '0.1.0+sha256:bbbb' };
  const e = strict.admit('e', hello('e', library), 0);
  assert.equal(e.kind === 'refused' && e.reason, 'engine wasm (library kernels) differs from the run\'s wasm (fused kernels): --deterministic needs one engine on every worker');
  const b = strict.admit('b', hello('b', { ...fused, ...otherBuild }), 0);
  assert.equal(b.kind === 'refused' && b.reason, 'build 0.1.0+sha256:bbbb differs from the coordinator\'s 0.1.0+sha256:aaaa: --deterministic needs one build');
  assert.equal(strict.size, 1);

  const mixed = relaxed.admit('e', hello('e', { ...library, ...otherBuild }), 0);
  assert.equal(mixed.kind, 'admitted');
  assert.deepEqual(mixed.kind === 'admitted' && mixed.differs, ['engine wasm (library kernels), the run\'s wasm (fused kernels)', 'build 0.1.0+sha256:bbbb, the coordinator\'s 0.1.0+sha256:aaaa']);
  const recorded = relaxed.devices().find((d) => d.id === 'e');
  assert.deepEqual(recorded?.differs, mixed.kind === 'admitted' ? mixed.differs : undefined, 'summary.json devices records what differs');
  assert.equal(recorded?.engine, 'wasm (library kernels)');
});

test('the engine of a deterministic run is the coordinator\'s own when its --engine names one, even for the first worker', () => {
  const m = new Membership(5000, { ...RUN, deterministic: true, engine: 'webgpu (fused kernels)' });
  assert.equal(m.admit('a', hello('a'), 0).kind, 'refused');
  assert.equal(m.admit('g', hello('g', { engine: 'webgpu (fused kernels)' }), 0).kind, 'admitted');
});

test('a member put out is refused under its routing id and under its key name, whatever its new id', () => {
  const m = new Membership(5000);
  const a = m.admit('a', hello('a'), 0, undefined, 'alice');
  assert.equal(a.kind, 'admitted');
  if (a.kind !== 'admitted') return;
  assert.equal(a.member.keyName, 'alice');
  m.ban(a.member);
  m.remove(a.member);
  assert.equal(m.admit('a', hello('a'), 1).kind, 'refused');
  const renamed = m.admit('a2', hello('a2'), 1, undefined, 'alice');
  assert.equal(renamed.kind, 'refused');
  assert.match((renamed as { reason: string }).reason, /key alice was put out of this run/);
  assert.equal(m.admit('b', hello('b'), 1, undefined, 'bob').kind, 'admitted');
  assert.deepEqual(m.devices().map((d) => d.id), ['alice', 'bob']);
});
