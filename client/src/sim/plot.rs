//! Small SVG charts, written by hand so the report needs no plotting library: line
//! charts (linear or log axes) and bar charts.

use std::fmt::Write as _;

const W: f64 = 760.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 160.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

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

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn tv(v: f64, log: bool) -> f64 {
    if log {
        v.max(1e-12).log10()
    } else {
        v
    }
}

fn nice_ticks(lo: f64, hi: f64, log: bool) -> Vec<f64> {
    if log {
        let (a, b) = (lo.floor() as i32, hi.ceil() as i32);
        return (a..=b).map(f64::from).collect();
    }
    let span = (hi - lo).max(1e-9);
    let raw = span / 6.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 7.0)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(t);
        t += step;
    }
    out
}

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

/// A line chart.
pub fn line_chart(title: &str, x: &Axis, y: &Axis, series: &[Series]) -> String {
    let pts = || series.iter().flat_map(|s| s.points.iter());
    let xs: Vec<f64> = pts()
        .map(|p| tv(p.0, x.log))
        .filter(|v| v.is_finite())
        .collect();
    let ys: Vec<f64> = pts()
        .map(|p| tv(p.1, y.log))
        .filter(|v| v.is_finite())
        .collect();
    let (mut x0, mut x1) = bounds(&xs);
    let (mut y0, mut y1) = bounds(&ys);
    if !y.log {
        y0 = y0.min(0.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    if x.log {
        x0 = x0.floor();
        x1 = x1.ceil();
    }
    if y.log {
        y0 = y0.floor();
        y1 = y1.ceil();
    }
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let sx = |v: f64| LEFT + (tv(v, x.log) - x0) / (x1 - x0) * pw;
    let sy = |v: f64| TOP + ph - (tv(v, y.log) - y0) / (y1 - y0) * ph;
    let mut svg = header(title);
    axes(&mut svg, x, y, x0, x1, y0, y1);
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let visible: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|p| (!x.log || p.0 > 0.0) && (!y.log || p.1 > 0.0))
            .map(|p| (sx(p.0), sy(p.1)))
            .collect();
        if s.dots {
            for (px, py) in &visible {
                let _ = write!(
                    svg,
                    r#"<circle cx="{px:.1}" cy="{py:.1}" r="2.5" fill="{color}" fill-opacity="0.7"/>"#
                );
            }
        } else if !visible.is_empty() {
            let path: Vec<String> = visible
                .iter()
                .map(|(a, b)| format!("{a:.1},{b:.1}"))
                .collect();
            let _ = write!(
                svg,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{}"/>"#,
                path.join(" ")
            );
        }
        let ly = TOP + 14.0 + 18.0 * i as f64;
        let lx = W - RIGHT + 12.0;
        let _ = write!(
            svg,
            r#"<rect x="{lx}" y="{}" width="12" height="12" fill="{color}"/><text x="{}" y="{}" font-size="12">{}</text>"#,
            ly - 10.0,
            lx + 16.0,
            ly,
            escape(&s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// A bar chart.
pub fn bar_chart(title: &str, x_label: &str, y_label: &str, bars: &[(String, f64)]) -> String {
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1.0);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let mut svg = header(title);
    let x = Axis {
        label: x_label.to_owned(),
        log: false,
    };
    let y = Axis {
        label: y_label.to_owned(),
        log: false,
    };
    axes_y_only(&mut svg, &x, &y, 0.0, max);
    let n = bars.len().max(1) as f64;
    let slot = pw / n;
    for (i, (name, v)) in bars.iter().enumerate() {
        let h = v / max * ph;
        let bx = LEFT + slot * i as f64 + slot * 0.15;
        let _ = write!(
            svg,
            r#"<rect x="{bx:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
            TOP + ph - h,
            slot * 0.7,
            COLORS[0],
            bx + slot * 0.35,
            TOP + ph + 16.0,
            escape(name),
            bx + slot * 0.35,
            TOP + ph - h - 4.0,
            label(*v, false)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn bounds(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if lo.is_finite() && hi.is_finite() {
        (lo, hi)
    } else {
        (0.0, 1.0)
    }
}

fn header(title: &str) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/><text x="{}" y="22" font-size="15" font-weight="bold" text-anchor="middle">{}</text>"#,
        (W - RIGHT + LEFT) / 2.0,
        escape(title)
    )
}

fn axes(svg: &mut String, x: &Axis, y: &Axis, x0: f64, x1: f64, y0: f64, y1: f64) {
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    for t in nice_ticks(x0, x1, x.log) {
        let px = LEFT + (t - x0) / (x1 - x0) * pw;
        let _ = write!(
            svg,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{}" stroke="#eee"/><text x="{px:.1}" y="{}" font-size="11" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 16.0,
            label(t, x.log)
        );
    }
    axes_y_only(svg, x, y, y0, y1);
}

fn axes_y_only(svg: &mut String, x: &Axis, y: &Axis, y0: f64, y1: f64) {
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    for t in nice_ticks(y0, y1, y.log) {
        let py = TOP + ph - (t - y0) / (y1 - y0) * ph;
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{}" y2="{py:.1}" stroke="#eee"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            py + 4.0,
            label(t, y.log)
        );
    }
    let _ = write!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/><text x="{}" y="{}" font-size="12" text-anchor="middle">{}</text><text x="16" y="{}" font-size="12" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>"##,
        LEFT + pw / 2.0,
        H - 12.0,
        escape(&x.label),
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        escape(&y.label)
    );
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
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("t &lt;&amp;&gt;"));
        assert_eq!(
            s.matches("<circle").count(),
            2,
            "non-positive points are left out on log axes"
        );
        let b = bar_chart(
            "b",
            "shard",
            "requests",
            &[("0".into(), 5.0), ("1".into(), 10.0)],
        );
        // background, frame, two bars
        assert_eq!(b.matches("<rect").count(), 4);
    }
}
