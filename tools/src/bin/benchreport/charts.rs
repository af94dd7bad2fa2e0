//! The SVG charts (plotters).

use crate::*;
use plotters::prelude::*;

pub(crate) fn plot_err(e: impl std::fmt::Display) -> String {
    format!("chart: {e}")
}

/// (SDU size, SDUs/s) points of one system.
type Points = Vec<(f64, f64)>;

/// Receiver SDUs/s by SDU size for raw, iperf3 UDP and ethflow (log-log).
pub(crate) fn throughput_chart(r: &Value, path: &Path) -> Result<(), String> {
    let series = |sys: &str| -> Points {
        let mut pts = Vec::new();
        for (mtu, size) in [
            ("1500", "64"),
            ("1500", "512"),
            ("1500", "1400"),
            ("9000", "8900"),
        ] {
            if let Some(v) = num(r, &[sys, mtu, size, "sdus_per_s"]).filter(|v| *v > 0.0) {
                pts.push((size.parse().expect("size"), v));
            }
        }
        pts
    };
    let all: Vec<(&str, Points, RGBColor)> = vec![
        ("raw AF_PACKET (best mode)", series("raw"), BLACK),
        ("iperf3 UDP", series("iperf3_udp"), RED),
        ("ethflow operf, backend raw", series("operf"), BLUE),
        ("ethflow operf, backend xdp", series("operf_xdp"), GREEN),
    ];
    let max = all
        .iter()
        .flat_map(|(_, p, _)| p.iter().map(|x| x.1))
        .fold(1e3, f64::max);
    let min = all
        .iter()
        .flat_map(|(_, p, _)| p.iter().map(|x| x.1))
        .fold(max, f64::min);
    let root = SVGBackend::new(path, (760, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Throughput by SDU size (receiver, MTU 1500; 8900 B at MTU 9000)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (48f64..12000f64).log_scale(),
            ((min / 2.0)..(max * 2.0)).log_scale(),
        )
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("SDU size (bytes)")
        .y_desc("SDUs/s")
        .y_label_formatter(&|v| format!("{:.0}k", v / 1e3))
        .draw()
        .map_err(plot_err)?;
    for (label, pts, color) in all {
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(plot_err)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))
            .map_err(plot_err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)
}

/// RTT distribution (CDF) of each round-trip measurement.
pub(crate) fn rtt_chart(r: &Value, path: &Path) -> Result<(), String> {
    let colors = [BLACK, RED, BLUE, GREEN, MAGENTA];
    let runs: Vec<(String, Vec<f64>)> = r["rtt"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let pct = v["percentiles_us"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_f64)
                .filter(|x| *x > 0.0)
                .collect();
            (k.clone(), pct)
        })
        .filter(|(_, p): &(String, Vec<f64>)| p.len() > 1)
        .collect();
    let hi = runs
        .iter()
        .flat_map(|(_, p)| p.iter().copied())
        .fold(10.0, f64::max);
    let lo = runs
        .iter()
        .flat_map(|(_, p)| p.iter().copied())
        .fold(hi, f64::min);
    let root = SVGBackend::new(path, (760, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Round-trip time distribution, 64 B", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(((lo * 0.8)..(hi * 1.2)).log_scale(), 0f64..100f64)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("RTT (µs)")
        .y_desc("percentile")
        .draw()
        .map_err(plot_err)?;
    for (i, (label, pct)) in runs.into_iter().enumerate() {
        let color = colors[i % colors.len()];
        let n = pct.len() - 1;
        let pts: Vec<(f64, f64)> = pct
            .into_iter()
            .enumerate()
            .map(|(j, x)| (x, 100.0 * j as f64 / n as f64))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(plot_err)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)
}
