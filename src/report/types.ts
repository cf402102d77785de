/**
 * Shared types of the report layer.
 *
 * The metric record types are what the trainer writes (one JSON object per
 * line in `metrics.jsonl`) and what `writeRunPlots` consumes.
 */

/** One training-loss measurement (usually one per logged step). */
export interface TrainRecord {
  type: 'train';
  /** Epoch the step belongs to (0- or 1-based, the plots do not care). */
  epoch: number;
  /** Global optimisation step. */
  step: number;
  /** Total number of training samples seen so far (over all workers). */
  samples: number;
  /** Training loss of this step / logging window. */
  loss: number;
  /** Optional training accuracy of the batch / window, in [0, 1]. */
  accuracy?: number;
  /** Optional learning rate in effect. */
  lr?: number;
  /** Optional seconds since the start of training. */
  elapsed_s?: number;
}

/** One evaluation on the test set (usually one per epoch). */
export interface TestRecord {
  type: 'test';
  epoch: number;
  step: number;
  /** Samples seen when the evaluation happened (optional; inferred if absent). */
  samples?: number;
  test_loss: number;
  /** Test accuracy in [0, 1] (values > 1 are taken as percentages). */
  test_accuracy: number;
  elapsed_s?: number;
}

export type MetricRecord = TrainRecord | TestRecord;

// ---------------------------------------------------------------- charts

/** A point is [x, y]; non-finite coordinates are skipped. */
export type Point = readonly [number, number];

export interface LineSeries {
  name: string;
  points: readonly Point[];
  /** CSS colour; default: next colour of `PALETTE`. */
  color?: string;
  /** Line width in px (default 2). */
  lineWidth?: number;
  /** Dash pattern, e.g. [6, 4]. */
  dash?: number[];
  /** Draw point markers (default: when the series has at most 40 points). */
  markers?: boolean;
  /** Opacity 0..1 (default 1). */
  alpha?: number;
}

export interface LineChartSpec {
  title?: string;
  xLabel?: string;
  yLabel?: string;
  series: readonly LineSeries[];
  /** Canvas size in px (default 900 × 500). */
  width?: number;
  height?: number;
  /** Logarithmic y axis; points with y <= 0 are skipped. */
  logY?: boolean;
  /** Fixed y range [min, max]; data outside is clipped. */
  yRange?: readonly [number, number];
  /** Fixed x range [min, max]. */
  xRange?: readonly [number, number];
  /**
   * Base-2 logarithmic x axis (ticks at the powers of two in range, e.g. worker counts 1, 2, 4, …);
   * points with x <= 0 are skipped.
   */
  log2X?: boolean;
  /** Only integer x ticks (e.g. epochs). */
  xIntegerTicks?: boolean;
  /** Show the legend (default: true when there is at least one named series). */
  legend?: boolean;
}

export interface Bar {
  label: string;
  value: number;
  color?: string;
}

export interface BarChartSpec {
  title?: string;
  xLabel?: string;
  yLabel?: string;
  bars: readonly Bar[];
  width?: number;
  height?: number;
  /** Fixed y range; default: includes 0 and all values. */
  yRange?: readonly [number, number];
  /** Colour of bars without their own colour (default PALETTE[0]). */
  color?: string;
  /** Print the value above each bar when it fits (default true). */
  showValues?: boolean;
  /** Formatter for the values printed above the bars. */
  valueFormat?: (v: number) => string;
}

// ---------------------------------------------------------------- images

/** One grayscale image of `height` rows × `width` columns, row-major. */
export interface ImageCell {
  pixels: ArrayLike<number>;
  width: number;
  height: number;
  /** Caption under the image; '\n' separates lines. */
  caption?: string;
  /** Value range mapped to black..white; default: the grid's `range`, else this image's own min/max. */
  range?: readonly [number, number];
  /** Integer upscaling factor for this cell (overrides the grid's). */
  scale?: number;
}

export interface ImageRow {
  /** Label left of the row (group); '\n' separates lines. */
  label?: string;
  cells: readonly ImageCell[];
}

export interface ImageGridSpec {
  rows: readonly ImageRow[];
  title?: string;
  /** Integer nearest-neighbour upscaling factor (default 2). */
  scale?: number;
  /**
   * If set (and the cell has no own `scale`), each image is upscaled by the
   * largest integer factor that keeps max(width, height) * factor <= cellSize
   * (at least 1) — handy for feature maps of different sizes.
   */
  cellSize?: number;
  /** Value range for all cells without their own; default per-image min/max. */
  range?: readonly [number, number];
  /** Draw high values dark (ink on paper) instead of white (default false). */
  invert?: boolean;
  /** Wrap a row's cells into lines of at most this many cells. */
  maxColumns?: number;
  /** Outer margin in px (default 10). */
  padding?: number;
  /** Space between cells (and between lines within a row) in px (default 6). */
  gap?: number;
  /** Space between rows in px (default: gap, or 3 × gap when some row wraps). */
  rowGap?: number;
  /** Caption font size in px (default 11). */
  captionFontSize?: number;
}

// ---------------------------------------------------------------- HTML

export interface RunReport {
  /** Page title (default "Training run report"). */
  title?: string;
  /** A line under the title, e.g. the run id or date. */
  subtitle?: string;
  /** Flags / configuration of the run, shown as a key–value table. */
  config?: Record<string, unknown>;
  /** Summary (final accuracy, time, …), shown as a key–value table. */
  summary?: Record<string, unknown>;
  /**
   * Plot PNG file names relative to outDir. Default: every *.png in outDir that
   * is not one of the other images below (loss.png and accuracy.png first).
   * Names whose file does not exist are left out.
   */
  plots?: string[];
  /** Confusion matrix counts [true][pred], shown as an HTML table. */
  confusion?: number[][];
  /** Class names for the confusion matrix (default 0..n-1). */
  classNames?: string[];
  /** File name of a rendered confusion matrix PNG (optional). */
  confusionImage?: string;
  /** File name of the misclassified-images grid PNG (optional). */
  misclassifiedImage?: string;
  /** File name of the feature-maps grid PNG (optional). */
  featureMapsImage?: string;
  /** Free-text notes, one paragraph each. */
  notes?: string[];
}
