/**
 * `coordinator sweep`: every training flag that takes a value accepts a comma list; one run per
 * combination (see src/study/sweep.ts).
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { join } from 'node:path';
import type { FlagValue, SweepRunSpec } from '../study/sweep.js';
import { ACCURACY_BARS, LOSS_CURVES, SWEEP_JSON, SWEEP_MD, TEST_ACCURACY_CURVES } from '../study/files.js';
import { UserError } from '../util/errors.js';
import { makeWritableDir } from '../util/fs.js';
import { type TrainFlags, addTrainingFlags, configFromFlags, configKey, defaultWorkers, givenConfigKeys, givenFlags } from './flags.js';

type Parser = (value: string, previous: unknown) => unknown;

/** Splits a comma list and parses each item with the flag's own parser. */
export function parseList(value: string, parse: Parser | undefined): FlagValue[] {
  return value.split(',').map((raw) => {
    const item = raw.trim();
    if (item === '') throw new InvalidArgumentError(`the list has an empty item.`);
    if (!parse) return item;
    try {
      return parse(item, undefined) as FlagValue;
    } catch (e) {
      if (e instanceof InvalidArgumentError) throw new InvalidArgumentError(`'${item}'${/^[a-z]/.test(e.message) ? ' ' : ': '}${e.message}`);
      throw e;
    }
  });
}

const longName = (o: Option): string => (o.long ?? `--${o.attributeName()}`).replace(/^--/, '');

export function registerSweepCommand(program: Command): Command {
  // The training flags exactly as `coordinator` defines them; those that take a value become lists.
  const template = addTrainingFlags(new Command());
  const cmd = program
    .command('sweep')
    .description('train one run per combination of flag values (every training flag that takes a value accepts a comma list, e.g. --lr 0.01,0.1), one after another; a sweep run again skips finished runs and resumes interrupted ones');
  const listable: Option[] = [];
  for (const o of template.options) {
    const key = o.attributeName();
    if (key === 'out') continue;
    if (o.isBoolean() || o.negate || key === 'data') {
      cmd.addOption(o);
      continue;
    }
    const parse = o.parseArg as Parser | undefined;
    const opt = new Option(o.flags, `${o.description}; a comma list runs each value`).argParser((value: string) => parseList(value, parse));
    if (o.defaultValue !== undefined) opt.default([o.defaultValue], String(o.defaultValue));
    cmd.addOption(opt);
    listable.push(o);
  }
  cmd
    .option('--in-process-worker', 'in every run with --workers N ≥ 1, one of the N computes in the coordinator\'s process, which starts N − 1 worker processes', false)
    .option('--metrics <addr>', 'serve Prometheus metrics at http://ADDR/metrics while each run trains, labelled run="NAME", e.g. 127.0.0.1:9400 (this machine only)')
    .requiredOption('--out <dir>', `the sweep's folder: runs/<name> per run, ${SWEEP_JSON}, ${SWEEP_MD}, plots`)
    .action(async (flags: Record<string, unknown>, c: Command) => {
      // The sweep itself loads tfjs: only once the command line and --out have been checked.
      const { checkMetrics } = await import('../coordinator/preflight.js');
      checkMetrics(flags.metrics as string | undefined, { insecure: false });
      makeWritableDir(flags.out as string, '--out');
      const { runSweep, sweepGrid } = await import('../study/sweep.js');
      const given = new Set(givenFlags(c));
      const axes = listable
        .filter((o) => Array.isArray(flags[o.attributeName()]))
        .map((o) => ({ option: o, flag: longName(o), values: flags[o.attributeName()] as FlagValue[] }));
      const grid = sweepGrid(axes);
      // One option per attribute: --augment and --no-augment both set `augment`.
      const canonical = new Map<string, Option>();
      for (const o of template.options) if (!canonical.has(o.attributeName()) && o.attributeName() !== 'out') canonical.set(o.attributeName(), o);
      const runs: SweepRunSpec[] = grid.map((point) => {
        const trainFlags = { ...flags, out: undefined } as Record<string, unknown>;
        for (const a of axes) trainFlags[a.option.attributeName()] = point.values[a.flag];
        const tf = trainFlags as unknown as TrainFlags;
        const outDir = join(flags.out as string, 'runs', point.name);
        const config = configFromFlags(tf, { workers: defaultWorkers(!tf.cuda), outDir }, givenConfigKeys(c));
        // What the run uses, model defaults included, under the flags' names.
        const effective = config as unknown as Record<string, unknown>;
        const record: Record<string, FlagValue> = {};
        for (const [attr, o] of canonical) {
          const key = configKey(attr);
          const v = key in effective ? effective[key] : trainFlags[attr];
          if (v !== undefined) record[longName(o)] = v as FlagValue;
        }
        return { name: point.name, varied: point.varied, flags: record, config };
      });
      const varying = new Set(Object.keys(grid[0]?.varied ?? {}));
      const fixed: string[] = [];
      for (const [attr, o] of canonical) {
        const flag = longName(o);
        if (!given.has(attr) || varying.has(flag)) continue;
        const v = runs[0]?.flags[flag];
        if (typeof v === 'boolean') {
          if (v) fixed.push(`--${flag}`);
          else if (!o.negate) fixed.push(`--no-${flag}`);
        } else if (v !== undefined) fixed.push(`--${flag} ${v}`);
      }
      process.stdout.write(`sweep: ${runs.length} run${runs.length === 1 ? '' : 's'} into ${join(flags.out as string, 'runs')}\n`);
      const result = await runSweep({
        outDir: flags.out as string,
        runs,
        given,
        fixed,
        inProcessWorker: flags.inProcessWorker === true,
        ...(flags.metrics !== undefined ? { metrics: flags.metrics as string } : {}),
      });
      const out = flags.out as string;
      const done = result.entries.filter((e) => e.status === 'finished').length;
      process.stdout.write(`sweep: ${done}/${runs.length} runs finished; ${[SWEEP_MD, SWEEP_JSON, ACCURACY_BARS, LOSS_CURVES, TEST_ACCURACY_CURVES].map((f) => join(out, f)).join(', ')}\n`);
      if (result.failed > 0 && !result.interrupted) throw new UserError(`${result.failed} of ${runs.length} runs failed (see ${join(out, SWEEP_MD)})`);
    });
  return cmd;
}
