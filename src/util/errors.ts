/**
 * Errors that reach the user as one line. UsageError exits with status 2 (bad flags), every other
 * UserError with 1 (bad data, unwritable output, lost workers). Anything else is a bug and keeps its
 * stack in the JSON log, but the terminal still gets one line.
 */
export class UserError extends Error {
  readonly exitCode: number = 1;
}

export class UsageError extends UserError {
  override readonly exitCode: number = 2;
}

/** Prints `prog: message` and sets the exit status; never throws. */
export function reportFatal(prog: string, err: unknown): void {
  const message = err instanceof Error ? err.message : String(err);
  const oneLine = message.split('\n')[0];
  process.stderr.write(`${prog}: error: ${oneLine}\n`);
  process.exitCode = err instanceof UserError ? err.exitCode : 1;
  if (!(err instanceof UserError) && process.env.DEBUG_STACK) process.stderr.write(`${(err as Error).stack}\n`);
}
