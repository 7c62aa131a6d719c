//! The command line: `--duration`, `--shutdown`, `--seed`, `--keep`.

use std::time::Duration;

pub struct Args {
    pub duration: Option<Duration>,
    pub shutdown: bool,
    pub seed: u64,
    pub keep: bool,
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?}"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("bad duration unit in {text:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

pub fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        duration: None,
        shutdown: false,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--duration" => {
                let v = it.next().ok_or("--duration needs a value")?;
                args.duration = Some(parse_duration(&v)?);
            }
            "--shutdown" => args.shutdown = true,
            "--seed" => {
                let v = it.next().ok_or("--seed needs a value")?;
                args.seed = v.parse().map_err(|_| format!("bad seed {v:?}"))?;
            }
            "--keep" => args.keep = true,
            "-h" | "--help" => {
                println!(
                    "usage: stress [--duration 60s] [--shutdown] [--seed N] [--keep]\n\
                     env: JOBSERVER_BIN (default target/release/jobserver), STRESS_SERVER_LOG (server RUST_LOG, default warn)"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}
