//! The evaluation's pictures, as SVG (plotters): DET curves on log axes and score
//! histograms with the thresholds that act on them.

use std::path::Path;

use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;

use super::AnyError;

const SIZE: (u32, u32) = (820, 560);
const COLOURS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
];

fn err(e: impl std::fmt::Display) -> AnyError {
    e.to_string().into()
}

/// The chart's caption and margins, the same on every picture.
fn frame<'a, 'b>(root: &'a DrawingArea<SVGBackend<'b>, Shift>, title: &str) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut b = ChartBuilder::on(root);
    b.caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(65);
    b
}

/// Draw the legend at `position` and write the file.
fn finish<'a, CT: CoordTranslate>(
    root: &DrawingArea<SVGBackend<'a>, Shift>,
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    position: SeriesLabelPosition,
) -> Result<(), AnyError> {
    chart
        .configure_series_labels()
        .position(position)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// A curve of (x, y) points with its legend.
pub struct Curve<'a> {
    pub label: String,
    pub points: &'a [(f64, f64)],
}

/// A DET curve: error rates on both axes, log scales; `marks` are operating points. A rate
/// of 0 is drawn on the axis' floor, the power of ten at or below the smallest rate above 0.
pub fn det(path: &Path, title: &str, axes: (&str, &str), curves: &[Curve], marks: &[(String, f64, f64)]) -> Result<(), AnyError> {
    let marked: Vec<(f64, f64)> = marks.iter().map(|m| (m.1, m.2)).collect();
    let (mut xmin, mut ymin) = (1.0f64, 1.0f64);
    for &(x, y) in curves.iter().flat_map(|c| c.points.iter()).chain(&marked) {
        if x > 0.0 {
            xmin = xmin.min(x);
        }
        if y > 0.0 {
            ymin = ymin.min(y);
        }
    }
    let floor = |v: f64| 10f64.powf(v.log10().floor()).max(1e-7);
    let (xmin, ymin) = (floor(xmin), floor(ymin));
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = frame(&root, title)
        .build_cartesian_2d((xmin..1.0).log_scale(), (ymin..1.0).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(axes.0)
        .y_desc(axes.1)
        .x_label_formatter(&|v| format!("{v:.0e}"))
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .draw()
        .map_err(err)?;
    for (i, c) in curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let pts: Vec<(f64, f64)> = c.points.iter().map(|&(x, y)| (x.max(xmin), y.max(ymin))).collect();
        chart
            .draw_series(LineSeries::new(pts, colour.stroke_width(2)))
            .map_err(err)?
            .label(c.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    for (label, x, y) in marks {
        let p = (x.max(xmin), y.max(ymin));
        chart
            .draw_series([Circle::new(p, 5, BLACK.filled())])
            .map_err(err)?
            .label(label.clone())
            .legend(|(x, y)| Circle::new((x + 10, y), 5, BLACK.filled()));
    }
    finish(&root, &mut chart, SeriesLabelPosition::UpperRight)
}

/// Score histograms (each normalised to its own count) over `range`, with vertical lines
/// at `thresholds`.
pub fn histogram(
    path: &Path,
    title: &str,
    x_desc: &str,
    range: (f32, f32),
    series: &[(String, &[f32])],
    thresholds: &[(String, f32)],
) -> Result<(), AnyError> {
    let shares: Vec<Vec<(f64, f64)>> = series.iter().map(|(_, v)| step_outline(v, range)).collect();
    let ymax = shares.iter().flatten().map(|p| p.1).fold(0.0, f64::max).max(1e-3) * 1.1;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = frame(&root, title)
        .build_cartesian_2d(f64::from(range.0)..f64::from(range.1), 0.0..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("share of photos / comparisons per bin")
        .draw()
        .map_err(err)?;
    for (i, ((label, v), pts)) in series.iter().zip(&shares).enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
            .map_err(err)?
            .label(format!("{label} ({})", v.len()))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    for (i, (label, t)) in thresholds.iter().enumerate() {
        let colour = COLOURS[(series.len() + i) % COLOURS.len()];
        let x = f64::from(*t);
        chart
            .draw_series(DashedLineSeries::new([(x, 0.0), (x, ymax)], 6, 4, colour.stroke_width(2)))
            .map_err(err)?
            .label(format!("{label} {t:.3}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    finish(&root, &mut chart, SeriesLabelPosition::UpperLeft)
}

/// Bins of a score histogram over a range.
const BINS: usize = 80;

/// The histogram of `v` over `range` as the points of its outline: each bin's share of `v`
/// (its own count, so series of different sizes compare).
fn step_outline(v: &[f32], range: (f32, f32)) -> Vec<(f64, f64)> {
    let width = (range.1 - range.0) / BINS as f32;
    let mut counts = vec![0usize; BINS];
    for s in v.iter().filter(|s| s.is_finite()) {
        let b = (((s - range.0) / width).floor().max(0.0) as usize).min(BINS - 1);
        counts[b] += 1;
    }
    // A step outline: each bin's share held across its width.
    let n = v.len().max(1) as f64;
    counts
        .iter()
        .enumerate()
        .flat_map(|(b, c)| {
            let x0 = f64::from(range.0 + b as f32 * width);
            let y = *c as f64 / n;
            [(x0, y), (x0 + f64::from(width), y)]
        })
        .collect()
}
