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
