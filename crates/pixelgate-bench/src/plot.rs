//! The plots of `docs/benchmarks.md`, as SVG: throughput and p99 against connections for each
//! workload, and latency distributions (closed loop at each connection count, and fixed rate).
//!
//! Three per placement, each from that placement's runs only: the pinned ones keep the names
//! they had before placements (`throughput.svg`), the shared ones end in `-shared`.

use std::path::Path;

use anyhow::anyhow;
use plotters::{
    coord::{CoordTranslate, Shift},
    prelude::*,
};

use crate::{Placement, Results, Run, servers::Server, tokens::Workload};

const PANEL: (u32, u32) = (420, 340);

fn color(server: Server) -> RGBColor {
    match server {
        Server::Pixelgate => RGBColor(0x1f, 0x77, 0xb4),
        Server::NginxLua => RGBColor(0xd6, 0x27, 0x28),
        Server::EmptyGif => RGBColor(0x7f, 0x7f, 0x7f),
        Server::BareHyper => RGBColor(0x2c, 0xa0, 0x2c),
    }
}

/// Writes `throughput`, `p99` and `latency` `.svg` of every placement measured into `dir`.
pub fn all(results: &Results, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for placement in results.placements() {
        placed(&results.placed(placement), placement, dir)?;
    }
    Ok(())
}

/// The three plots of one placement.
fn placed(results: &Results, placement: Placement, dir: &Path) -> anyhow::Result<()> {
    let file = |name: &str| dir.join(format!("{name}{}.svg", placement.suffix()));
    against_connections(
        results,
        &file("throughput"),
        "requests/s (thousands)",
        |r| r.measured.per_second() / 1000.0,
    )?;
    against_connections(results, &file("p99"), "p99 latency (ms)", |r| {
        r.measured.latency_ms(99.0)
    })?;
    latency(results, &file("latency"))
}

/// One panel per workload: `value` of each server's closed-loop runs against connections.
fn against_connections(
    results: &Results,
    path: &Path,
    y_label: &str,
    value: impl Fn(&Run) -> f64,
) -> anyhow::Result<()> {
    let size = (PANEL.0 * 3, PANEL.1);
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let panels = root.split_evenly((1, 3));
    let connections = results.connections();
    let max = results
        .runs
        .iter()
        .filter(|r| r.fixed_rate.is_none())
        .map(&value)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    for (panel, workload) in panels.iter().zip(Workload::ALL) {
        let mut chart = ChartBuilder::on(panel)
            .caption(workload.name(), ("sans-serif", 18))
            .margin(12)
            .margin_right(28)
            .x_label_area_size(40)
            .y_label_area_size(55)
            // Headroom above the highest point, for the legend.
            .build_cartesian_2d(-0.3f64..(connections.len() as f64 - 0.7), 0.0..max * 1.4)
            .map_err(plot_error)?;
        let labels = connections.clone();
        chart
            .configure_mesh()
            .x_labels(connections.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() > 0.01 || i < 0.0 {
                    return String::new();
                }
                labels.get(i as usize).map_or(String::new(), u32::to_string)
            })
            .x_desc("connections")
            .y_desc(y_label)
            .light_line_style(WHITE)
            .draw()
            .map_err(plot_error)?;
        for server in results.servers() {
            let points: Vec<(f64, f64)> = results
                .closed(server, workload)
                .iter()
                .filter_map(|r| {
                    let x = connections.iter().position(|&c| c == r.connections)? as f64;
                    Some((x, value(r)))
                })
                .collect();
            if points.is_empty() {
                continue;
            }
            let style = color(server).stroke_width(2);
            chart
                .draw_series(LineSeries::new(points.clone(), style))
                .map_err(plot_error)?
                .label(server.name())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color(server).stroke_width(2))
                });
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 3, color(server).filled())),
                )
                .map_err(plot_error)?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    }
    root.present().map_err(plot_error)?;
    Ok(())
}

/// Latency against percentile, on a scale that spreads the tail (90, 99, 99.9 … evenly), one
/// panel per connection count (opens, wrk) and one for the fixed-rate runs.
fn latency(results: &Results, path: &Path) -> anyhow::Result<()> {
    let mut panels_of: Vec<(String, Vec<&Run>)> = Vec::new();
    let connections = results.connections();
    for c in connections {
        let runs = results
            .runs
            .iter()
            .filter(|r| {
                r.workload == Workload::Opens && r.fixed_rate.is_none() && r.connections == c
            })
            .collect();
        panels_of.push((format!("opens, {c} connections (wrk)"), runs));
    }
    let fixed: Vec<&Run> = results
        .runs
        .iter()
        .filter(|r| r.fixed_rate.is_some())
        .collect();
    if !fixed.is_empty() {
        panels_of.push(("opens at half of each peak (fixed rate)".into(), fixed));
    }
    let columns = 2;
    let rows = panels_of.len().div_ceil(columns).max(1);
    let size = (PANEL.0 * columns as u32, PANEL.1 * rows as u32);
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let areas = root.split_evenly((rows, columns));
    for (area, (title, runs)) in areas.iter().zip(&panels_of) {
        distribution(area, title, runs)?;
    }
    root.present().map_err(plot_error)?;
    Ok(())
}

/// `-log10(1 - p)`: 90 % → 1, 99 % → 2, 99.9 % → 3.
fn nines(percentile: f64) -> f64 {
    -(1.0 - percentile / 100.0).log10()
}

fn distribution(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    runs: &[&Run],
) -> anyhow::Result<()> {
    let points = |run: &Run| -> Vec<(f64, f64)> {
        run.measured
            .percentiles
            .iter()
            .filter(|(p, us)| *p < 100.0 && *us > 0)
            .map(|&(p, us)| (nines(p), us as f64 / 1000.0))
            .collect()
    };
    let all: Vec<f64> = runs
        .iter()
        .flat_map(|r| points(r))
        .map(|(_, y)| y)
        .collect();
    let low = all.iter().copied().fold(f64::INFINITY, f64::min).min(0.1);
    let high = all.iter().copied().fold(0.0, f64::max).max(1.0);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .margin_right(28)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0f64..5.0, (low * 0.8..high * 1.25).log_scale())
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_labels(6)
        .x_label_formatter(&|x| {
            let p = 100.0 - 100.0 * 10f64.powf(-x);
            format!("{p:.3}")
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_owned()
        })
        .y_label_formatter(&|y| format!("{y}"))
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .light_line_style(WHITE)
        .draw()
        .map_err(plot_error)?;
    for run in runs {
        let server = run.server;
        let label = match run.fixed_rate {
            Some(rate) => format!(
                "{} at {}/s",
                server.name(),
                pixelgate_tests::thousands(rate)
            ),
            None => server.name().to_owned(),
        };
        chart
            .draw_series(LineSeries::new(points(run), color(server).stroke_width(2)))
            .map_err(plot_error)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color(server).stroke_width(2))
            });
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)
}

/// The series' names in a box.
fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(plot_error)
}

fn plot_error<E: std::error::Error + Send + Sync + 'static>(
    e: DrawingAreaErrorKind<E>,
) -> anyhow::Error {
    anyhow!("plot: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_spread_the_tail() {
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
    }
}
