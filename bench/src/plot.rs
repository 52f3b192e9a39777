//! Benchmark charts as static SVG files: latency percentile curves (HdrHistogram style) and values
//! over time, one line per target, drawn with `plotters`.
//!
//! Why SVG: a chart must be produced by the tool alone, with no browser, service or system library,
//! and be readable anywhere (CI artifacts, a pull request). The SVG backend writes `<text>`
//! elements that the viewer lays out with its own fonts, so no font file is embedded; `plotters`
//! only estimates text widths to place labels.
//!
//! Data is taken as it comes from a measurement: NaN and infinite values (and absurd ones, beyond
//! `MAX_MAGNITUDE`) are skipped, and values a log axis cannot show (zero, negative) are raised to a
//! small positive floor, so a chart is always written. Units: latencies arrive in microseconds and
//! are drawn in milliseconds.

use std::{ops::Range, path::Path};

use plotters::{
    coord::{
        ranged1d::{AsRangedCoord, DefaultFormatting, KeyPointHint, ValueFormatter},
        types::RangedCoordf64,
    },
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

/// One line on a chart.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// Size of every chart, in pixels.
const CHART_SIZE: (u32, u32) = (900, 500);

/// Largest magnitude drawn; beyond it a value counts as infinite and is skipped, and no log axis
/// starts below its inverse. So axis bounds, their padding and the ratio of a log axis's bounds stay
/// finite: plotters would loop (nearly) forever stepping its ticks towards an infinity.
const MAX_MAGNITUDE: f64 = 1e150;

/// Lowest latency drawn, in milliseconds: 1 µs, the resolution of the benchmark histograms.
const MIN_LATENCY_MS: f64 = 0.001;

/// Percentile ticks of the "nines" axis, in the order they appear; 0 marks the origin.
const PERCENTILE_TICKS: [(f64, &str); 7] =
    [(0.0, "0"), (50.0, "50"), (90.0, "90"), (99.0, "99"), (99.9, "99.9"), (99.99, "99.99"), (99.999, "99.999")];

/// Tableau 10: colours told apart by most viewers, colour-blind ones included.
const PALETTE: [RGBColor; 10] = [
    RGBColor(0x4e, 0x79, 0xa7),
    RGBColor(0xf2, 0x8e, 0x2b),
    RGBColor(0xe1, 0x57, 0x59),
    RGBColor(0x76, 0xb7, 0xb2),
    RGBColor(0x59, 0xa1, 0x4f),
    RGBColor(0xed, 0xc9, 0x48),
    RGBColor(0xb0, 0x7a, 0xa1),
    RGBColor(0xff, 0x9d, 0xa7),
    RGBColor(0x9c, 0x75, 0x5f),
    RGBColor(0xba, 0xb0, 0xac),
];

/// Latency percentile curves (one per target) on one chart, like HdrHistogram's plots:
/// x = percentile, on a "nines" log scale (position -log10(1 - p/100)), ticks labelled
/// 50, 90, 99, 99.9, 99.99, 99.999 (only up to what the data reaches); y = latency in ms on a log
/// scale. `curves[i].points` are (percentile in [0, 100), latency in microseconds) sorted by
/// percentile. Writes an SVG file at `path`.
pub fn latency_percentiles_svg(path: &Path, title: &str, curves: &[Series]) -> Result<(), String> {
    // Percentiles outside [0, 100) have no position on the nines axis: 100 would be infinitely far.
    let lines: Vec<Line> = curves
        .iter()
        .map(|curve| Line {
            label: curve.label.clone(),
            points: curve
                .points
                .iter()
                .filter(|&&(p, us)| drawable(us) && (0.0..100.0).contains(&p))
                .map(|&(p, us)| (nines_position(p), (us / 1000.0).max(MIN_LATENCY_MS)))
                .collect(),
        })
        .collect();
    let frame =
        Frame { title, x_desc: "percentile", y_desc: "latency (ms)", legend_position: SeriesLabelPosition::UpperLeft };
    write_svg(path, |root| {
        let Some((x, y)) = data_bounds(&lines) else { return draw_no_data(root, title) };
        // The last tick the data reaches; a small tolerance because -log10(1 - 0.999) is 2.9999...
        let ticks =
            PERCENTILE_TICKS.iter().map(|&(p, _)| nines_position(p)).filter(|&tick| tick <= x.end + 1e-9).collect();
        let x_axis = NinesAxis { end: if x.end > 0.0 { x.end } else { nines_position(90.0) }, ticks };
        draw_chart(root, &frame, x_axis, log_axis(y).log_scale(), &|x| nines_label(*x), &|y| tick_number(*y), &lines)
    })
}

/// Values over time: x = seconds since the start of the measurement, y = value (label `y_label`,
/// linear scale from 0, or log scale when `log_y`); one line per series, with a legend.
pub fn time_series_svg(path: &Path, title: &str, y_label: &str, series: &[Series], log_y: bool) -> Result<(), String> {
    let mut lines: Vec<Line> = series
        .iter()
        .map(|s| Line {
            label: s.label.clone(),
            points: s.points.iter().filter(|&&(x, y)| drawable(x) && drawable(y)).copied().collect(),
        })
        .collect();
    if log_y {
        // Zero or negative values are drawn at the smallest positive value of the data.
        let floor =
            lines.iter().flat_map(|l| &l.points).map(|p| p.1).filter(|&y| y > 0.0).fold(f64::INFINITY, f64::min);
        let floor = if floor.is_finite() { floor.max(1.0 / MAX_MAGNITUDE) } else { 1.0 };
        lines.iter_mut().flat_map(|l| &mut l.points).for_each(|p| p.1 = p.1.max(floor));
    }
    let frame = Frame { title, x_desc: "seconds", y_desc: y_label, legend_position: SeriesLabelPosition::UpperRight };
    write_svg(path, |root| {
        let Some((x, y)) = data_bounds(&lines) else { return draw_no_data(root, title) };
        let x_axis = padded_from_zero(x);
        let fmt = |v: &f64| tick_number(*v);
        if log_y {
            draw_chart(root, &frame, x_axis, log_axis(y).log_scale(), &fmt, &fmt, &lines)
        } else {
            draw_chart(root, &frame, x_axis, padded_from_zero(y), &fmt, &fmt, &lines)
        }
    })
}

/// A series with only the points that can be drawn, in chart coordinates.
struct Line {
    label: String,
    points: Vec<(f64, f64)>,
}

/// What surrounds the data: title, axis descriptions, and the legend corner preferred when several
/// are equally free.
struct Frame<'a> {
    title: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    legend_position: SeriesLabelPosition,
}

type Root<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// Renders with `draw` into memory, then writes the file: the only I/O error is the write's, and it
/// names the path.
fn write_svg(path: &Path, draw: impl FnOnce(&Root) -> Result<(), String>) -> Result<(), String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, CHART_SIZE).into_drawing_area();
        let rendered = root.fill(&WHITE).map_err(|e| e.to_string()).and_then(|()| draw(&root));
        rendered
            .and_then(|()| root.present().map_err(|e| e.to_string()))
            .map_err(|e| format!("cannot draw chart {}: {e}", path.display()))?;
    }
    std::fs::write(path, svg).map_err(|e| format!("cannot write chart {}: {e}", path.display()))
}

/// The chart of a measurement that produced nothing: the title and "no data", so a report still
/// links to a valid file.
fn draw_no_data(root: &Root, title: &str) -> Result<(), String> {
    let (width, height) = root.dim_in_pixel();
    let centre = |size: u32| i32::try_from(size / 2).unwrap_or(i32::MAX);
    let title_style = ("sans-serif", 28).into_font().into_text_style(root).pos(Pos::new(HPos::Center, VPos::Top));
    let body_style = ("sans-serif", 24).into_font().into_text_style(root).pos(Pos::new(HPos::Center, VPos::Center));
    root.draw(&Text::new(title.to_string(), (centre(width), 10), title_style)).map_err(|e| e.to_string())?;
    root.draw(&Text::new("no data", (centre(width), centre(height)), body_style)).map_err(|e| e.to_string())
}

/// Axes, grid, one line per series (and a dot for a series of one point, which a line cannot show)
/// and the legend.
fn draw_chart<X, Y>(
    root: &Root,
    frame: &Frame,
    x_axis: X,
    y_axis: Y,
    x_label: &dyn Fn(&f64) -> String,
    y_label: &dyn Fn(&f64) -> String,
    lines: &[Line],
) -> Result<(), String>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(root)
        .caption(frame.title, ("sans-serif", 28))
        .margin(15)
        // Room for half of the last x label, centred on the right edge.
        .margin_right(40)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x_axis, y_axis)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc(frame.x_desc)
        .y_desc(frame.y_desc)
        .x_label_formatter(x_label)
        .y_label_formatter(y_label)
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .draw()
        .map_err(|e| e.to_string())?;
    for (index, line) in lines.iter().enumerate() {
        let colour = series_colour(index);
        let style = colour.stroke_width(2);
        chart
            .draw_series(std::iter::once(PathElement::new(line.points.clone(), style)))
            .map_err(|e| e.to_string())?
            .label(line.label.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 4), (x + 20, y + 4)], colour.filled()));
        if let [point] = line.points.as_slice() {
            chart.draw_series(std::iter::once(Circle::new(*point, 4, colour.filled()))).map_err(|e| e.to_string())?;
        }
    }
    let legend_position = emptiest_corner(&chart, lines, &frame.legend_position);
    chart
        .configure_series_labels()
        .position(legend_position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 17))
        .draw()
        .map_err(|e| e.to_string())
}

/// The percentile axis: linear in nines positions from 0 to `end`, with grid lines and labels only
/// at `ticks` (positions of `PERCENTILE_TICKS`), where evenly spaced numbers would mean nothing.
struct NinesAxis {
    end: f64,
    ticks: Vec<f64>,
}

impl Ranged for NinesAxis {
    // Labels come from the chart's formatter, `nines_label`.
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, position: &f64, limit: (i32, i32)) -> i32 {
        RangedCoordf64::from(self.range()).map(position, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // No light grid lines between the ticks.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        0.0..self.end
    }
}

/// The corner of the plotting area where the legend covers the fewest data points, `preferred` on a
/// tie: with several targets, whichever corner is fixed, some chart hides its lines under the legend.
fn emptiest_corner<X, Y>(
    chart: &ChartContext<SVGBackend, Cartesian2d<X, Y>>,
    lines: &[Line],
    preferred: &SeriesLabelPosition,
) -> SeriesLabelPosition
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    // The legend's size, from plotters' layout of 17 px labels: about 23 px a row and 8.5 px a
    // character, plus the colour swatch and padding.
    let longest_label = lines.iter().map(|l| l.label.chars().count()).max().unwrap_or(0);
    let width = 50 + (longest_label as f64 * 8.5) as i32;
    let height = 10 + 23 * lines.len() as i32;
    let (x_pixels, y_pixels) = chart.plotting_area().get_pixel_range();
    let covered = |position: &SeriesLabelPosition| {
        let (left, top) = match position {
            SeriesLabelPosition::UpperLeft => (x_pixels.start, y_pixels.start),
            SeriesLabelPosition::UpperRight => (x_pixels.end - width, y_pixels.start),
            SeriesLabelPosition::LowerLeft => (x_pixels.start, y_pixels.end - height),
            _ => (x_pixels.end - width, y_pixels.end - height),
        };
        let points = lines.iter().flat_map(|l| &l.points).map(|point| chart.backend_coord(point));
        points.filter(|&(x, y)| (left..left + width).contains(&x) && (top..top + height).contains(&y)).count()
    };
    let corners = [
        preferred.clone(),
        SeriesLabelPosition::UpperLeft,
        SeriesLabelPosition::UpperRight,
        SeriesLabelPosition::LowerRight,
        SeriesLabelPosition::LowerLeft,
    ];
    // `min_by_key` keeps the first of equal corners: the preferred one.
    corners.into_iter().min_by_key(covered).unwrap_or(SeriesLabelPosition::UpperLeft)
}

/// Whether a value can be drawn: not NaN, and finite within `MAX_MAGNITUDE`.
fn drawable(value: f64) -> bool {
    value.abs() <= MAX_MAGNITUDE
}

/// The x and y ranges covered by all points, or `None` when there is no point at all.
fn data_bounds(lines: &[Line]) -> Option<(Range<f64>, Range<f64>)> {
    let mut points = lines.iter().flat_map(|l| &l.points);
    let &(x, y) = points.next()?;
    Some(
        points.fold((x..x, y..y), |(xs, ys), &(x, y)| (xs.start.min(x)..xs.end.max(x), ys.start.min(y)..ys.end.max(y))),
    )
}

/// A linear axis that includes 0, with 5% headroom above the data and a unit span when the data is
/// a single value.
fn padded_from_zero(data: Range<f64>) -> RangedCoordf64 {
    let start = data.start.min(0.0);
    let end = data.end.max(0.0);
    let span = end - start;
    let end = if span > 0.0 { end + span * 0.05 } else { start + 1.0 };
    (start..end).into()
}

/// A log axis from the power of ten at or below the data to the one at or above it; `data` is
/// positive.
fn log_axis(data: Range<f64>) -> Range<f64> {
    let start = 10f64.powf(data.start.log10().floor());
    let end = 10f64.powf(data.end.log10().ceil());
    let end = if end > start { end } else { start * 10.0 };
    // A hair below the bottom decade: plotters finds its first tick with ln(start) / ln(10), which
    // rounds to just above -1 for 0.1 and would drop that tick.
    start * (1.0 - 1e-9)..end
}

/// Position of percentile `p` on the nines axis: 90 → 1, 99 → 2, 99.9 → 3.
fn nines_position(percentile: f64) -> f64 {
    -(1.0 - percentile / 100.0).log10()
}

/// The tick label of a nines axis position (the axis only has ticks at `PERCENTILE_TICKS`).
fn nines_label(position: f64) -> String {
    PERCENTILE_TICKS
        .iter()
        .find(|(p, _)| (nines_position(*p) - position).abs() < 1e-6)
        .map(|(_, label)| label.to_string())
        .unwrap_or_else(|| tick_number(100.0 * (1.0 - 10f64.powf(-position))))
}

/// A tick value with three significant digits and no trailing zeros: 0.001, 0.25, 1500, not
/// 0.30000000000000004.
fn tick_number(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return format!("{value}");
    }
    let decimals = (2.0 - value.abs().log10().floor()).max(0.0) as usize;
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// The colour of series `index`: the palette, then hues spaced by the golden angle, so no two series
/// of a chart share a colour.
fn series_colour(index: usize) -> RGBColor {
    PALETTE.get(index).copied().unwrap_or_else(|| {
        let hue = (index as f64 * 0.618_033_988_75).fract();
        let (r, g, b) = HSLColor(hue, 0.65, 0.45).rgb();
        RGBColor(r, g, b)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A fresh directory under the system temp dir, unique to this process and test.
    fn temp_dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("keel-bench-plot-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// (percentile, µs) points of a latency curve that reaches `max_percentile`, growing with it.
    fn percentile_curve(label: &str, max_percentile: f64, scale_us: f64) -> Series {
        let mut points: Vec<(f64, f64)> =
            [0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999, 99.9999]
                .into_iter()
                .filter(|&p| p <= max_percentile)
                .map(|p| (p, scale_us * (1.0 + nines_position(p))))
                .collect();
        points.push((max_percentile, scale_us * (2.0 + nines_position(max_percentile))));
        Series { label: label.to_string(), points }
    }

    fn render_percentiles(test: &str, curves: &[Series]) -> String {
        let dir = temp_dir(test);
        latency_percentiles_svg(&dir.join("latency.svg"), "produce latency", curves).unwrap();
        let svg = read_svg(&dir.join("latency.svg"));
        std::fs::remove_dir_all(dir).unwrap();
        svg
    }

    fn render_time_series(test: &str, series: &[Series], log_y: bool) -> String {
        let dir = temp_dir(test);
        time_series_svg(&dir.join("series.svg"), "throughput", "MB/s", series, log_y).unwrap();
        let svg = read_svg(&dir.join("series.svg"));
        std::fs::remove_dir_all(dir).unwrap();
        svg
    }

    /// The file's text, checked to be one `<svg>` element.
    fn read_svg(path: &Path) -> String {
        let svg = std::fs::read_to_string(path).unwrap();
        let trimmed = svg.trim();
        assert!(trimmed.starts_with("<svg"), "not an SVG document: {}", &trimmed[..trimmed.len().min(80)]);
        assert!(trimmed.ends_with("</svg>"), "SVG document not closed");
        assert_eq!(svg.matches("<svg").count(), 1);
        svg
    }

    /// The texts of all `<text>` elements, trimmed.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0.trim().to_string()))
            .collect()
    }

    /// The `<polyline>` elements of series: 2 px wide, where axes and tick marks are 1 px.
    fn series_polylines(svg: &str) -> Vec<&str> {
        svg.split("<polyline")
            .skip(1)
            .map(|p| p.split_once("/>").unwrap().0)
            .filter(|p| p.contains("stroke-width=\"2\""))
            .collect()
    }

    fn attribute<'a>(element: &'a str, name: &str) -> &'a str {
        element.split_once(&format!(" {name}=\"")).unwrap().1.split_once('"').unwrap().0
    }

    /// The colour of each series line.
    fn polyline_strokes(svg: &str) -> Vec<String> {
        series_polylines(svg).into_iter().map(|p| attribute(p, "stroke").to_string()).collect()
    }

    /// Number of vertices of each series line.
    fn polyline_lengths(svg: &str) -> Vec<usize> {
        series_polylines(svg).into_iter().map(|p| attribute(p, "points").split_whitespace().count()).collect()
    }

    #[test]
    fn percentile_chart_has_one_line_and_legend_entry_per_curve() {
        let curves = [
            percentile_curve("keel://127.0.0.1:9400", 99.99, 150.0),
            percentile_curve("kafka://127.0.0.1:9092", 99.99, 900.0),
            percentile_curve("keel://10.0.0.2:9400", 99.99, 300.0),
        ];
        let svg = render_percentiles("three_curves", &curves);
        let texts = texts(&svg);
        for curve in &curves {
            assert!(texts.contains(&curve.label), "legend lacks {}: {texts:?}", curve.label);
        }
        let strokes = polyline_strokes(&svg);
        assert_eq!(strokes.len(), curves.len(), "{strokes:?}");
        let mut distinct = strokes.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), curves.len(), "colours repeat: {strokes:?}");
        assert_eq!(polyline_lengths(&svg), vec![curves[0].points.len(); 3]);
        assert!(texts.contains(&"produce latency".to_string()));
        assert!(texts.contains(&"percentile".to_string()) && texts.contains(&"latency (ms)".to_string()));
    }

    #[test]
    fn percentile_ticks_stop_where_the_data_stops() {
        let svg = render_percentiles("ticks_999", &[percentile_curve("keel://127.0.0.1:9400", 99.9, 100.0)]);
        let texts = texts(&svg);
        for tick in ["50", "90", "99", "99.9"] {
            assert!(texts.contains(&tick.to_string()), "no tick {tick}: {texts:?}");
        }
        for tick in ["99.99", "99.999"] {
            assert!(!texts.contains(&tick.to_string()), "tick {tick} beyond the data: {texts:?}");
        }

        let svg = render_percentiles("ticks_99999", &[percentile_curve("keel://127.0.0.1:9400", 99.9995, 100.0)]);
        let texts = super::tests::texts(&svg);
        for tick in ["99.9", "99.99", "99.999"] {
            assert!(texts.contains(&tick.to_string()), "no tick {tick}: {texts:?}");
        }
    }

    #[test]
    fn latency_axis_is_in_milliseconds_on_decades() {
        // 150 µs .. 1.2 ms: the axis spans 0.1 ms to 10 ms.
        let curve = Series { label: "keel://a".into(), points: vec![(50.0, 150.0), (99.0, 400.0), (99.9, 1200.0)] };
        let texts = texts(&render_percentiles("ms_axis", &[curve]));
        for tick in ["0.1", "1", "10"] {
            assert!(texts.contains(&tick.to_string()), "no y tick {tick}: {texts:?}");
        }
        assert!(!texts.iter().any(|t| t.contains("0000000")), "unrounded tick label: {texts:?}");
    }

    #[test]
    fn empty_input_writes_a_no_data_chart() {
        let svg = render_percentiles("no_curves", &[]);
        assert!(texts(&svg).contains(&"no data".to_string()));
        assert!(texts(&svg).contains(&"produce latency".to_string()));
        assert_eq!(polyline_strokes(&svg).len(), 0);

        // Series without a drawable point are no data either.
        let unusable = Series { label: "keel://a".into(), points: vec![(f64::NAN, 1.0), (100.0, 5.0), (-1.0, 3.0)] };
        assert!(texts(&render_percentiles("no_usable_points", &[unusable])).contains(&"no data".to_string()));
        let svg = render_time_series("no_series", &[], false);
        assert!(texts(&svg).contains(&"no data".to_string()));
        let empty = Series { label: "keel://a".into(), points: vec![] };
        assert!(texts(&render_time_series("empty_series", &[empty], true)).contains(&"no data".to_string()));
    }

    #[test]
    fn single_points_and_unloggable_values_still_draw() {
        let single = Series { label: "keel://single".into(), points: vec![(99.0, 250.0)] };
        let svg = render_percentiles("single_point", &[single]);
        assert!(svg.contains("<circle"), "a single point must be visible");
        assert!(!texts(&svg).contains(&"no data".to_string()));

        let zeros = Series { label: "keel://zeros".into(), points: vec![(0.0, 0.0), (50.0, -3.0), (99.0, 20.0)] };
        let svg = render_percentiles("zero_latency", &[zeros]);
        assert_eq!(polyline_lengths(&svg), vec![3]);

        let series = Series {
            label: "keel://127.0.0.1:9400".into(),
            points: vec![(0.0, 0.0), (1.0, -5.0), (2.0, f64::NAN), (3.0, 120.0), (f64::INFINITY, 1.0), (4.0, 80.0)],
        };
        for log_y in [false, true] {
            let svg = render_time_series(&format!("unloggable_{log_y}"), std::slice::from_ref(&series), log_y);
            // NaN and infinite points are skipped; zero and negative kept (raised on a log axis).
            assert_eq!(polyline_lengths(&svg), vec![4], "log_y {log_y}");
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "log_y {log_y}");
        }
        let extremes = Series {
            label: "keel://extremes".into(),
            points: vec![(0.0, 1e-320), (1.0, -1e150), (2.0, 1e150), (3.0, 1e300)],
        };
        for log_y in [false, true] {
            let svg = render_time_series(&format!("extremes_{log_y}"), std::slice::from_ref(&extremes), log_y);
            assert_eq!(polyline_lengths(&svg), vec![3], "log_y {log_y}");
        }
        let huge = Series { label: "keel://huge".into(), points: vec![(0.0, 0.0), (50.0, 1e150), (99.0, f64::MAX)] };
        assert_eq!(polyline_lengths(&render_percentiles("huge_latency", &[huge])), vec![2]);
        let one = Series { label: "keel://one".into(), points: vec![(0.0, 0.0)] };
        for log_y in [false, true] {
            let svg = render_time_series(&format!("single_time_point_{log_y}"), std::slice::from_ref(&one), log_y);
            assert!(svg.contains("<circle"), "log_y {log_y}");
        }
    }

    #[test]
    fn time_series_has_axis_labels_and_a_legend() {
        let series: Vec<Series> = (0..12)
            .map(|i| Series {
                label: format!("keel://127.0.0.1:{}", 9400 + i),
                points: (0..30).map(|t| (f64::from(t), f64::from(t * (i + 1)))).collect(),
            })
            .collect();
        let svg = render_time_series("twelve_series", &series, false);
        let texts = texts(&svg);
        for s in &series {
            assert!(texts.contains(&s.label), "legend lacks {}", s.label);
        }
        assert!(texts.contains(&"seconds".to_string()) && texts.contains(&"MB/s".to_string()));
        assert!(texts.contains(&"0".to_string()), "the linear axis starts at 0: {texts:?}");
        let mut strokes = polyline_strokes(&svg);
        assert_eq!(strokes.len(), 12);
        strokes.sort();
        strokes.dedup();
        assert_eq!(strokes.len(), 12, "colours repeat beyond the palette");
    }

    #[test]
    fn labels_are_escaped() {
        let series = Series { label: "a<b&c".into(), points: vec![(0.0, 1.0), (1.0, 2.0)] };
        let svg = render_time_series("escaped", &[series], false);
        assert!(svg.contains("a&lt;b&amp;c") && !svg.contains("a<b&c"));
    }

    #[test]
    fn unwritable_path_is_an_error_naming_it() {
        let path = temp_dir("unwritable").join("missing-dir").join("chart.svg");
        let curve = percentile_curve("keel://a", 99.0, 100.0);
        let err = latency_percentiles_svg(&path, "t", &[curve]).unwrap_err();
        assert!(err.contains(&path.display().to_string()), "{err}");
        let err = time_series_svg(&path, "t", "MB/s", &[], false).unwrap_err();
        assert!(err.contains(&path.display().to_string()), "{err}");
        std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap()).unwrap();
    }

    #[test]
    fn tick_numbers_are_short() {
        assert_eq!(tick_number(0.1 * 3.0), "0.3");
        assert_eq!(tick_number(0.001), "0.001");
        assert_eq!(tick_number(1500.0), "1500");
        assert_eq!(tick_number(2.5), "2.5");
        assert_eq!(tick_number(0.0), "0");
        assert_eq!(nines_label(nines_position(99.9)), "99.9");
        assert_eq!(nines_label(nines_position(99.0)), "99");
    }
}
