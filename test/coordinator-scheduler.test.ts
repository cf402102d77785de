/** One step's plan, driven as a plain object: least work first, weights once per step, reassignment. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type Candidate, Scheduler } from '../src/coordinator/scheduler.js';

const members = (...ids: string[]): Candidate[] => ids.map((id, joined) => ({ id, joined }));

test('shards go to the member with the least work, ties to the earliest joined; weights ride with each member\'s first shard', () => {
  const s = new Scheduler();
  const pool = members('a', 'b', 'c');
  s.begin(0, 7);
  const plan = [0, 1, 2, 3, 4, 5, 6].map((shard) => s.assign(shard, pool));
  assert.deepEqual(plan.map((a) => a?.member), ['a', 'b', 'c', 'a', 'b', 'c', 'a']);
  assert.deepEqual(plan.map((a) => a?.withWeights), [true, true, true, false, false, false, false]);
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6].map((shard) => s.assignee(shard)), ['a', 'b', 'c', 'a', 'b', 'c', 'a']);
  assert.equal(s.pendingOf('a'), 3);

  // Joining order decides ties, not the order the candidates are listed in.
  s.begin(1, 2);
  assert.equal(s.assign(0, [{ id: 'late', joined: 9 }, { id: 'early', joined: 1 }])?.member, 'early');
  // The next step's weights ride along again.
  assert.equal(s.assign(1, pool)?.withWeights, true);
});

test('a shard with no member waits, and is listed for the next joiner', () => {
  const s = new Scheduler();
  s.begin(3, 3);
  assert.equal(s.assign(0, []), undefined);
  assert.equal(s.assign(1, []), undefined);
  assert.equal(s.assign(2, members('a'))?.member, 'a');
  assert.deepEqual(s.unassigned(), [0, 1]);
  assert.equal(s.assignee(0), undefined);
  for (const shard of s.unassigned()) s.assign(shard, members('a', 'b'));
  assert.deepEqual([s.assignee(0), s.assignee(1)], ['b', 'a'], 'the idle joiner first, then a tie, to the earliest');
  assert.deepEqual(s.unassigned(), []);
});

test('completion frees the member; a lost member\'s open shards come back unassigned, done ones do not', () => {
  const s = new Scheduler();
  const pool = members('a', 'b');
  s.begin(5, 4);
  for (let shard = 0; shard < 4; shard++) s.assign(shard, pool); // a: 0, 2; b: 1, 3
  s.complete(0);
  assert.ok(s.isDone(0));
  assert.equal(s.pendingOf('a'), 1);
  const open = s.release('a');
  assert.deepEqual(open, [2]);
  assert.equal(s.assignee(2), undefined);
  assert.equal(s.assignee(0), 'a', 'a finished shard keeps the member that computed it');
  assert.deepEqual(s.release('a'), [], 'released once');
  const re = s.assign(2, [pool[1]]);
  assert.deepEqual(re, { shard: 2, member: 'b', withWeights: false });
  s.complete(3);
  assert.deepEqual(s.release('b'), [1, 2]);
  // A member that comes back is a stranger to the scheduler: it gets the weights again.
  assert.deepEqual(s.assign(1, [{ id: 'a', joined: 2 }]), { shard: 1, member: 'a', withWeights: true });
});

test('exclude leaves a member out of the choice', () => {
  const s = new Scheduler();
  s.begin(0, 1);
  assert.equal(s.assign(0, members('a', 'b'), 'a')?.member, 'b');
  assert.equal(s.assign(0, members('a'), 'a'), undefined);
});

test('a new step forgets the last one\'s plan', () => {
  const s = new Scheduler();
  s.begin(0, 2);
  s.assign(0, members('a'));
  s.complete(0);
  s.begin(1, 2);
  assert.equal(s.isDone(0), false);
  assert.equal(s.assignee(0), undefined);
  assert.equal(s.pendingOf('a'), 0);
  assert.deepEqual(s.unassigned(), [0, 1]);
  assert.equal(s.assignee(5), undefined, 'no shard 5 in this step');
  assert.equal(s.isDone(5), false);
});

const POLICY = { floorMs: 1000, factor: 4, hardFactor: 10, hardFloorMs: 60_000 };

test('a late shard gets a backup on another member; the first result wins and the beaten member is named', () => {
  const s = new Scheduler();
  const pool = members('a', 'b');
  s.begin(0, 2);
  s.assign(0, pool, undefined, 0);
  s.assign(1, pool, undefined, 0);
  // Before the floor nothing is late; after it, shard 0 (a) and shard 1 (b) both are.
  assert.deepEqual(s.late(999, POLICY), []);
  assert.deepEqual(s.late(1001, POLICY), [
    { kind: 'backup', shard: 0, primary: 'a' },
    { kind: 'backup', shard: 1, primary: 'b' },
  ]);
  const backup = s.assignBackup(0, pool);
  assert.deepEqual(backup, { shard: 0, member: 'b', withWeights: false });
  assert.ok(s.holds(0, 'a') && s.holds(0, 'b') && !s.holds(1, 'a'));
  // Only one backup per shard.
  assert.deepEqual(s.late(1002, POLICY).map((l) => l.shard), [1]);
  // The backup returns first: a was beaten. a's own copy later is a duplicate for the reducer.
  assert.equal(s.complete(0, 'b', 1500), 'a');
  assert.equal(s.pendingOf('a'), 0);
  // A shard returned by its own member beats nobody.
  assert.equal(s.complete(1, 'b', 1500), undefined);
});

test('the deadline is learnt from round trips; a shard far past it has its member given up on', () => {
  const s = new Scheduler();
  const pool = members('a', 'b');
  for (let step = 0; step < 8; step++) {
    s.begin(step, 1);
    s.assign(0, pool, undefined, step * 10_000);
    s.complete(0, s.assignee(0), step * 10_000 + 2000);
  }
  // Median round trip 2 s: deadline 8 s (above the 1 s floor), hard limit max(80 s, 60 s).
  assert.equal(s.deadlineMs(POLICY), 8000);
  s.begin(8, 1);
  s.assign(0, pool, undefined, 0);
  assert.deepEqual(s.late(7999, POLICY), []);
  assert.equal(s.late(8001, POLICY)[0].kind, 'backup');
  assert.deepEqual(s.late(80_001, POLICY), [{ kind: 'give-up', shard: 0, member: s.assignee(0), lateMs: 80_001 }]);
});

test("a lost backup leaves the shard with its assignee; a lost assignee leaves it with its backup", () => {
  const s = new Scheduler();
  const pool = members('a', 'b', 'c');
  s.begin(0, 2);
  s.assign(0, pool, undefined, 0); // a
  s.assign(1, pool, undefined, 0); // b
  s.assignBackup(0, pool); // c
  assert.deepEqual(s.release('c'), []);
  assert.equal(s.assignee(0), 'a');
  assert.ok(!s.holds(0, 'c'));
  s.assignBackup(1, pool); // c again (least loaded)
  assert.deepEqual(s.release('b'), []);
  assert.equal(s.assignee(1), 'c');
});
