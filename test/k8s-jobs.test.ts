/**
 * The worker Job at the scale it is built for (256 pods), without a cluster: the rendered Job
 * goes through a model of the Kubernetes Job controller's decisions, and scenarios of crashes,
 * evictions, coordinator restarts and the run's end say how it ends.
 *
 * The model follows the Job controller of Kubernetes 1.31 to 1.33 (pkg/controller/job,
 * syncJob), in its order:
 *   1. a failed pod meets the pod failure policy's rules in order, the first match decides:
 *      FailJob fails the Job; Ignore counts the failure nowhere and the index gets a new pod;
 *      FailIndex fails the index; Count, or no rule, counts it. Exit code 0 is success, never
 *      matched by a rule;
 *   2. counted failures of all indexes together beyond `backoffLimit` (6 by default, 2147483647
 *      by default with `backoffLimitPerIndex`) fail the Job;
 *   3. with `backoffLimitPerIndex`: an index whose counted failures exceed it is failed for good;
 *      more failed indexes than `maxFailedIndexes` fail the Job; so does a failed index once every
 *      index has finished (succeeded or failed);
 *   4. only then the success policy: its first rule met (`succeededCount` indexes succeeded,
 *      within `succeededIndexes` where given) completes the Job (SuccessCriteriaMet: the pods
 *      still running are stopped, and nothing fails the Job after that);
 *   5. without one, the Job completes when every index has succeeded.
 * One `sync` takes the pods that ended since the last one, as the controller takes what its
 * informer saw during its batch period (1 s).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { K8S, type KObject, findObject, needsKustomize, render } from './k8s-helpers.js';
import { WORKER, tempDir } from './helpers.js';

/** How a pod ended: its container's exit code, or evicted, preempted or drained. */
type PodEnd = { index: number; exitCode: number; disrupted?: boolean };

type Outcome = { state: 'Running' } | { state: 'Complete' | 'Failed'; reason: string };

const MAX_INT32 = 2 ** 31 - 1;

function parseIndexes(spec: string): Set<number> {
  const out = new Set<number>();
  for (const part of spec.split(',')) {
    const [a, b] = part.split('-').map(Number);
    for (let i = a; i <= (b ?? a); i++) out.add(i);
  }
  return out;
}

class WorkerJobModel {
  readonly completions: number;
  readonly backoffLimit: number;
  readonly perIndex: number | undefined;
  readonly maxFailedIndexes: number | undefined;
  outcome: Outcome = { state: 'Running' };
  /** Counted failures, all indexes together. */
  failed = 0;
  readonly failuresOf = new Map<number, number>();
  readonly failedIndexes = new Set<number>();
  readonly succeededIndexes = new Set<number>();
  /** Indexes with a pod now. */
  readonly active = new Set<number>();
  podsCreated = 0;
  /** Pods stopped by the controller when the Job finished. */
  podsStopped = 0;

  constructor(readonly spec: KObject) {
    assert.equal(spec.completionMode, 'Indexed');
    assert.equal(spec.parallelism, spec.completions, 'every index runs at once');
    this.completions = spec.completions as number;
    this.perIndex = spec.backoffLimitPerIndex as number | undefined;
    this.maxFailedIndexes = spec.maxFailedIndexes as number | undefined;
    this.backoffLimit = (spec.backoffLimit as number | undefined) ?? (this.perIndex !== undefined ? MAX_INT32 : 6);
    this.startPods();
  }

  /** The pod failure policy's action for a failed pod (undefined: no rule matched, counted). */
  action(end: PodEnd): string | undefined {
    for (const rule of (this.spec.podFailurePolicy?.rules ?? []) as KObject[]) {
      if (rule.onExitCodes) {
        const { containerName, operator, values } = rule.onExitCodes as { containerName?: string; operator: string; values: number[] };
        if (containerName !== undefined && containerName !== 'worker') continue;
        if (operator === 'In' ? values.includes(end.exitCode) : !values.includes(end.exitCode)) return rule.action as string;
      }
      for (const c of (rule.onPodConditions ?? []) as KObject[]) {
        if (c.type === 'DisruptionTarget' && (c.status ?? 'True') === 'True' && end.disrupted) return rule.action as string;
      }
    }
    return undefined;
  }

  private startPods(): void {
    for (let i = 0; i < this.completions; i++) {
      if (this.active.has(i) || this.succeededIndexes.has(i) || this.failedIndexes.has(i)) continue;
      this.active.add(i);
      this.podsCreated++;
    }
  }

  private successPolicyMet(): boolean {
    for (const rule of (this.spec.successPolicy?.rules ?? []) as KObject[]) {
      const within = rule.succeededIndexes ? parseIndexes(rule.succeededIndexes as string) : undefined;
      const succeeded = [...this.succeededIndexes].filter((i) => !within || within.has(i)).length;
      if (rule.succeededCount !== undefined ? succeeded >= (rule.succeededCount as number) : within && succeeded >= within.size) return true;
    }
    return false;
  }

  private finish(state: 'Complete' | 'Failed', reason: string): void {
    this.outcome = { state, reason };
    this.podsStopped += this.active.size;
    this.active.clear();
  }

  /** One sync of the controller after the pods in `ends` ended. */
  sync(...ends: PodEnd[]): Outcome {
    if (this.outcome.state !== 'Running') return this.outcome;
    let failJob = false;
    for (const end of ends) {
      assert.ok(this.active.has(end.index), `index ${end.index} has no pod to end`);
      this.active.delete(end.index);
      if (end.exitCode === 0 && !end.disrupted) {
        this.succeededIndexes.add(end.index);
        continue;
      }
      const action = this.action(end);
      if (action === 'FailJob') failJob = true;
      else if (action === 'Ignore') continue;
      else if (action === 'FailIndex') {
        assert.ok(this.perIndex !== undefined, 'FailIndex needs backoffLimitPerIndex');
        this.failedIndexes.add(end.index);
      } else {
        this.failed++;
        const count = (this.failuresOf.get(end.index) ?? 0) + 1;
        this.failuresOf.set(end.index, count);
        if (this.perIndex !== undefined && count > this.perIndex) this.failedIndexes.add(end.index);
      }
    }
    if (failJob) this.finish('Failed', 'PodFailurePolicy');
    else if (this.failed > this.backoffLimit) this.finish('Failed', 'BackoffLimitExceeded');
    else if (this.perIndex !== undefined && this.maxFailedIndexes !== undefined && this.failedIndexes.size > this.maxFailedIndexes) this.finish('Failed', 'MaxFailedIndexesExceeded');
    else if (this.perIndex !== undefined && this.failedIndexes.size > 0 && this.failedIndexes.size + this.succeededIndexes.size >= this.completions) this.finish('Failed', 'FailedIndexes');
    else if (this.successPolicyMet()) this.finish('Complete', 'SuccessPolicy');
    else if (this.succeededIndexes.size >= this.completions) this.finish('Complete', 'CompletionsReached');
    else this.startPods();
    return this.outcome;
  }

  /** The run's end: the coordinator tells every worker with a pod that the run is finished. */
  runFinished(): Outcome {
    return this.sync(...[...this.active].map((index) => ({ index, exitCode: 0 })));
  }
}

/** The rendered worker Job for `workers` workers, `maxFailed` of which may fail for good. */
function workerJobSpec(workers: number, maxFailed: number): KObject {
  const copy = join(tempDir('mnist-k8s-jobs-'), 'k8s');
  cpSync(K8S, copy, { recursive: true });
  const settings = join(copy, 'base', 'settings.yaml');
  const text = readFileSync(settings, 'utf8').replace(/^  workers: "\d+"$/m, `  workers: "${workers}"`).replace(/^  maxFailedWorkers: "\d+"$/m, `  maxFailedWorkers: "${maxFailed}"`);
  writeFileSync(settings, text);
  const job = findObject(render(join(copy, 'overlays', 'gpu')), 'Job', 'mnist-worker');
  assert.equal(job.spec.completions, workers);
  assert.equal(job.spec.maxFailedIndexes, maxFailed);
  return job.spec as KObject;
}

const N = 256;
const MAX_FAILED = 16;
/** Every test here starts from the rendered Job: without kubectl's kustomize they skip (and fail under CI). */
const KUSTOMIZE = needsKustomize();
const spec = KUSTOMIZE.skip ? {} : workerJobSpec(N, MAX_FAILED);
/** The worker Job as it was before it counted per index: backoffLimit 10, no success policy. */
const before: KObject = { ...structuredClone(spec), backoffLimit: 10, backoffLimitPerIndex: undefined, maxFailedIndexes: undefined, successPolicy: undefined };

/** The worker's exit statuses, from its own --help: code → what it means. */
function workerExitStatuses(): Map<number, string> {
  const help = execFileSync(process.execPath, [WORKER, '--help'], { encoding: 'utf8' });
  const section = /Exit status:([\s\S]*?)\.\s*$/m.exec(help);
  assert.ok(section, help);
  const out = new Map<number, string>();
  for (const part of section[1].replace(/\s+/g, ' ').split(';')) {
    const m = /^\s*(\d+) (.+?)\s*$/.exec(part);
    assert.ok(m, `exit status entry: ${part}`);
    out.set(Number(m[1]), m[2]);
  }
  return out;
}

test('every exit status the worker documents has the handling it needs, and the policy names no other', KUSTOMIZE, () => {
  const statuses = workerExitStatuses();
  const model = new WorkerJobModel(spec);
  for (const [code, meaning] of statuses) {
    const action = code === 0 ? 'success' : model.action({ index: 0, exitCode: code });
    // What each meaning must lead to at 256 pods.
    const expected = /run finished/.test(meaning)
      ? 'success' // the index succeeds: the success policy
      : /start again to rejoin|SIGTERM/.test(meaning)
        ? 'Ignore' // a new pod rejoins; nothing is counted
        : /bad usage|refused by the coordinator/.test(meaning)
          ? 'FailJob' // every pod has the same flags, the same image
          : /error/.test(meaning)
            ? undefined // counted against the index's backoffLimitPerIndex
            : assert.fail(`exit ${code} (${meaning}): decide how the worker Job handles it`);
    assert.equal(action, expected, `exit ${code}: ${meaning}`);
  }
  assert.ok(statuses.has(0) && statuses.has(75) && statuses.has(143) && statuses.has(1) && statuses.has(2) && statuses.has(78), [...statuses.keys()].join(' '));
  for (const rule of spec.podFailurePolicy.rules as KObject[]) {
    for (const code of (rule.onExitCodes?.values ?? []) as number[]) assert.ok(statuses.has(code), `the policy names exit ${code}, which the worker never uses`);
  }
  // Evicted, preempted, drained: the pod's condition, whatever its exit code.
  assert.equal(model.action({ index: 0, exitCode: 137, disrupted: true }), 'Ignore');
  assert.equal(model.action({ index: 0, exitCode: 137 }), undefined, 'out of memory counts');
});

test('256 workers: crashes spread over many pods do not fail the Job; before, the eleventh did', KUSTOMIZE, () => {
  const job = new WorkerJobModel(spec);
  for (let i = 0; i < 40; i++) assert.deepEqual(job.sync({ index: i * 6, exitCode: 1 }), { state: 'Running' }, `crash ${i + 1}`);
  assert.equal(job.failed, 40);
  assert.equal(job.failedIndexes.size, 0);
  assert.equal(job.active.size, N, 'every crashed pod was replaced');
  assert.deepEqual(job.runFinished(), { state: 'Complete', reason: 'SuccessPolicy' });

  const old = new WorkerJobModel(before);
  for (let i = 0; i < 10; i++) assert.equal(old.sync({ index: i * 6, exitCode: 1 }).state, 'Running');
  assert.deepEqual(old.sync({ index: 60, exitCode: 1 }), { state: 'Failed', reason: 'BackoffLimitExceeded' });
  assert.equal(old.podsStopped, N - 1, 'and all 255 other workers with it');
});

test('256 workers: one bad pod fails its own index only, after 1 + backoffLimitPerIndex tries; the run goes on and the Job completes', KUSTOMIZE, () => {
  const job = new WorkerJobModel(spec);
  const tries = (spec.backoffLimitPerIndex as number) + 1;
  for (let t = 0; t < tries; t++) assert.equal(job.sync({ index: 17, exitCode: 1 }).state, 'Running');
  assert.deepEqual([...job.failedIndexes], [17]);
  assert.equal(job.active.size, N - 1, 'no more pods for index 17; 255 go on');
  assert.equal(job.podsCreated, N + tries - 1);
  // The run's end, as the pods are seen to end: the first that the controller sees completes the Job.
  assert.deepEqual(job.sync({ index: 3, exitCode: 0 }), { state: 'Complete', reason: 'SuccessPolicy' });
  assert.equal(job.podsStopped, N - 2);
});

test('256 workers: a broken image or node pool fails the Job once more than maxFailedIndexes indexes failed, not after 256 × tries', KUSTOMIZE, () => {
  const job = new WorkerJobModel(spec);
  const tries = (spec.backoffLimitPerIndex as number) + 1;
  let outcome: Outcome = { state: 'Running' };
  for (let t = 0; t < tries && outcome.state === 'Running'; t++) {
    for (let i = 0; i <= MAX_FAILED && outcome.state === 'Running'; i++) outcome = job.sync({ index: i, exitCode: 1 });
  }
  assert.deepEqual(outcome, { state: 'Failed', reason: 'MaxFailedIndexesExceeded' });
  assert.equal(job.failedIndexes.size, MAX_FAILED + 1);
  // Every pod failing at once: the same, in one sync.
  const all = new WorkerJobModel(spec);
  for (let t = 0; t < tries - 1; t++) assert.equal(all.sync(...Array.from({ length: N }, (_, index) => ({ index, exitCode: 137 }))).state, 'Running');
  assert.deepEqual(all.sync(...Array.from({ length: N }, (_, index) => ({ index, exitCode: 137 }))), { state: 'Failed', reason: 'MaxFailedIndexesExceeded' });
  // Bad flags: at once, whichever pod says so first.
  assert.deepEqual(new WorkerJobModel(spec).sync({ index: 200, exitCode: 2 }), { state: 'Failed', reason: 'PodFailurePolicy' });
});

test('256 workers: coordinator restarts (75), evictions and drains (DisruptionTarget) and SIGTERM (143) are counted nowhere', KUSTOMIZE, () => {
  const job = new WorkerJobModel(spec);
  // Fifty coordinator restarts: every worker is told the run stopped early, and rejoins.
  for (let restart = 0; restart < 50; restart++) assert.equal(job.sync(...Array.from({ length: N }, (_, index) => ({ index, exitCode: 75 }))).state, 'Running');
  for (let i = 0; i < N; i++) job.sync({ index: i, exitCode: 143 }, { index: (i + 1) % N, exitCode: 137, disrupted: true });
  assert.equal(job.failed, 0);
  assert.equal(job.failedIndexes.size, 0);
  assert.equal(job.active.size, N);
  assert.deepEqual(job.runFinished(), { state: 'Complete', reason: 'SuccessPolicy' });
});

test('the run\'s end completes the Job: a replacement pod still waiting for the coordinator is stopped, and cannot fail the Job', KUSTOMIZE, () => {
  // Index 5's pod crashed just before the end; its replacement waits for a coordinator that has
  // finished. Every other worker is told the run is finished and exits 0.
  const job = new WorkerJobModel(spec);
  job.sync({ index: 5, exitCode: 1 });
  assert.ok(job.active.has(5), 'a replacement pod for index 5');
  const others = [...job.active].filter((i) => i !== 5).map((index) => ({ index, exitCode: 0 }));
  assert.deepEqual(job.sync(...others), { state: 'Complete', reason: 'SuccessPolicy' });
  assert.equal(job.podsStopped, 1, 'the replacement is stopped');
  // What it would have done, had it gone on: no coordinator within --connect-timeout, exit 1.
  assert.deepEqual(job.sync({ index: 5, exitCode: 1 }), { state: 'Complete', reason: 'SuccessPolicy' });

  // Without the success policy, that pod and the ones after it (--connect-timeout 600 s each)
  // fail index 5 for good, and with it the Job, after a run that succeeded.
  const without = new WorkerJobModel({ ...structuredClone(spec), successPolicy: undefined });
  without.sync({ index: 5, exitCode: 1 });
  assert.equal(without.sync(...others).state, 'Running', 'waiting for index 5');
  let outcome: Outcome = { state: 'Running' };
  for (let t = 1; t <= (spec.backoffLimitPerIndex as number) && outcome.state === 'Running'; t++) outcome = without.sync({ index: 5, exitCode: 1 });
  assert.deepEqual(outcome, { state: 'Failed', reason: 'FailedIndexes' });
});

test('the order of the controller\'s checks: an index failed for good before the end fails the Job if every other index ends within one sync (docs/kubernetes.md)', KUSTOMIZE, () => {
  // The documented corner: failed indexes are checked before the success policy. The run's
  // outcome is the coordinator Job's; the worker Job then says Failed (FailedIndexes).
  const tries = (spec.backoffLimitPerIndex as number) + 1;
  const seenTogether = new WorkerJobModel(spec);
  for (let t = 0; t < tries; t++) seenTogether.sync({ index: 9, exitCode: 1 });
  assert.deepEqual(seenTogether.runFinished(), { state: 'Failed', reason: 'FailedIndexes' });
  // Seen one sync apart (any pod still running at the first), the success policy wins.
  const seenApart = new WorkerJobModel(spec);
  for (let t = 0; t < tries; t++) seenApart.sync({ index: 9, exitCode: 1 });
  assert.deepEqual(seenApart.sync({ index: 0, exitCode: 0 }), { state: 'Complete', reason: 'SuccessPolicy' });
});
