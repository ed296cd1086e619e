//! What a server's own exporters say, read as text: Prometheus' text
//! exposition format (version 0.0.4, what `prometheus-node-exporter`
//! serves at `/metrics`) and Apache `mod_status`'s machine-readable page
//! (`/server-status?auto`). The analytics collector
//! (`provision/steps/metrics.rs`) fetches both over the server's SSH
//! connection and keeps the few figures the graphs need
//! ([`NodeFigures`]). Imports nothing from the crate.

use std::collections::BTreeSet;

/// One sample line: `name{label="value",…} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if the sample has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A line of the exposition that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

/// Every sample of an exposition text. `# HELP`, `# TYPE` and other
/// comments and blank lines are skipped; a line that is none of those and
/// no sample is an error naming its line number.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(parse_line(line).map_err(|reason| ParseError {
            line: i + 1,
            reason,
        })?);
    }
    Ok(out)
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or_else(|| "a sample needs a value".to_string())?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("{name:?} is not a metric name"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, tail) = parse_labels(after)?;
        labels = parsed;
        rest = tail;
    }
    let mut fields = rest.split_whitespace();
    let value = fields
        .next()
        .ok_or_else(|| format!("{name} has no value"))?;
    let value = parse_value(value).ok_or_else(|| format!("{value:?} is not a number"))?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("{ts:?} is not a timestamp"))?;
    }
    if fields.next().is_some() {
        return Err("text after the timestamp".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A sample's labels, in the order written.
type Labels = Vec<(String, String)>;

/// Labels after the `{`, up to and including the `}`; returns them and
/// the text after the brace.
fn parse_labels(mut s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(tail) = s.strip_prefix('}') {
            return Ok((labels, tail));
        }
        let eq = s.find('=').ok_or("a label needs `=`")?;
        let key = s[..eq].trim();
        if !is_metric_name(key) || key.contains(':') {
            return Err(format!("{key:?} is not a label name"));
        }
        s = s[eq + 1..].trim_start();
        s = s.strip_prefix('"').ok_or("a label value is quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    Some((_, c)) => {
                        value.push('\\');
                        value.push(c);
                    }
                    None => return Err("unterminated label value".into()),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((key.to_string(), value));
        s = s[end + 1..].trim_start();
        if let Some(tail) = s.strip_prefix(',') {
            s = tail;
        } else if !s.starts_with('}') {
            return Err("labels are separated by `,`".into());
        }
    }
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// The figures the graphs take from a node exporter. Counters are
/// cumulative; the collector turns them into rates between two scrapes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeFigures {
    /// CPU seconds spent in every mode, summed over all CPUs
    /// (`node_cpu_seconds_total`).
    pub cpu_total_secs: Option<f64>,
    /// CPU seconds spent busy: every mode but `idle`, `iowait` and `steal`.
    pub cpu_busy_secs: Option<f64>,
    /// How many CPUs the exporter saw.
    pub cpus: usize,
    /// `MemTotal` and `MemTotal − MemAvailable`, in bytes.
    pub memory_total: Option<f64>,
    pub memory_used: Option<f64>,
    /// The root filesystem's size and used bytes (size − free).
    pub disk_total: Option<f64>,
    pub disk_used: Option<f64>,
    /// Bytes received and sent on every interface but `lo`.
    pub net_rx_bytes: Option<f64>,
    pub net_tx_bytes: Option<f64>,
}

impl NodeFigures {
    /// Picks the figures out of a node exporter's samples.
    pub fn from_samples(samples: &[Sample]) -> NodeFigures {
        let mut f = NodeFigures::default();
        let mut cpus = BTreeSet::new();
        let add = |slot: &mut Option<f64>, v: f64| *slot = Some(slot.unwrap_or(0.0) + v);
        let mut mem_available = None;
        let mut fs_free = None;
        for s in samples {
            if !s.value.is_finite() {
                continue;
            }
            match s.name.as_str() {
                "node_cpu_seconds_total" => {
                    if let Some(cpu) = s.label("cpu") {
                        cpus.insert(cpu.to_string());
                    }
                    add(&mut f.cpu_total_secs, s.value);
                    if !matches!(s.label("mode"), Some("idle" | "iowait" | "steal")) {
                        add(&mut f.cpu_busy_secs, s.value);
                    }
                }
                "node_memory_MemTotal_bytes" => f.memory_total = Some(s.value),
                "node_memory_MemAvailable_bytes" => mem_available = Some(s.value),
                "node_filesystem_size_bytes" if s.label("mountpoint") == Some("/") => {
                    f.disk_total = Some(s.value)
                }
                "node_filesystem_free_bytes" if s.label("mountpoint") == Some("/") => {
                    fs_free = Some(s.value)
                }
                "node_network_receive_bytes_total" if s.label("device") != Some("lo") => {
                    add(&mut f.net_rx_bytes, s.value)
                }
                "node_network_transmit_bytes_total" if s.label("device") != Some("lo") => {
                    add(&mut f.net_tx_bytes, s.value)
                }
                _ => {}
            }
        }
        f.cpus = cpus.len();
        if let (Some(t), Some(a)) = (f.memory_total, mem_available) {
            f.memory_used = Some((t - a).max(0.0));
        }
        if let (Some(t), Some(free)) = (f.disk_total, fs_free) {
            f.disk_used = Some((t - free).max(0.0));
        }
        f
    }
}

/// Apache's request counter from `mod_status`'s `?auto` page
/// (`Total Accesses: N`); `None` when the page does not have it (an
/// `ExtendedStatus Off` server, or not a status page at all).
pub fn apache_total_accesses(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "Total Accesses").then(|| v.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cut of what Debian bookworm's prometheus-node-exporter 1.5 serves.
    const NODE: &str = r#"# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu="0",mode="idle"} 1000.5
node_cpu_seconds_total{cpu="0",mode="iowait"} 10
node_cpu_seconds_total{cpu="0",mode="system"} 40.25
node_cpu_seconds_total{cpu="0",mode="user"} 59.25
node_cpu_seconds_total{cpu="1",mode="idle"} 900
node_cpu_seconds_total{cpu="1",mode="steal"} 5
node_cpu_seconds_total{cpu="1",mode="user"} 95
# HELP node_memory_MemAvailable_bytes Memory information field MemAvailable_bytes.
# TYPE node_memory_MemAvailable_bytes gauge
node_memory_MemAvailable_bytes 3.221225472e+09
node_memory_MemTotal_bytes 4.294967296e+09
node_filesystem_free_bytes{device="/dev/vda",fstype="ext4",mountpoint="/"} 6e+09
node_filesystem_size_bytes{device="/dev/vda",fstype="ext4",mountpoint="/"} 1e+10
node_filesystem_size_bytes{device="tmpfs",fstype="tmpfs",mountpoint="/run"} 2e+08
node_network_receive_bytes_total{device="eth0"} 123456
node_network_receive_bytes_total{device="lo"} 999999
node_network_transmit_bytes_total{device="eth0"} 654321
node_network_transmit_bytes_total{device="lo"} 999999
node_scrape_collector_success{collector="cpu"} 1
go_gc_duration_seconds{quantile="0.5"} NaN
"#;

    #[test]
    fn node_exporter_text_gives_the_graphs_figures() {
        let samples = parse(NODE).unwrap();
        assert_eq!(samples.len(), 18);
        let f = NodeFigures::from_samples(&samples);
        assert_eq!(f.cpus, 2);
        assert_eq!(f.cpu_total_secs, Some(2110.0));
        // Busy: system and user of both CPUs; idle, iowait, steal are not.
        assert_eq!(f.cpu_busy_secs, Some(194.5));
        assert_eq!(f.memory_total, Some(4_294_967_296.0));
        assert_eq!(f.memory_used, Some(1_073_741_824.0));
        assert_eq!(f.disk_total, Some(1e10));
        assert_eq!(f.disk_used, Some(4e9));
        assert_eq!(f.net_rx_bytes, Some(123_456.0));
        assert_eq!(f.net_tx_bytes, Some(654_321.0));
    }

    #[test]
    fn an_exporter_without_a_collector_leaves_its_figures_unknown() {
        let f = NodeFigures::from_samples(&parse("node_memory_MemTotal_bytes 1024\n").unwrap());
        assert_eq!(f.memory_total, Some(1024.0));
        assert_eq!(f.memory_used, None);
        assert_eq!(
            (f.cpu_busy_secs, f.disk_used, f.net_rx_bytes),
            (None, None, None)
        );
        assert_eq!(f.cpus, 0);
    }

    #[test]
    fn labels_escapes_timestamps_and_special_values() {
        let s = parse(
            "a{path=\"C:\\\\dir\",msg=\"say \\\"hi\\\"\\nbye\",} 1 1700000000000\n\
             b +Inf\nc -Inf\nd{} 2.5e-3\n  \n# just a comment\n",
        )
        .unwrap();
        assert_eq!(s[0].label("path"), Some("C:\\dir"));
        assert_eq!(s[0].label("msg"), Some("say \"hi\"\nbye"));
        assert_eq!(s[0].value, 1.0);
        assert_eq!(s[1].value, f64::INFINITY);
        assert_eq!(s[2].value, f64::NEG_INFINITY);
        assert_eq!(s[3].value, 0.0025);
        assert!(s[3].labels.is_empty());
    }

    #[test]
    fn bad_lines_are_refused_with_their_line_number() {
        let cases = [
            ("ok 1\nno_value\n", 2, "value"),
            ("x{a=\"1\" 2\n", 1, "separated"),
            ("x{a=1} 2\n", 1, "quoted"),
            ("x{a=\"1} 2\n", 1, "unterminated"),
            ("x 1 2 3\n", 1, "after the timestamp"),
            ("x one\n", 1, "not a number"),
            ("1x 2\n", 1, "metric name"),
            ("x 1 soon\n", 1, "timestamp"),
        ];
        for (text, line, why) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.reason.contains(why), "{text:?}: {e}");
        }
    }

    #[test]
    fn apache_status_auto_page() {
        let page = "localhost\nServerVersion: Apache/2.4.62 (Debian)\nTotal Accesses: 4711\nTotal kBytes: 12\nReqPerSec: .5\n";
        assert_eq!(apache_total_accesses(page), Some(4711));
        assert_eq!(apache_total_accesses("<html>Not Found</html>"), None);
    }
}
