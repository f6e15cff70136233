//! `summary`: reads the JSON lines of repeated runs (one per target and repetition, told apart
//! by `label` and `rep`), prints the median of each figure per target and the median of the
//! per-repetition ratios to a base target.

use serde_json::Value;

const USAGE: &str = "usage: gw-bench summary FILE.jsonl [--base LABEL] [--fields F1,F2,..]";

fn default_fields(mode: &str) -> &'static [&'static str] {
    match mode {
        "echo" => &[
            "server_cpu_us_per_msg",
            "server_cpu_pct",
            "msgs_per_s",
            "lat_us.p50",
            "lat_us.p99",
            "delivered_ratio",
            "errors",
            "loader_cpu_pct",
        ],
        "broadcast" => &[
            "server_cpu_us_per_delivery",
            "server_cpu_pct",
            "deliveries_per_s",
            "lat_us.p50",
            "lat_us.p99",
            "delivered_ratio",
            "errors",
            "loader_cpu_pct",
        ],
        "storm" => {
            &["accepts_per_s", "handshake_us.p50", "handshake_us.p99", "failures", "server_cpu_us_per_accept"]
        }
        "idle" => &["opened", "failures", "server_bytes_per_conn", "kernel_slab_bytes_per_conn_both_ends"],
        _ => &[],
    }
}

fn lookup(v: &Value, path: &str) -> Option<f64> {
    let mut cur = v;
    for part in path.split('.') {
        cur = cur.get(part)?;
    }
    match cur {
        Value::Bool(b) => Some(*b as u8 as f64),
        v => v.as_f64(),
    }
}

pub fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let m = xs.len() / 2;
    Some(if xs.len() % 2 == 1 { xs[m] } else { (xs[m - 1] + xs[m]) / 2.0 })
}

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x.abs() >= 1000.0 || x == x.trunc() => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.3}"),
    }
}

pub fn run(args: Vec<String>) -> Result<(), String> {
    let mut it = args.into_iter();
    let file = it.next().ok_or(USAGE)?;
    let (mut base, mut fields): (Option<String>, Option<Vec<String>>) = (None, None);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--base" => base = Some(it.next().ok_or(USAGE)?),
            "--fields" => fields = Some(it.next().ok_or(USAGE)?.split(',').map(str::to_string).collect()),
            _ => return Err(USAGE.into()),
        }
    }
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
    let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    if lines.is_empty() {
        return Err(format!("{file}: no JSON lines"));
    }
    let label_of = |v: &Value| v.get("label").and_then(Value::as_str).unwrap_or("-").to_string();
    let mut labels: Vec<String> = Vec::new();
    for l in &lines {
        let name = label_of(l);
        if !labels.contains(&name) {
            labels.push(name);
        }
    }
    let base = base.unwrap_or_else(|| labels[0].clone());
    let mode = lines[0].get("mode").and_then(Value::as_str).unwrap_or("");
    let fields = fields.unwrap_or_else(|| default_fields(mode).iter().map(|s| s.to_string()).collect());
    let reps = |label: &str| lines.iter().filter(|l| label_of(l) == label).count();

    let others: Vec<&String> = labels.iter().filter(|l| **l != base).collect();
    let mut head = format!("{:<32}", format!("{mode} (median of runs)"));
    for l in &labels {
        head += &format!(" {:>12}", format!("{l} (n={})", reps(l)));
    }
    for l in &others {
        head += &format!(" {:>14}", format!("{l}/{base}"));
    }
    println!("{head}");
    for f in &fields {
        let mut row = format!("{f:<32}");
        for l in &labels {
            let xs: Vec<f64> =
                lines.iter().filter(|v| label_of(v) == *l).filter_map(|v| lookup(v, f)).collect();
            row += &format!(" {:>12}", fmt(median(xs)));
        }
        for l in &others {
            // Ratios within one repetition (same `rep`), then their median.
            let mut ratios = Vec::new();
            for v in lines.iter().filter(|v| label_of(v) == **l) {
                let rep = v.get("rep");
                let b = lines.iter().find(|b| label_of(b) == base && b.get("rep") == rep);
                if let (Some(x), Some(y)) = (lookup(v, f), b.and_then(|b| lookup(b, f)))
                    && y != 0.0
                {
                    ratios.push(x / y);
                }
            }
            row += &format!(" {:>14}", median(ratios).map_or("-".into(), |r| format!("{r:.2}x")));
        }
        println!("{row}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_lookup() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
        let v: Value = serde_json::from_str(r#"{"lat_us":{"p99":120},"ok":true}"#).unwrap();
        assert_eq!(lookup(&v, "lat_us.p99"), Some(120.0));
        assert_eq!(lookup(&v, "ok"), Some(1.0));
        assert_eq!(lookup(&v, "lat_us.p50"), None);
    }
}
