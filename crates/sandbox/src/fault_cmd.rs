//! `misim fault add|list|clear`: fault rules, sent to the gRPC of the
//! service each one is for (`misim.admin.v1.Faults`, admin only). The CLI
//! checks what it can before calling anything (service, duration); the
//! service validates the rest and refuses with the reason.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use misim_chaos::Service;
use misim_proto::admin::v1 as pb;
use misim_proto::auth::ControlChannel;

use crate::cli::{admin_channel, default_data_dir, env_value, read_env_file};

#[derive(Debug, Subcommand)]
pub(crate) enum FaultCommand {
    /// Add a rule: matching requests get Azure's answer for --status.
    Add {
        /// imds, entra, arm or keyvault.
        #[arg(long)]
        service: String,
        /// IMDS only: the VM (name or resource id).
        #[arg(long)]
        vm: Option<String>,
        /// Only requests naming or carrying this client id (or object id).
        #[arg(long)]
        identity: Option<String>,
        /// Only paths matching this glob (`*`, `?`; case-insensitive).
        #[arg(long)]
        path: Option<String>,
        /// The HTTP status to answer (omit with --latency to only delay).
        #[arg(long)]
        status: Option<u16>,
        /// Entra only: the AADSTS code (e.g. 7000215, 700027, 50196).
        #[arg(long)]
        aadsts: Option<u32>,
        /// The Retry-After header, seconds.
        #[arg(long)]
        retry_after: Option<u32>,
        /// Delay first: `250ms`, `2s`, `1m`.
        #[arg(long, value_parser = parse_latency)]
        latency: Option<Duration>,
        /// Fire this many times, then retire.
        #[arg(long, conflicts_with = "probability")]
        count: Option<u32>,
        /// Fire for this fraction of matching requests, in (0, 1].
        #[arg(long)]
        probability: Option<f64>,
        /// The sandbox's data directory (its misim.env and control.key are read).
        #[arg(long, env = "MISIM_DATA_DIR", default_value_os_t = default_data_dir())]
        data_dir: PathBuf,
    },
    /// List the rules of every service (or one).
    List {
        /// Only this service.
        #[arg(long)]
        service: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The sandbox's data directory.
        #[arg(long, env = "MISIM_DATA_DIR", default_value_os_t = default_data_dir())]
        data_dir: PathBuf,
    },
    /// Remove one rule by id (`imds-1`), or every rule of every service.
    Clear {
        /// The rule's id; none clears all.
        id: Option<String>,
        /// The sandbox's data directory.
        #[arg(long, env = "MISIM_DATA_DIR", default_value_os_t = default_data_dir())]
        data_dir: PathBuf,
    },
}

/// `250ms`, `2s`, `1m` (a bare number is seconds).
pub(crate) fn parse_latency(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (digits, unit) = t
        .find(|c: char| !c.is_ascii_digit())
        .map_or((t, "s"), |i| t.split_at(i));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 250ms, 2s, 1m)"))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        _ => return Err(format!("{text:?}: the unit must be ms, s or m")),
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// The gRPC URL of `service`: `MISIM_<SERVICE>_GRPC_URL` from the
/// environment (the compose sandbox's service containers, which have no
/// misim.env), else from the data directory's misim.env.
pub(crate) fn grpc_url(data_dir: &Path, service: Service) -> anyhow::Result<String> {
    let key = match service {
        Service::Imds => "MISIM_IMDS_GRPC_URL",
        Service::Entra => "MISIM_ENTRA_GRPC_URL",
        Service::Arm => "MISIM_ARM_GRPC_URL",
        Service::KeyVault => "MISIM_KEYVAULT_GRPC_URL",
    };
    setting(data_dir, &[key])
}

/// A setting of the sandbox the CLI talks to: the first of `keys` set (and not empty) in the
/// environment (the compose sandbox's service containers, which have no misim.env), else
/// `keys[0]` from the data directory's misim.env (`misim up`).
pub(crate) fn setting(data_dir: &Path, keys: &[&str]) -> anyhow::Result<String> {
    if let Some(v) = keys
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    {
        return Ok(v);
    }
    env_value(&read_env_file(data_dir)?, keys[0])
}

fn client(
    data_dir: &Path,
    service: Service,
) -> anyhow::Result<pb::faults_client::FaultsClient<ControlChannel>> {
    let url = grpc_url(data_dir, service)?;
    Ok(pb::faults_client::FaultsClient::new(admin_channel(
        data_dir, &url,
    )?))
}

/// A refusal's message as the service worded it (gRPC's status code
/// prefix adds nothing for a user).
fn refusal(service: Service, s: tonic::Status) -> anyhow::Error {
    match s.code() {
        tonic::Code::InvalidArgument | tonic::Code::NotFound => {
            anyhow::anyhow!("{}", s.message())
        }
        _ => anyhow::anyhow!("{service} did not answer (is `misim up` running?): {s}"),
    }
}

pub(crate) async fn run(command: FaultCommand) -> anyhow::Result<ExitCode> {
    match command {
        FaultCommand::Add {
            service,
            vm,
            identity,
            path,
            status,
            aadsts,
            retry_after,
            latency,
            count,
            probability,
            data_dir,
        } => {
            let svc = Service::parse(&service)?;
            let spec = pb::FaultSpec {
                service: svc.to_string(),
                vm: vm.unwrap_or_default(),
                identity: identity.unwrap_or_default(),
                path: path.unwrap_or_default(),
                status: status.map_or(0, u32::from),
                aadsts: aadsts.unwrap_or(0),
                retry_after_secs: retry_after,
                latency_ms: latency.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                count,
                probability,
            };
            let fault = client(&data_dir, svc)?
                .add_fault(pb::AddFaultRequest { spec: Some(spec) })
                .await
                .map_err(|s| refusal(svc, s))?
                .into_inner();
            println!("{}", fault.id);
            Ok(ExitCode::SUCCESS)
        }
        FaultCommand::List {
            service,
            json,
            data_dir,
        } => {
            let only = service.as_deref().map(Service::parse).transpose()?;
            let mut all = Vec::new();
            for svc in Service::ALL
                .into_iter()
                .filter(|s| only.is_none_or(|o| o == *s))
            {
                let faults = client(&data_dir, svc)?
                    .list_faults(pb::ListFaultsRequest {})
                    .await
                    .map_err(|s| refusal(svc, s))?
                    .into_inner()
                    .faults;
                all.extend(faults);
            }
            if json {
                let v: Vec<serde_json::Value> = all.iter().map(fault_json).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_table(&all);
            }
            Ok(ExitCode::SUCCESS)
        }
        FaultCommand::Clear { id, data_dir } => clear(&data_dir, id.as_deref()).await,
    }
}

async fn clear(data_dir: &Path, id: Option<&str>) -> anyhow::Result<ExitCode> {
    let Some(id) = id else {
        let mut removed = 0;
        for svc in Service::ALL {
            removed += client(data_dir, svc)?
                .clear_faults(pb::ClearFaultsRequest::default())
                .await
                .map_err(|s| refusal(svc, s))?
                .into_inner()
                .removed;
        }
        println!("removed {removed}");
        return Ok(ExitCode::SUCCESS);
    };
    // The id names its service: `imds-3`.
    let svc = id
        .rsplit_once('-')
        .and_then(|(s, _)| Service::parse(s).ok())
        .with_context(|| format!("{id:?} is not a fault rule id (e.g. imds-1, arm-2)"))?;
    client(data_dir, svc)?
        .clear_faults(pb::ClearFaultsRequest { id: id.to_owned() })
        .await
        .map_err(|s| refusal(svc, s))?;
    println!("removed 1");
    Ok(ExitCode::SUCCESS)
}

fn fault_json(f: &pb::Fault) -> serde_json::Value {
    let s = f.spec.clone().unwrap_or_default();
    let opt = |v: &str| (!v.is_empty()).then(|| v.to_owned());
    serde_json::json!({
        "id": f.id,
        "service": s.service,
        "vm": opt(&s.vm),
        "identity": opt(&s.identity),
        "path": opt(&s.path),
        "status": (s.status != 0).then_some(s.status),
        "aadsts": (s.aadsts != 0).then_some(s.aadsts),
        "retryAfter": s.retry_after_secs,
        "latencyMs": s.latency_ms,
        "count": s.count,
        "probability": s.probability,
        "remaining": f.remaining,
        "hits": f.hits,
    })
}

fn print_table(all: &[pb::Fault]) {
    println!("ID\tSERVICE\tSTATUS\tMATCH\tFIRES\tHITS");
    for f in all {
        let s = f.spec.clone().unwrap_or_default();
        let mut m = Vec::new();
        for (k, v) in [("vm", &s.vm), ("identity", &s.identity), ("path", &s.path)] {
            if !v.is_empty() {
                m.push(format!("{k}={v}"));
            }
        }
        let status = match (s.status, s.aadsts) {
            (0, _) => format!("delay {}ms", s.latency_ms),
            (st, 0) => st.to_string(),
            (st, a) => format!("{st} AADSTS{a}"),
        };
        let fires = match (f.remaining, s.probability) {
            (Some(n), _) => format!("{n} more"),
            (None, Some(p)) => format!("p={p}"),
            _ => "always".into(),
        };
        let matching = if m.is_empty() {
            "*".into()
        } else {
            m.join(" ")
        };
        println!(
            "{}\t{}\t{status}\t{matching}\t{fires}\t{}",
            f.id, s.service, f.hits
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies() {
        assert_eq!(parse_latency("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_latency("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_latency("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_latency("2h").unwrap_err().contains("ms, s or m"));
        assert!(
            parse_latency("soon")
                .unwrap_err()
                .contains("not a duration")
        );
    }
}
