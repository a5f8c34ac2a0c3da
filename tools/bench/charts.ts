/**
 * Line charts as SVG, for the bench's concurrency sweep and for time series such as a soak's RSS
 * over time. The chart is a Vega-Lite spec compiled to Vega and rendered headless (no canvas, no
 * browser), so the SVG is Vega's own output, never hand-written markup.
 */
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

/** One axis of a {@link renderLineChart} chart. */
export interface ChartAxis {
  /** The field of each value plotted on this axis. */
  field: string;
  /** The axis title. */
  title: string;
  /** Vega-Lite's measurement type: `quantitative` for numbers, `temporal` for dates. */
  type: 'quantitative' | 'temporal' | 'ordinal';
  /** The scale, e.g. `{ type: 'log' }` for concurrency levels. @defaultValue linear */
  scale?: { type?: 'linear' | 'log' | 'sqrt' | 'time' | 'utc'; zero?: boolean };
}

/** What {@link renderLineChart} draws. */
export interface LineChart {
  title: string;
  x: ChartAxis;
  y: ChartAxis;
  /** The field naming each value's series: one line (and one legend entry) per distinct value. */
  series: string;
  /** The points, one object per point, holding the x, y and series fields. */
  values: Record<string, unknown>[];
  /** Plot size in pixels. @defaultValue 560 × 320 */
  width?: number;
  height?: number;
}

/** Renders `chart` as a standalone SVG document: one line with points per series, a legend. */
export async function renderLineChart(chart: LineChart): Promise<string> {
  const axis = (a: ChartAxis) => ({
    field: a.field,
    title: a.title,
    type: a.type,
    ...(a.scale ? { scale: a.scale } : {}),
  });
  const spec: TopLevelSpec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: chart.title,
    width: chart.width ?? 560,
    height: chart.height ?? 320,
    background: 'white',
    data: { values: chart.values },
    mark: { type: 'line', point: true },
    encoding: {
      x: axis(chart.x),
      y: axis(chart.y),
      color: { field: chart.series, type: 'nominal', title: null },
    },
  };
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
