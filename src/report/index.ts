/** Report layer: charts, image grids, confusion matrices, per-run plots and HTML report. */
export * from './types.js';
export { PALETTE } from './draw.js';
export { renderLineChart, renderBarChart } from './chart.js';
export {
  renderImageGrid, imageGridLayout, channelsToCells, misclassifiedGridSpec, featureMapGridSpec,
  type ImageGridLayout, type MisclassifiedItem, type FeatureMapLayer, type FeatureMapExample,
} from './images.js';
export {
  confusionMatrix, confusionStats, renderConfusionMatrix, confusionMatrixHtml, confusionCellColor,
  type ConfusionStats, type ConfusionRenderOptions,
} from './confusion.js';
export { writeRunPlots, runPlotSpecs, parseMetricsJsonl, ema, LOSS_PLOT, ACCURACY_PLOT } from './plots.js';
export { writeRunReport, runReportHtml, objectTableHtml, fieldsHtml, escapeHtml, REPORT_FILE } from './html.js';
export {
  runHeadline, engineLine, groupFields, SUMMARY_CATALOG, CONFIG_CATALOG,
  type HeadlineFigure, type FieldCatalog, type FieldGroup, type FieldRow,
} from './fields.js';
export * from './format.js';
