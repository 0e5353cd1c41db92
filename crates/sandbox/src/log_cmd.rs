//! `misim log`: the decision log of every service (`misim.admin.v1.Log`,
//! admin only), merged in time order; `--follow` streams new entries.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use futures::StreamExt as _;
use misim_chaos::Service;
use misim_proto::admin::v1 as pb;

use crate::cli::{admin_channel, default_data_dir};
use crate::fault_cmd::grpc_url;

#[derive(Debug, Args)]
pub(crate) struct LogArgs {
    /// Only the services' own refusals (not injected faults or throttling).
    #[arg(long)]
    denied: bool,
    /// Only entries of this principal (object id) or client id.
    #[arg(long)]
    principal: Option<String>,
    /// Only this service: imds, entra, graph, arm or keyvault.
    #[arg(long)]
    service: Option<String>,
    /// Keep printing new entries until interrupted.
    #[arg(long)]
    follow: bool,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// The sandbox's data directory (its misim.env and control.key are read).
    #[arg(long, env = "MISIM_DATA_DIR", default_value_os_t = default_data_dir())]
    data_dir: PathBuf,
}

/// Which services hold the entries `filter` asks for (Graph is Entra's).
fn services(filter: Option<&str>) -> anyhow::Result<Vec<Service>> {
    match filter.map(str::to_ascii_lowercase).as_deref() {
        None => Ok(Service::ALL.to_vec()),
        Some("graph") => Ok(vec![Service::Entra]),
        Some(s) => Ok(vec![Service::parse(s).map_err(|_| {
            anyhow::anyhow!("unknown service '{s}': one of imds, entra, graph, arm, keyvault")
        })?]),
    }
}

pub(crate) async fn run(a: LogArgs) -> anyhow::Result<ExitCode> {
    let targets = services(a.service.as_deref())?;
    let query = pb::LogQuery {
        denied_only: a.denied,
        principal: a.principal.clone().unwrap_or_default(),
        service: a.service.clone().unwrap_or_default(),
    };
    let mut clients = Vec::new();
    for svc in targets {
        let url = grpc_url(&a.data_dir, svc)?;
        clients.push((
            svc,
            pb::log_client::LogClient::new(admin_channel(&a.data_dir, &url)?),
        ));
    }
    // Followers subscribe before the list is read, so no entry falls
    // between the two; what both show is printed once (by seq).
    let mut streams = Vec::new();
    if a.follow {
        for (svc, c) in &mut clients {
            let s = c.follow_decisions(query.clone()).await.map_err(|s| {
                anyhow::anyhow!("{svc} did not answer (is `misim up` running?): {s}")
            })?;
            streams.push((svc.as_str(), s.into_inner()));
        }
    }
    // What is held now, merged across services by time.
    let mut held = Vec::new();
    let mut last_seq: HashMap<&'static str, u64> = HashMap::new();
    for (svc, c) in &mut clients {
        let got = c
            .list_decisions(query.clone())
            .await
            .map_err(|s| anyhow::anyhow!("{svc} did not answer (is `misim up` running?): {s}"))?;
        for d in got.into_inner().decisions {
            let seq = last_seq.entry(svc.as_str()).or_default();
            *seq = (*seq).max(d.seq);
            held.push((*svc, d));
        }
    }
    held.sort_by_key(|(_, d)| d.time_unix_ms);
    for (_, d) in &held {
        print_entry(d, a.json);
    }
    if !a.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let live = streams.into_iter().map(|(svc, s)| {
        let seen = last_seq.get(svc).copied().unwrap_or(0);
        // A follow stream repeats what is held; skip what was printed above.
        s.filter(move |r| std::future::ready(!matches!(r, Ok(d) if d.seq <= seen)))
            .boxed()
    });
    let mut all = futures::stream::select_all(live);
    while let Some(next) = all.next().await {
        match next {
            Ok(d) => print_entry(&d, a.json),
            Err(s) => eprintln!("misim log: {}", s.message()),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn timestamp(ms: i64) -> String {
    let t = misim_types::time::UtcDateTime::from_unix(ms.div_euclid(1000));
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        ms.rem_euclid(1000)
    )
}

fn print_entry(d: &pb::Decision, json: bool) {
    if json {
        let v = serde_json::json!({
            "time": timestamp(d.time_unix_ms),
            "service": d.service,
            "kind": d.kind,
            "method": d.method,
            "path": d.path,
            "status": d.status,
            "principal": d.principal,
            "clientId": d.client_id,
            "code": d.code,
            "reason": d.reason,
            "faultId": d.fault_id,
        });
        println!("{v}");
        return;
    }
    let who = match (d.principal.as_str(), d.client_id.as_str()) {
        ("", "") => "-".to_owned(),
        (p, "") | ("", p) => p.to_owned(),
        (p, c) if p == c => p.to_owned(),
        (p, c) => format!("{p} (client {c})"),
    };
    println!(
        "{} {} {} {} {} {} {} who={} why={}",
        timestamp(d.time_unix_ms),
        d.service,
        d.kind,
        d.status,
        d.method,
        d.path,
        if d.code.is_empty() { "-" } else { &d.code },
        who,
        d.reason.replace(['\r', '\n'], " ")
    );
}
