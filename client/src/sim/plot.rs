//! The report's charts, drawn with plotters' SVG backend (no font files or system
//! libraries: text is laid out by estimate): line charts with linear or log axes,
//! and bar charts.

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

const SIZE: (u32, u32) = (760, 420);
const COLORS: [RGBColor; 10] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// One named line or point set.
pub struct Series {
    /// Legend label.
    pub name: String,
    /// Points (x, y).
    pub points: Vec<(f64, f64)>,
    /// Draw points as dots instead of a line.
    pub dots: bool,
}

/// An axis: label, and whether it is logarithmic (base 10).
pub struct Axis {
    /// Label.
    pub label: String,
    /// Log scale.
    pub log: bool,
}

/// A value on the drawn (possibly log10) scale; none for non-positive values on a
/// log axis, which cannot be drawn.
fn scaled(v: f64, log: bool) -> Option<f64> {
    match (log, v.is_finite()) {
        (_, false) => None,
        (true, _) if v <= 0.0 => None,
        (true, _) => Some(v.log10()),
        (false, _) => Some(v),
    }
}

/// A tick label for a value on the drawn scale.
fn label(v: f64, log: bool) -> String {
    let v = if log { 10f64.powf(v) } else { v };
    if v.abs() >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.abs() >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The range of `values`, widened when empty or flat.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        (0.0, 1.0)
    } else if hi - lo < 1e-9 {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    }
}

/// A line chart as SVG text (an SVG saying what failed, if drawing fails).
pub fn line_chart(title: &str, x: &Axis, y: &Axis, series: &[Series]) -> String {
    let mut svg = String::new();
    let drawn = draw_lines(&mut svg, title, x, y, series);
    finish(svg, title, drawn)
}

/// A bar chart, one bar per (label, value), as SVG text.
pub fn bar_chart(title: &str, x_label: &str, y_label: &str, bars: &[(String, f64)]) -> String {
    let mut svg = String::new();
    let drawn = draw_bars(&mut svg, title, x_label, y_label, bars);
    finish(svg, title, drawn)
}

fn finish(svg: String, title: &str, drawn: DrawResult) -> String {
    match drawn {
        Ok(()) => svg,
        Err(e) => {
            let text = format!("{title}: could not draw the chart: {e}")
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            format!(
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"40\"><text x=\"10\" y=\"25\">{text}</text></svg>\n",
                SIZE.0
            )
        }
    }
}

fn draw_lines(out: &mut String, title: &str, x: &Axis, y: &Axis, series: &[Series]) -> DrawResult {
    let points: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .filter_map(|&(a, b)| Some((scaled(a, x.log)?, scaled(b, y.log)?)))
                .collect()
        })
        .collect();
    let (x0, x1) = bounds(points.iter().flatten().map(|p| p.0));
    let (y0, y1) = bounds(points.iter().flatten().map(|p| p.1));
    let (y0, y1) = if y.log {
        (y0, y1)
    } else {
        (y0.min(0.0), y1 + (y1 - y0.min(0.0)) * 0.05)
    };
    let root = SVGBackend::with_string(out, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    let (xlog, ylog) = (x.log, y.log);
    chart
        .configure_mesh()
        .x_desc(x.label.as_str())
        .y_desc(y.label.as_str())
        .x_label_formatter(&|v| label(*v, xlog))
        .y_label_formatter(&|v| label(*v, ylog))
        .light_line_style(WHITE)
        .draw()?;
    for (i, (s, pts)) in series.iter().zip(points).enumerate() {
        let color = COLORS[i % COLORS.len()];
        if s.dots {
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?
                .label(s.name.as_str())
                .legend(move |(x, y)| Circle::new((x + 8, y), 3, color.filled()));
        } else {
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    root.present()?;
    Ok(())
}

fn draw_bars(
    out: &mut String,
    title: &str,
    x_label: &str,
    y_label: &str,
    bars: &[(String, f64)],
) -> DrawResult {
    let n = u32::try_from(bars.len()).unwrap_or(u32::MAX).max(1);
    let top = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1.0) * 1.08;
    let root = SVGBackend::with_string(out, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((0..n).into_segmented(), 0.0..top)?;
    let name = |v: &SegmentValue<u32>| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => bars
            .get(*i as usize)
            .map(|b| b.0.clone())
            .unwrap_or_default(),
        SegmentValue::Last => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_desc(x_label)
        .y_desc(y_label)
        .x_labels(bars.len().max(1))
        .x_label_formatter(&name)
        .y_label_formatter(&|v| label(*v, false))
        .draw()?;
    chart.draw_series(
        Histogram::vertical(&chart)
            .style(COLORS[0].filled())
            .margin(8)
            .data(bars.iter().enumerate().map(|(i, b)| (i as u32, b.1))),
    )?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_well_formed_svg() {
        let s = line_chart(
            "t <&>",
            &Axis {
                label: "x".into(),
                log: true,
            },
            &Axis {
                label: "y".into(),
                log: true,
            },
            &[Series {
                name: "a".into(),
                points: vec![(1.0, 10.0), (10.0, 1.0), (0.0, 5.0)],
                dots: true,
            }],
        );
        assert!(s.starts_with("<svg"), "{s}");
        assert!(s.trim_end().ends_with("</svg>"));
        assert!(s.contains("t &lt;&amp;&gt;"), "the title is escaped: {s}");
        assert_eq!(
            s.matches("<circle").count(),
            2 + 1,
            "two points and the legend's mark; non-positive points are left out on log axes"
        );
        let b = bar_chart(
            "b",
            "shard",
            "requests",
            &[("s0".into(), 5.0), ("s1".into(), 10.0)],
        );
        assert!(b.starts_with("<svg") && b.trim_end().ends_with("</svg>"));
        assert!(
            b.contains("\ns0\n") && b.contains("\ns1\n"),
            "bars are labelled: {b}"
        );
    }

    #[test]
    fn empty_charts_still_draw() {
        let s = line_chart(
            "none",
            &Axis {
                label: "x".into(),
                log: false,
            },
            &Axis {
                label: "y".into(),
                log: true,
            },
            &[],
        );
        assert!(
            s.starts_with("<svg") && !s.contains("could not draw"),
            "{s}"
        );
        let b = bar_chart("none", "x", "y", &[]);
        assert!(
            b.starts_with("<svg") && !b.contains("could not draw"),
            "{b}"
        );
    }
}
