//! The CP's CPU time and memory, from /proc.

#[derive(Clone, Copy)]
pub struct Sample {
    /// user + system, in seconds.
    pub cpu: f64,
    pub rss_mb: f64,
}

pub fn sample(pid: u32) -> anyhow::Result<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which may hold spaces: state is 3rd.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("/proc/{pid}/stat: unexpected format"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based) of the whole line.
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Ok(Sample {
        cpu: ticks / USER_HZ,
        rss_mb: rss_kb / 1024.0,
    })
}

/// Clock ticks per second in /proc: 100 on every Linux this runs on.
const USER_HZ: f64 = 100.0;
