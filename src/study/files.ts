/**
 * The names of the files the studies write: apart from the studies themselves (which load tfjs),
 * so that the command line can name them in --help without loading anything heavy.
 */
export const SWEEP_JSON = 'sweep.json';
export const SWEEP_MD = 'sweep.md';
export const RUNS_DIR = 'runs';
export const ACCURACY_BARS = 'accuracy.png';
export const LOSS_CURVES = 'loss.png';
export const TEST_ACCURACY_CURVES = 'test-accuracy-curves.png';
export const EVALUATION_FILE = 'evaluation.json';
