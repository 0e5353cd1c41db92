//! `misim apply FILE`, `misim export` and `misim up --scenario FILE`: scenarios
//! (docs/scenarios.md) applied to, or read from, the sandbox of a data directory.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::default_data_dir;
use crate::scenario::model::{Format, parse, render};
use crate::scenario::{apply, export};

/// A scenario file is read whole; anything larger is not a scenario.
const MAX_FILE: u64 = 4 << 20;

/// `misim apply`.
#[derive(Debug, clap::Args)]
pub(crate) struct ApplyArgs {
    /// The scenario (YAML or JSON; `-` reads standard input as YAML or JSON).
    file: PathBuf,
    /// Only validate: the file, then what it names in the sandbox (roles, pinned ids).
    #[arg(long)]
    check: bool,
    /// The sandbox's data directory (its misim.env and control.key are read).
    #[arg(long, env = "MISIM_DATA_DIR", default_value_os_t = default_data_dir())]
    data_dir: PathBuf,
}

/// `misim export`.
#[derive(Debug, clap::Args)]
pub(crate) struct ExportArgs {
    /// Write here instead of standard output (the format follows the extension).
    #[arg(long)]
    out: Option<PathBuf>,
    /// `yaml` or `json` (default: the extension of --out, else yaml).
    #[arg(long)]
    format: Option<String>,
    /// Write secrets' values too (otherwise only their names).
    #[arg(long)]
    include_secret_values: bool,
    /// The sandbox's data directory.
    #[arg(long, env = "MISIM_DATA_DIR", default_value_os_t = default_data_dir())]
    data_dir: PathBuf,
}

/// Reads and parses a scenario file; errors name the file.
fn read(file: &Path) -> anyhow::Result<crate::scenario::model::Scenario> {
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::Read::take(std::io::stdin(), MAX_FILE))?
    } else {
        let len = std::fs::metadata(file)
            .with_context(|| format!("reading {}", file.display()))?
            .len();
        anyhow::ensure!(
            len <= MAX_FILE,
            "{}: {len} bytes; a scenario is at most {MAX_FILE}",
            file.display()
        );
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    parse(&text, Format::of(file, &text))
        .map_err(|e| anyhow::anyhow!("{}: {e}; nothing was changed", file.display()))
}

/// Applies `file` to the sandbox in `data_dir`, printing one line per resource.
pub(crate) async fn apply_file(data_dir: &Path, file: &Path, check: bool) -> anyhow::Result<()> {
    let scenario = read(file)?;
    let outcome = apply::apply(data_dir, &scenario, check)
        .await
        .with_context(|| format!("applying {}", file.display()))?;
    for l in &outcome.lines {
        println!("{l}");
    }
    if check {
        println!("{}: valid", file.display());
    } else {
        println!(
            "{} changed, {} unchanged",
            outcome.changes(),
            outcome.lines.len() - outcome.changes()
        );
    }
    Ok(())
}

pub(crate) async fn run_apply(a: ApplyArgs) -> anyhow::Result<ExitCode> {
    apply_file(&a.data_dir, &a.file, a.check).await?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn run_export(a: ExportArgs) -> anyhow::Result<ExitCode> {
    let format = match (a.format.as_deref(), &a.out) {
        (Some(f), _) if f.eq_ignore_ascii_case("json") => Format::Json,
        (Some(f), _) if f.eq_ignore_ascii_case("yaml") || f.eq_ignore_ascii_case("yml") => {
            Format::Yaml
        }
        (Some(f), _) => anyhow::bail!("--format {f:?}: yaml or json"),
        (None, Some(p)) => Format::of(p, ""),
        (None, None) => Format::Yaml,
    };
    let (scenario, skipped) = export::export(&a.data_dir, a.include_secret_values).await?;
    let text = render(&scenario, format)?;
    match &a.out {
        Some(p) => crate::write_atomically(p, &text)?,
        None => print!("{text}"),
    }
    if skipped.assignments > 0 {
        eprintln!(
            "not exported: {} role assignment(s) of principals that are not managed identities (the bootstrap admin's, applications')",
            skipped.assignments
        );
    }
    Ok(ExitCode::SUCCESS)
}
