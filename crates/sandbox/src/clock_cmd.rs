//! `misim clock`: show and move the sandbox's virtual clock (`misim.admin.v1.Clock`), in
//! `misim up` (one clock for every service) and in the compose sandbox (each service's own,
//! moved together).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use misim_proto::admin::v1 as pb;
use misim_proto::auth::ControlChannel;
use misim_types::time::{format_rfc3339, parse_rfc3339};

use crate::cli::{admin_channel, default_data_dir, env_value, read_env_file};

/// The clock service(s) to talk to.
#[derive(Debug, clap::Args)]
pub(crate) struct Target {
    /// The sandbox's data directory (its misim.env names `MISIM_ADMIN_GRPC_URL`; its
    /// control.key authenticates).
    #[arg(long, env = "MISIM_DATA_DIR", default_value_os_t = default_data_dir())]
    data_dir: PathBuf,
    /// The Clock gRPC URLs to move together, comma-separated (the compose sandbox: every
    /// service's control URL). Default: `MISIM_ADMIN_GRPC_URL` of misim.env.
    #[arg(long, env = "MISIM_CLOCK_GRPC_URLS", value_delimiter = ',')]
    url: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ClockCommand {
    /// Print the sandbox's time and its offset from the real clock.
    Show {
        #[command(flatten)]
        target: Target,
    },
    /// Move the clock forward: `90m`, `25h`, `46d` (real time keeps ticking on top).
    Advance {
        /// How far: a whole number with a unit (ms, s, m, h, d).
        #[arg(value_parser = misim_types::time::parse_duration)]
        by: std::time::Duration,
        #[command(flatten)]
        target: Target,
    },
    /// Move the clock to a time (RFC 3339, e.g. `2027-01-01T00:00:00Z`).
    Set {
        /// The time.
        #[arg(value_parser = parse_time)]
        time: i64,
        /// Allow a time before the sandbox's current time (tokens already issued then
        /// look issued in the future).
        #[arg(long)]
        allow_backwards: bool,
        #[command(flatten)]
        target: Target,
    },
}

fn parse_time(text: &str) -> Result<i64, String> {
    parse_rfc3339(text).ok_or_else(|| {
        format!("{text:?} is not an RFC 3339 time (e.g. 2027-01-01T00:00:00Z or 2027-01-01)")
    })
}

type Client = pb::clock_client::ClockClient<ControlChannel>;

async fn clients(target: &Target) -> anyhow::Result<Vec<(String, Client)>> {
    let urls = if target.url.is_empty() {
        vec![env_value(
            &read_env_file(&target.data_dir)?,
            "MISIM_ADMIN_GRPC_URL",
        )?]
    } else {
        target.url.clone()
    };
    urls.into_iter()
        .map(|u| {
            let c = pb::clock_client::ClockClient::new(admin_channel(&target.data_dir, &u)?);
            Ok((u, c))
        })
        .collect()
}

/// A refusal's own message (it names the problem), else the transport's.
fn failed(url: &str, s: tonic::Status) -> anyhow::Error {
    match s.code() {
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => {
            anyhow::anyhow!("{}", s.message())
        }
        _ => anyhow::anyhow!("{url}: {} (is the sandbox running?)", s.message()),
    }
}

async fn show_all(clients: &mut [(String, Client)]) -> anyhow::Result<Vec<pb::ClockState>> {
    let mut states = Vec::new();
    for (url, c) in clients.iter_mut() {
        let s = c
            .show(pb::ShowClockRequest {})
            .await
            .map_err(|s| failed(url, s))?;
        states.push(s.into_inner());
    }
    Ok(states)
}

/// Sets every clock to `unix`. With several services, the first refusal stops before the
/// rest: a time before the current one is refused by the first service already.
async fn set_all(
    clients: &mut [(String, Client)],
    unix: i64,
    allow_backwards: bool,
) -> anyhow::Result<Vec<pb::ClockState>> {
    let mut states = Vec::new();
    for (url, c) in clients.iter_mut() {
        let s = c
            .set(pb::SetClockRequest {
                unix_seconds: unix,
                allow_backwards,
            })
            .await
            .map_err(|s| failed(url, s))?;
        states.push(s.into_inner());
    }
    Ok(states)
}

fn print(clients: &[(String, Client)], states: &[pb::ClockState]) {
    for ((url, _), s) in clients.iter().zip(states) {
        let label = if clients.len() > 1 {
            format!("{url}\t")
        } else {
            String::new()
        };
        println!(
            "{label}{}\toffset {}",
            format_rfc3339(s.now_unix_seconds),
            describe_offset(s.offset_seconds)
        );
    }
}

/// `+25h`, `+46d 1h 2m 3s`, `-10s`, `0s`.
fn describe_offset(secs: i64) -> String {
    let sign = if secs < 0 { "-" } else { "+" };
    let mut rest = secs.unsigned_abs();
    let mut parts = Vec::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if rest >= size {
            parts.push(format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    if parts.is_empty() {
        "0s".into()
    } else {
        format!("{sign}{}", parts.join(" "))
    }
}

pub(crate) async fn run(command: ClockCommand) -> anyhow::Result<ExitCode> {
    match command {
        ClockCommand::Show { target } => {
            let mut c = clients(&target).await?;
            let states = show_all(&mut c).await?;
            print(&c, &states);
        }
        ClockCommand::Advance { by, target } => {
            let secs = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
            anyhow::ensure!(secs > 0, "the clock advances by at least one second");
            let mut c = clients(&target).await?;
            let states = if c.len() == 1 {
                let (url, one) = &mut c[0];
                let s = one
                    .advance(pb::AdvanceClockRequest { seconds: secs })
                    .await
                    .map_err(|s| failed(url, s))?;
                vec![s.into_inner()]
            } else {
                // Several services: one target time for all, from the furthest ahead, so
                // clocks that drifted apart (a service's volume recreated) agree again.
                let now = show_all(&mut c)
                    .await?
                    .iter()
                    .map(|s| s.now_unix_seconds)
                    .max()
                    .context("no clock to move")?;
                set_all(&mut c, now.saturating_add(secs), false).await?
            };
            print(&c, &states);
        }
        ClockCommand::Set {
            time,
            allow_backwards,
            target,
        } => {
            let mut c = clients(&target).await?;
            let states = set_all(&mut c, time, allow_backwards).await?;
            print(&c, &states);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_read_as_durations() {
        assert_eq!(describe_offset(0), "0s");
        assert_eq!(describe_offset(90_000), "+1d 1h");
        assert_eq!(describe_offset(46 * 86_400 + 3723), "+46d 1h 2m 3s");
        assert_eq!(describe_offset(-10), "-10s");
    }

    #[test]
    fn times_must_be_rfc3339() {
        assert_eq!(parse_time("2027-01-01T00:00:00Z"), Ok(1_798_761_600));
        assert!(parse_time("next tuesday").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn urls_split_on_commas() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            t: Target,
        }
        let t =
            T::try_parse_from(["x", "--url", "http://a:1,http://b:2", "--data-dir", "/d"]).unwrap();
        assert_eq!(t.t.url, ["http://a:1", "http://b:2"]);
        assert_eq!(t.t.data_dir, std::path::Path::new("/d"));
    }
}
