//! A server's graphs page (`/servers/{id}/graphs?range=hour|day|week|year`):
//! CPU, memory, disk use, disk I/O, network traffic and HTTP requests per
//! second as SVG charts drawn here, on the server — no script, nothing
//! loaded from elsewhere. The series come from `services::analytics`,
//! which authorises as the server page does.

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::Router;
use minijinja::value::Serde;
use minijinja::{context, Value};
use serde::{Deserialize, Serialize};

use super::kit::{page, signed_in, UiResult};
use crate::http::{AppState, Auth};
use crate::services::analytics::{self, Point, Range};

pub fn router() -> Router<AppState> {
    Router::new().route("/servers/{id}/graphs", get(graphs))
}

#[derive(Deserialize)]
struct RangeQuery {
    range: Option<String>,
}

async fn graphs(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Query(q): Query<RangeQuery>,
) -> UiResult {
    let a = signed_in(a)?;
    let range = match q.range.as_deref() {
        Some(r) => Range::parse(r)?,
        None => Range::default(),
    };
    let (service, series) =
        analytics::server_series(&st.db, &a.principal, id, range, st.db.now()).await?;
    let graphs: Vec<Graph> = charts()
        .iter()
        .map(|c| Graph::draw(c, &series.points, series.from, series.to))
        .collect();
    page(
        &a,
        "graphs.html",
        context! {
            service_id => id,
            hostname => service.hostname.unwrap_or_else(|| format!("server {id}")),
            range => range.as_str(),
            ranges => Range::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            from => series.from,
            to => series.to,
            resolution_secs => series.resolution_secs,
            points => series.points.len(),
            graphs => Value::from(Serde(&graphs)),
        },
    )
}

/// How a figure is shown.
#[derive(Clone, Copy)]
enum Unit {
    Percent,
    Bytes,
    BytesPerSec,
    PerSec,
}

impl Unit {
    fn format(self, v: f64) -> String {
        match self {
            Unit::Percent => format!("{v:.0} %"),
            Unit::Bytes => bytes(v),
            Unit::BytesPerSec => format!("{}/s", bytes(v)),
            Unit::PerSec => {
                if v >= 10.0 || v == 0.0 {
                    format!("{v:.0}/s")
                } else {
                    format!("{v:.2}/s")
                }
            }
        }
    }
}

fn bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = v;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 || v >= 10.0 {
        format!("{v:.0} {}", UNITS[i])
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// Reads one figure of a point.
type Field = fn(&Point) -> Option<f64>;

/// One chart: which fields it draws and how its y axis ends.
struct Chart {
    id: &'static str,
    title: &'static str,
    unit: Unit,
    lines: Vec<(&'static str, Field)>,
    /// The top of the y axis: a fixed value, or the largest of this field
    /// (a total), else the largest value drawn.
    top: Top,
}

enum Top {
    Fixed(f64),
    Field(Field),
    Data,
}

fn charts() -> [Chart; 6] {
    [
        Chart {
            id: "cpu",
            title: "CPU",
            unit: Unit::Percent,
            lines: vec![("used", (|p: &Point| p.cpu_pct) as Field)],
            top: Top::Fixed(100.0),
        },
        Chart {
            id: "memory",
            title: "Memory",
            unit: Unit::Bytes,
            lines: vec![("used", (|p: &Point| p.mem_used) as Field)],
            top: Top::Field(|p| p.mem_total),
        },
        Chart {
            id: "disk",
            title: "Disk use (/)",
            unit: Unit::Bytes,
            lines: vec![("used", (|p: &Point| p.disk_used) as Field)],
            top: Top::Field(|p| p.disk_total),
        },
        Chart {
            id: "network",
            title: "Network traffic",
            unit: Unit::BytesPerSec,
            lines: vec![
                ("received", (|p: &Point| p.net_rx_bps) as Field),
                ("sent", (|p: &Point| p.net_tx_bps) as Field),
            ],
            top: Top::Data,
        },
        Chart {
            id: "http",
            title: "HTTP requests",
            unit: Unit::PerSec,
            lines: vec![("requests", (|p: &Point| p.http_rps) as Field)],
            top: Top::Data,
        },
        Chart {
            id: "diskio",
            title: "Disk I/O",
            unit: Unit::BytesPerSec,
            lines: vec![
                ("read", (|p: &Point| p.disk_read_bps) as Field),
                ("written", (|p: &Point| p.disk_write_bps) as Field),
            ],
            top: Top::Data,
        },
    ]
}

/// A drawn chart, as the template shows it.
#[derive(Serialize)]
struct Graph {
    id: &'static str,
    title: &'static str,
    legend: Vec<&'static str>,
    /// Points drawn in the first line (0: the chart says "no figures").
    points: usize,
    latest: Option<String>,
    /// The `<svg>` element; only numbers and fixed words go into it, so
    /// the template shows it unescaped.
    svg: String,
}

const W: f64 = 720.0;
const H: f64 = 180.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 24.0;

impl Graph {
    fn draw(c: &Chart, points: &[Point], from: i64, to: i64) -> Graph {
        let values: Vec<Vec<(i64, f64)>> = c
            .lines
            .iter()
            .map(|(_, f)| {
                points
                    .iter()
                    .filter_map(|p| Some((p.at, f(p).filter(|v| v.is_finite())?)))
                    .collect()
            })
            .collect();
        let data_max = values
            .iter()
            .flatten()
            .map(|(_, v)| *v)
            .fold(0.0f64, f64::max);
        let top = match c.top {
            Top::Fixed(v) => v,
            Top::Field(f) => points
                .iter()
                .filter_map(f)
                .fold(0.0f64, f64::max)
                .max(data_max),
            Top::Data => data_max,
        };
        let top = if top > 0.0 { top * 1.05 } else { 1.0 };
        let span = (to - from).max(1) as f64;
        let x = |at: i64| LEFT + (at - from) as f64 / span * (W - LEFT - RIGHT);
        let y = |v: f64| TOP + (1.0 - (v / top).clamp(0.0, 1.0)) * (H - TOP - BOTTOM);
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">",
            c.title
        );
        for i in 0..=4 {
            let v = top * f64::from(i) / 4.0;
            let gy = y(v);
            svg.push_str(&format!(
                "<line class=\"grid\" x1=\"{LEFT}\" y1=\"{gy:.1}\" x2=\"{:.1}\" y2=\"{gy:.1}\"/>\
                 <text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                W - RIGHT,
                LEFT - 6.0,
                gy + 4.0,
                c.unit.format(v)
            ));
        }
        for (i, at) in [from, from + (to - from) / 2, to].into_iter().enumerate() {
            let anchor = ["start", "middle", "end"][i];
            let label = chrono::DateTime::from_timestamp_millis(at)
                .map(|t| t.format("%m-%d %H:%M").to_string())
                .unwrap_or_default();
            svg.push_str(&format!(
                "<text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{label} UTC</text>",
                x(at),
                H - 6.0
            ));
        }
        for (i, line) in values.iter().enumerate() {
            if line.is_empty() {
                continue;
            }
            let pts: Vec<String> = line
                .iter()
                .map(|(at, v)| format!("{:.1},{:.1}", x(*at), y(*v)))
                .collect();
            svg.push_str(&format!(
                "<polyline class=\"series s{i}\" data-series=\"{}\" points=\"{}\"/>",
                c.lines[i].0,
                pts.join(" ")
            ));
        }
        let drawn = values.first().map_or(0, Vec::len);
        if values.iter().all(Vec::is_empty) {
            svg.push_str(&format!(
                "<text class=\"empty\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">No figures in this span</text>",
                (LEFT + W - RIGHT) / 2.0,
                H / 2.0
            ));
        }
        svg.push_str("</svg>");
        let latest = values
            .iter()
            .zip(&c.lines)
            .filter_map(|(l, (name, _))| Some(format!("{name} {}", c.unit.format(l.last()?.1))))
            .collect::<Vec<_>>();
        Graph {
            id: c.id,
            title: c.title,
            legend: c.lines.iter().map(|(n, _)| *n).collect(),
            points: drawn,
            latest: (!latest.is_empty()).then(|| latest.join(", ")),
            svg,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(at: i64, cpu: Option<f64>) -> Point {
        Point {
            at,
            cpu_pct: cpu,
            ..Point::default()
        }
    }

    #[test]
    fn a_chart_draws_each_known_value_inside_its_frame() {
        let pts = [pt(0, Some(0.0)), pt(500, None), pt(1000, Some(100.0))];
        let g = Graph::draw(&charts()[0], &pts, 0, 1000);
        assert_eq!(g.points, 2);
        let svg = g.svg.clone();
        let line = svg
            .split("points=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap();
        let coords: Vec<(f64, f64)> = line
            .split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect();
        assert_eq!(coords.len(), 2);
        // 0 % at the bottom left, 100 % near the top right (the axis ends
        // at 105 %).
        assert_eq!(coords[0], (LEFT, H - BOTTOM));
        assert_eq!(coords[1].0, W - RIGHT);
        assert!(coords[1].1 > TOP && coords[1].1 < TOP + 10.0, "{coords:?}");
        assert!(!svg.contains("No figures"));
        assert_eq!(g.latest.as_deref(), Some("used 100 %"));
    }

    #[test]
    fn an_empty_span_says_so() {
        let g = Graph::draw(&charts()[4], &[pt(0, Some(3.0))], 0, 1000);
        assert_eq!(g.points, 0);
        let svg = g.svg.clone();
        assert!(svg.contains("No figures in this span"));
        assert!(!svg.contains("<polyline"));
    }

    #[test]
    fn units_read_well() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(bytes(3.0 * 1024.0 * 1024.0 * 1024.0), "3.0 GiB");
        assert_eq!(Unit::PerSec.format(0.25), "0.25/s");
        assert_eq!(Unit::BytesPerSec.format(20480.0), "20 KiB/s");
    }
}
