//! The report's plots, as SVG files beside the JSON result, and an HTML page that shows them
//! with the figures: latency percentiles over time, latency against group size, throughput.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::progress::millis;
use crate::report::Report;
use crate::stats::{Latencies, Sample};

/// Windows the run's time is cut into for the percentiles over time.
const WINDOWS: u64 = 60;

/// Operations of every scenario's set-up (building its group): over time they are drawn only
/// when the run did nothing else.
const SET_UP: [&str; 3] = ["build", "build.processed", "claim"];

const COLOURS: [RGBColor; 12] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
    RGBColor(174, 199, 232),
];

/// One line of a plot.
struct Line {
    label: String,
    points: Vec<(f64, f64)>,
}

/// Writes the plots of a report and `report.html` into `dir`; returns the files written.
pub fn write(dir: &Path, report: &Report) -> anyhow::Result<Vec<PathBuf>> {
    let measured = &report.outcome.measured;
    let mut written = Vec::new();
    let sampled: Vec<&str> = measured
        .operations()
        .filter(|op| !measured.samples(op).is_empty())
        .collect();
    let measured_phase: Vec<&str> = sampled
        .iter()
        .copied()
        .filter(|op| !SET_UP.contains(op))
        .collect();
    let operations = if measured_phase.is_empty() {
        sampled.clone()
    } else {
        measured_phase
    };
    let end_ms = operations
        .iter()
        .flat_map(|op| measured.samples(op))
        .map(|s| s.at_ms)
        .max()
        .unwrap_or(0);
    let first_ms = operations
        .iter()
        .flat_map(|op| measured.samples(op))
        .map(|s| s.at_ms)
        .min()
        .unwrap_or(0);
    let window = ((end_ms - first_ms) / WINDOWS).max(1000);

    let mut over_time = Vec::new();
    let mut throughput = Vec::new();
    for op in &operations {
        let windows = windowed(measured.samples(op), first_ms, window);
        let at = |w: &u64| (first_ms + w * window) as f64 / 1000.0;
        for (quantile, name) in [(0.5, "p50"), (0.99, "p99")] {
            over_time.push(Line {
                label: format!("{op} {name}"),
                points: windows
                    .iter()
                    .map(|(w, l)| (at(w), l.summary_at(quantile) as f64 / 1000.0))
                    .collect(),
            });
        }
        throughput.push(Line {
            label: op.to_string(),
            points: windows
                .iter()
                .map(|(w, l)| (at(w), l.summary().count as f64 * 1000.0 / window as f64))
                .collect(),
        });
    }
    let path = dir.join("latency-over-time.svg");
    chart(
        &path,
        "Latency over time (p50, p99)",
        "seconds into the run",
        "ms",
        &over_time,
        true,
    )?;
    written.push(path);
    let path = dir.join("throughput.svg");
    chart(
        &path,
        "Throughput",
        "seconds into the run",
        "operations per second",
        &throughput,
        true,
    )?;
    written.push(path);

    // Latency against group size: where the size changed during the run (building a group).
    // Claims are left out: the KeyPackage directory does not depend on the group.
    let by_size: Vec<Line> = sampled
        .iter()
        .filter(|op| **op != "claim")
        .filter(|op| {
            let samples = measured.samples(op);
            samples.first().map(|s| s.size) != samples.last().map(|s| s.size)
        })
        .map(|op| Line {
            label: op.to_string(),
            points: measured
                .samples(op)
                .iter()
                .map(|s| (s.size as f64, s.took_us as f64 / 1000.0))
                .collect(),
        })
        .collect();
    if !by_size.is_empty() {
        let path = dir.join("latency-by-size.svg");
        // Points only: the claims of one commit share its size.
        chart(
            &path,
            "Latency against group size",
            "members",
            "ms",
            &by_size,
            false,
        )?;
        written.push(path);
    }

    let path = dir.join("report.html");
    std::fs::write(&path, html(report, &written))?;
    written.push(path);
    Ok(written)
}

/// Samples cut into windows of `window` ms from `first_ms`, each window's latencies.
fn windowed(samples: &[Sample], first_ms: u64, window: u64) -> Vec<(u64, Latencies)> {
    let mut windows: std::collections::BTreeMap<u64, Latencies> = Default::default();
    for s in samples {
        windows
            .entry((s.at_ms - first_ms.min(s.at_ms)) / window)
            .or_default()
            .record(std::time::Duration::from_micros(s.took_us));
    }
    windows.into_iter().collect()
}

/// Draws `lines` as points, `joined` by lines or not.
fn chart(
    path: &Path,
    title: &str,
    x: &str,
    y: &str,
    lines: &[Line],
    joined: bool,
) -> anyhow::Result<()> {
    let points = lines.iter().flat_map(|l| &l.points);
    let x_min = points.clone().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let x_max = points.clone().map(|p| p.0).fold(1.0, f64::max);
    let x_min = if x_min.is_finite() { x_min * 0.95 } else { 0.0 };
    let x_max = x_max * 1.05;
    let y_max = points.map(|p| p.1).fold(1e-3, f64::max) * 1.1;
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x_min..x_max, 0.0..y_max)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc(x)
        .y_desc(y)
        .draw()
        .map_err(plot_error)?;
    for (i, line) in lines.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path = if joined { &line.points[..] } else { &[] };
        chart
            .draw_series(LineSeries::new(
                path.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(plot_error)?
            .label(&line.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        chart
            .draw_series(
                line.points
                    .iter()
                    .map(|p| Circle::new(*p, 2, colour.filled())),
            )
            .map_err(plot_error)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

fn plot_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing a plot: {e}")
}

/// The report page: the figures as a table, each threshold's verdict, the plots.
fn html(report: &Report, plots: &[PathBuf]) -> String {
    let mut page = String::from(
        "<!doctype html><meta charset=utf-8><title>mlschat-loadtest report</title>\
         <style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 10px;text-align:right}\
         th:first-child,td:first-child{text-align:left}.fail{color:#b00}</style>\n",
    );
    let scenario = serde_json::to_string(&report.scenario).unwrap_or_default();
    let _ = writeln!(
        page,
        "<h1>mlschat-loadtest</h1><p><code>{}</code></p>",
        escape(&scenario)
    );
    page.push_str(
        "<table><tr><th>operation</th><th>count</th><th>errors</th><th>p50</th><th>p90</th>\
         <th>p99</th><th>p99.9</th><th>max</th></tr>\n",
    );
    for (op, s) in &report.operations {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(op),
            s.count,
            s.error_count(),
            millis(s.p50_us),
            millis(s.p90_us),
            millis(s.p99_us),
            millis(s.p999_us),
            millis(s.max_us)
        );
    }
    page.push_str("</table>\n<ul>\n");
    for t in &report.thresholds {
        let class = if t.verdict == "pass" {
            ""
        } else {
            " class=fail"
        };
        let _ = writeln!(page, "<li{class}>{} : {}</li>", escape(&t.rule), t.verdict);
    }
    page.push_str("</ul>\n");
    for plot in plots {
        if let Some(name) = plot.file_name().and_then(|n| n.to_str()) {
            let _ = writeln!(page, "<p><img src=\"{}\"></p>", escape(name));
        }
    }
    page
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Latencies {
    /// The latency at `quantile`, in microseconds.
    fn summary_at(&self, quantile: f64) -> u64 {
        let s = self.summary();
        s.percentile(quantile).unwrap_or(s.max_us)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::scenario::Scenario;
    use crate::stats::Measurements;

    #[test]
    fn a_report_is_drawn() {
        let dir = tempfile::tempdir().unwrap();
        let mut measured = Measurements::default();
        for i in 0..200u64 {
            let at = Duration::from_millis(i * 50);
            measured.record("add", at, Duration::from_millis(10 + i), 10 + i * 100);
            measured.record("message", at, Duration::from_millis(2), 1000);
        }
        let scenario = Scenario::parse("kind = \"join\"\nmembers = 100\njoins = 2\n", &[]).unwrap();
        let outcome = crate::runner::Outcome {
            measured,
            ..Default::default()
        };
        let report = Report::new(scenario, outcome, &["add.p99<1s".parse().unwrap()]);
        let written = write(dir.path(), &report).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "latency-over-time.svg",
                "throughput.svg",
                "latency-by-size.svg",
                "report.html"
            ]
        );
        let svg = std::fs::read_to_string(dir.path().join("latency-by-size.svg")).unwrap();
        assert!(
            svg.contains("<svg") && svg.contains("add"),
            "{}",
            &svg[..200]
        );
        let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
        assert!(html.contains("add.p99&lt;1000ms : pass"), "{html}");
    }
}
