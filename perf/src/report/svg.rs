//! `--plot FILE.svg`: a hand-written SVG (no plotting dependency) with two panels — the latency
//! percentile curve of reads and writes (x: percentile on a log "nines" axis, as HdrHistogram
//! plots do; y: latency) and the IOPS of every second (total and per core, ramp shaded).

use crate::engine::RunResult;
use crate::stats::DirStats;
use crate::workload::WorkloadSpec;
use std::fmt::Write;

const W: f64 = 900.0;
const H: f64 = 760.0;
/// Plot area margins.
const LEFT: f64 = 90.0;
const RIGHT: f64 = 30.0;
/// Vertical extent of the two panels: (top, bottom).
const PANEL1: (f64, f64) = (70.0, 350.0);
const PANEL2: (f64, f64) = (440.0, 700.0);
/// Deepest percentile plotted: 99.999% (five nines).
const MAX_NINES: f64 = 5.0;
const READ_COLOR: &str = "#1f77b4";
const WRITE_COLOR: &str = "#ff7f0e";
const CORE_COLORS: [&str; 6] = [
    "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
];

/// Render the plot.
pub fn render(spec: &WorkloadSpec, res: &RunResult) -> String {
    let total = res.total();
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="28" text-anchor="middle" font-size="16" font-weight="bold">{}</text>
"#,
        W / 2.0,
        esc(&format!(
            "keel-perf {} {} B QD {} × {} core(s) — {}",
            spec.pattern,
            spec.io_size,
            spec.queue_depth,
            res.jobs.len(),
            res.target
        ))
    );
    latency_panel(&mut s, &total.read, &total.write);
    iops_panel(&mut s, res, spec.ramp_time);
    s.push_str("</svg>\n");
    s
}

/// A "nice" axis maximum (1, 2 or 5 × 10^k) at or above `v`.
pub fn nice_ceil(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= v * (1.0 - 1e-12) {
            return m * p;
        }
    }
    10.0 * p
}

/// `v` with a K/M/G suffix.
fn si(v: f64) -> String {
    let (d, suffix) = match v.abs() {
        x if x >= 1e9 => (1e9, "G"),
        x if x >= 1e6 => (1e6, "M"),
        x if x >= 1e3 => (1e3, "K"),
        _ => (1.0, ""),
    };
    let x = v / d;
    if (x - x.round()).abs() < 1e-9 {
        format!("{}{suffix}", x.round())
    } else {
        format!("{x:.1}{suffix}")
    }
}

/// A latency in µs as `100ns`, `1µs`, `10ms`, `1s`.
fn si_us(us: f64) -> String {
    match us {
        x if x >= 1e6 => format!("{}s", x / 1e6),
        x if x >= 1e3 => format!("{}ms", x / 1e3),
        x if x >= 1.0 => format!("{x}µs"),
        x => format!("{}ns", (x * 1e3).round()),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Frame, title, and horizontal grid lines at `ticks` (y coordinate, label) for a panel
/// spanning `y0..y1`.
fn frame(s: &mut String, (y0, y1): (f64, f64), title: &str, ylabel: &str, ticks: &[(f64, String)]) {
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="{}" font-size="14" font-weight="bold">{}</text>"#,
        y0 - 12.0,
        esc(title)
    );
    for (y, label) in ticks {
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            esc(label)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{y0}" width="{}" height="{}" fill="none" stroke="#333"/>"##,
        W - LEFT - RIGHT,
        y1 - y0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(22,{}) rotate(-90)" text-anchor="middle">{}</text>"#,
        (y0 + y1) / 2.0,
        esc(ylabel)
    );
}

fn polyline(s: &mut String, pts: &[(f64, f64)], color: &str, width: f64) {
    if pts.is_empty() {
        return;
    }
    s.push_str("<polyline fill=\"none\" stroke-linejoin=\"round\" points=\"");
    for (x, y) in pts {
        let _ = write!(s, "{x:.1},{y:.1} ");
    }
    let _ = writeln!(s, "\" stroke=\"{color}\" stroke-width=\"{width}\"/>");
}

fn legend(s: &mut String, x: f64, y: f64, items: &[(&str, String)]) {
    for (i, (color, label)) in items.iter().enumerate() {
        let yy = y + 16.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{x}" y1="{yy}" x2="{}" y2="{yy}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            x + 20.0,
            x + 26.0,
            yy + 4.0,
            esc(label)
        );
    }
}

fn latency_panel(s: &mut String, read: &DirStats, write: &DirStats) {
    let dirs: Vec<(&DirStats, &str, &str)> =
        [(read, READ_COLOR, "read"), (write, WRITE_COLOR, "write")]
            .into_iter()
            .filter(|(d, ..)| d.ios > 0)
            .collect();
    // Plot as deep as the samples support (1 in 10^k needs 10^k samples), at most 5 nines.
    let nines = dirs
        .iter()
        .map(|(d, ..)| (d.ios as f64).log10().floor())
        .fold(2.0f64, f64::max)
        .min(MAX_NINES);
    // Log y axis over whole decades of µs: tails span orders of magnitude.
    let max_us = dirs
        .iter()
        .map(|(d, ..)| d.hist.value_at_quantile(1.0 - 10f64.powf(-nines)) as f64 / 1000.0)
        .fold(0.0, f64::max);
    let min_us = dirs
        .iter()
        .map(|(d, ..)| d.min_ns() as f64 / 1000.0)
        .fold(f64::INFINITY, f64::min);
    let lo = if min_us.is_finite() && min_us > 0.0 {
        min_us.log10().floor().max(-3.0)
    } else {
        0.0
    };
    let hi = if max_us > 0.0 {
        max_us.log10().ceil().max(lo + 1.0)
    } else {
        lo + 1.0
    };
    let (y0, y1) = PANEL1;
    let y_of = |us: f64| {
        let l = us.max(10f64.powf(lo)).log10();
        y1 - (y1 - y0) * ((l - lo) / (hi - lo)).min(1.0)
    };
    let ticks: Vec<(f64, String)> = (lo as i32..=hi as i32)
        .map(|e| (y_of(10f64.powi(e)), si_us(10f64.powi(e))))
        .collect();
    frame(
        s,
        PANEL1,
        "Latency by percentile",
        "latency (log scale)",
        &ticks,
    );
    let xw = W - LEFT - RIGHT;
    for k in 0..=nines as u32 {
        let x = LEFT + xw * f64::from(k) / nines;
        let label = match k {
            0 => "0%".to_string(),
            1 => "90%".to_string(),
            2 => "99%".to_string(),
            _ => format!("99.{}%", "9".repeat(k as usize - 2)),
        };
        let _ = writeln!(
            s,
            r##"<line x1="{x}" y1="{y0}" x2="{x}" y2="{y1}" stroke="#ddd"/><text x="{x}" y="{}" text-anchor="middle">{label}</text>"##,
            y1 + 16.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile (log scale of 1/(1−p))</text>"#,
        LEFT + xw / 2.0,
        y1 + 34.0
    );
    let mut items = Vec::new();
    for (d, color, name) in &dirs {
        let steps = (nines * 40.0) as u32;
        let pts: Vec<(f64, f64)> = (0..=steps)
            .map(|i| {
                let n = nines * f64::from(i) / f64::from(steps);
                let q = 1.0 - 10f64.powf(-n);
                let us = d.hist.value_at_quantile(q) as f64 / 1000.0;
                (LEFT + xw * n / nines, y_of(us))
            })
            .collect();
        polyline(s, &pts, color, 2.0);
        items.push((
            *color,
            format!(
                "{name}: p50 {:.1} µs, p99 {:.1} µs",
                d.percentile_ns(50.0) as f64 / 1000.0,
                d.percentile_ns(99.0) as f64 / 1000.0
            ),
        ));
    }
    if items.is_empty() {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">no I/O completed</text>"#,
            W / 2.0,
            (y0 + y1) / 2.0
        );
    }
    legend(s, LEFT + 12.0, y0 + 18.0, &items);
}

fn iops_panel(s: &mut String, res: &RunResult, ramp: std::time::Duration) {
    let tl = &res.timeline;
    let tmax = tl.last().map_or(1.0, |x| x.t.ceil().max(1.0));
    let ymax = nice_ceil(tl.iter().map(|x| x.iops).fold(0.0, f64::max));
    let ticks: Vec<(f64, String)> = (0..=5)
        .map(|i| {
            let y = PANEL2.1 - (PANEL2.1 - PANEL2.0) * f64::from(i) / 5.0;
            (y, si(ymax * f64::from(i) / 5.0))
        })
        .collect();
    frame(s, PANEL2, "IOPS per second", "IOPS", &ticks);
    let (y0, y1) = PANEL2;
    let xw = W - LEFT - RIGHT;
    let x_of = |t: f64| LEFT + xw * t / tmax;
    let y_of = |v: f64| y1 - (y1 - y0) * (v / ymax).min(1.0);
    let ramp_end = ramp.as_secs_f64().min(tmax);
    if ramp_end > 0.0 {
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{y0}" width="{}" height="{}" fill="#eee"/><text x="{}" y="{}">ramp</text>"##,
            x_of(ramp_end) - LEFT,
            y1 - y0,
            LEFT + 4.0,
            y1 - 6.0
        );
    }
    let step = nice_ceil(tmax / 10.0);
    let mut t = 0.0;
    while t <= tmax + 1e-9 {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            x_of(t),
            y1 + 16.0,
            si(t)
        );
        t += step;
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">seconds since start</text>"#,
        LEFT + xw / 2.0,
        y1 + 34.0
    );
    let mut items = Vec::new();
    let cores = res.jobs.len();
    if cores > 1 {
        for c in 0..cores {
            let color = CORE_COLORS[c % CORE_COLORS.len()];
            let pts: Vec<(f64, f64)> = tl
                .iter()
                .filter_map(|x| x.per_core_iops.get(c).map(|&v| (x_of(x.t), y_of(v))))
                .collect();
            polyline(s, &pts, color, 1.0);
            let core = res.jobs.get(c).map_or(c as u32, |j| j.core);
            items.push((color, format!("core {core}")));
        }
    }
    let pts: Vec<(f64, f64)> = tl.iter().map(|x| (x_of(x.t), y_of(x.iops))).collect();
    polyline(s, &pts, "#000", 2.0);
    for (x, y) in &pts {
        let _ = writeln!(
            s,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="2.5" fill="#000"/>"##
        );
    }
    items.insert(0, ("#000", "total".to_string()));
    legend(s, W - RIGHT - 130.0, y0 + 18.0, &items);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceil_rounds_up_to_1_2_5() {
        assert_eq!(nice_ceil(0.0), 1.0);
        assert_eq!(nice_ceil(3.0), 5.0);
        assert_eq!(nice_ceil(5.0), 5.0);
        assert_eq!(nice_ceil(12.0), 20.0);
        assert_eq!(nice_ceil(4_100_000.0), 5_000_000.0);
        assert_eq!(nice_ceil(0.03), 0.05);
    }

    #[test]
    fn si_labels() {
        assert_eq!(si(0.0), "0");
        assert_eq!(si(1500.0), "1.5K");
        assert_eq!(si(2_000_000.0), "2M");
        assert_eq!(si_us(0.1), "100ns");
        assert_eq!(si_us(10.0), "10µs");
        assert_eq!(si_us(1000.0), "1ms");
    }

    #[test]
    fn plot_is_well_formed_svg() {
        use crate::engine::{RunResult, Sample};
        use crate::stats::JobStats;
        use crate::workload::Pattern;
        let mut j = JobStats::new(0);
        for i in 0..50_000u64 {
            j.read.record(1_000 + i % 7_000, 4096);
        }
        j.runtime_ns = 1_000_000_000;
        let res = RunResult {
            target: "bdev <x> & y".into(),
            jobs: vec![j],
            timeline: (1..=3)
                .map(|t| Sample {
                    t: f64::from(t),
                    ramp: t == 1,
                    per_core_iops: vec![1000.0],
                    iops: 1000.0,
                    mib_s: 4.0,
                    avg_lat_us: 1.0,
                })
                .collect(),
        };
        let mut spec = WorkloadSpec::new(Pattern::RandRead);
        spec.ramp_time = std::time::Duration::from_secs(1);
        let svg = render(&spec, &res);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("&lt;x&gt; &amp; y"), "text is escaped");
        assert_eq!(
            svg.matches("<polyline").count(),
            2,
            "read curve + IOPS line"
        );
        assert!(svg.contains("99.99%"));
        assert!(svg.contains(">ramp<"));
        // Balanced tags: every opened element is closed or self-closed.
        let opens = svg.matches('<').count();
        assert_eq!(
            opens,
            2 * svg.matches("</").count() + svg.matches("/>").count()
        );
    }
}
