/**
 * The engines' names, which --engine accepts: apart from engine/backend.ts, which loads tfjs, so
 * that the command line can be checked (and --help printed) before any engine loads.
 */
export const ENGINE_NAMES = ['webgpu', 'wasm', 'tfjs-node', 'tfjs-node-gpu'] as const;
export type EngineName = (typeof ENGINE_NAMES)[number];
/** What --engine accepts. */
export type EngineChoice = EngineName | 'auto';
export const ENGINE_CHOICES: readonly EngineChoice[] = ['auto', ...ENGINE_NAMES];

export function isEngineChoice(s: string): s is EngineChoice {
  return (ENGINE_CHOICES as readonly string[]).includes(s);
}
