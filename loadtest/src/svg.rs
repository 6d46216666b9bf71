//! Line charts as standalone SVG: what the simulator and the scenarios write next to
//! their JSON reports, readable in a browser and in docs/ without a plotting stack.

use std::fmt::Write;

const W: f64 = 720.0;
const H: f64 = 360.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A round step for about five ticks over `span`.
fn step(span: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn label(v: f64) -> String {
    // A tick computed as -0.0 prints as "-0".
    let v = if v == 0.0 { 0.0 } else { v };
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A chart of `lines` over a shared x axis; y starts at 0.
pub fn chart(title: &str, x_label: &str, y_label: &str, lines: &[Line]) -> String {
    chart_marked(title, x_label, y_label, lines, &[])
}

/// [`chart`] with dashed vertical lines at `marks` (x, label): a kill, a drop.
pub fn chart_marked(title: &str, x_label: &str, y_label: &str, lines: &[Line], marks: &[(f64, String)]) -> String {
    let pts = || lines.iter().flat_map(|l| l.points.iter());
    let (x0, x1) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (x0, x1) = if x0.is_finite() && x1 > x0 { (x0, x1) } else { (0.0, 1.0) };
    let y1 = pts().map(|p| p.1).fold(0.0f64, f64::max);
    let y1 = if y1 > 0.0 { y1 * 1.05 } else { 1.0 };
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| TOP + ph - y / y1 * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"12\">\
         <rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>",
        W / 2.0,
        esc(title)
    );
    let ys = step(y1);
    let mut y = 0.0;
    while y <= y1 {
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" x2=\"{0}\" y1=\"{1:.1}\" y2=\"{1:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{2}\" y=\"{3:.1}\" text-anchor=\"end\">{4}</text>",
            W - RIGHT,
            sy(y),
            LEFT - 6.0,
            sy(y) + 4.0,
            label(y)
        );
        y += ys;
    }
    let xs = step(x1 - x0);
    let mut x = (x0 / xs).ceil() * xs;
    while x <= x1 {
        let _ = write!(
            s,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1}\" y2=\"{2}\" stroke=\"#888\"/>\
             <text x=\"{0:.1}\" y=\"{3}\" text-anchor=\"middle\">{4}</text>",
            sx(x),
            TOP + ph,
            TOP + ph + 5.0,
            TOP + ph + 18.0,
            label(x)
        );
        x += xs;
    }
    let _ = write!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\
         <text transform=\"translate(16 {}) rotate(-90)\" text-anchor=\"middle\">{}</text>\
         <rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#888\"/>",
        LEFT + pw / 2.0,
        H - 10.0,
        esc(x_label),
        TOP + ph / 2.0,
        esc(y_label)
    );
    for (i, (x, what)) in marks.iter().filter(|(x, _)| (x0..=x1).contains(x)).enumerate() {
        // Labels step down so neighbouring marks stay readable.
        let _ = write!(
            s,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{TOP}\" y2=\"{1}\" stroke=\"#555\" stroke-dasharray=\"4 3\"/>\
             <text x=\"{2:.1}\" y=\"{3:.1}\" font-size=\"10\" fill=\"#555\">{4}</text>",
            sx(*x),
            TOP + ph,
            sx(*x) + 3.0,
            TOP + ph - 6.0 - 12.0 * (i % 4) as f64,
            esc(what)
        );
    }
    for (i, l) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = l.points.iter().map(|p| format!("{:.1},{:.1}", sx(p.0), sy(p.1))).collect();
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>\
             <rect x=\"{}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{color}\"/>\
             <text x=\"{}\" y=\"{}\">{}</text>",
            path.join(" "),
            LEFT + 10.0,
            TOP + 8.0 + 16.0 * i as f64,
            LEFT + 24.0,
            TOP + 17.0 + 16.0 * i as f64,
            esc(&l.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_chart_has_every_line_and_its_labels() {
        let lines = [
            super::Line { name: "a<b".into(), points: vec![(0.0, 1.0), (10.0, 3.0)] },
            super::Line { name: "c".into(), points: vec![(0.0, 2.0)] },
        ];
        let svg = super::chart("T", "x", "y", &lines);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("a&lt;b") && svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains(">10<"), "an x tick at 10");
        let marked = super::chart_marked("T", "x", "y", &lines, &[(5.0, "kill".into()), (50.0, "outside".into())]);
        assert_eq!(marked.matches("stroke-dasharray").count(), 1, "marks outside the x range are left out");
        assert!(marked.contains(">kill<"));
    }
}
