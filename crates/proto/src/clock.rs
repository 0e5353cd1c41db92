//! `misim.admin.v1.Clock`: the sandbox owner moves a [`VirtualClock`]. A new offset is written
//! to `<data dir>/clock.offset` before it applies (acknowledged means durable), so a restarted
//! sandbox or service resumes at the moved time with real time still ticking on top.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use misim_types::{Clock as _, ClockMoveError, SharedClock, VirtualClock};
use tonic::{Request, Response, Status};

use crate::admin::v1 as pb;
use crate::auth::{Caller, ControlKey};

/// The file, in a data directory, that holds the clock's offset (decimal seconds).
pub const OFFSET_FILE: &str = "clock.offset";

/// Where a service process serves its own `Clock` (the compose sandbox: one per
/// container, moved together by `misim clock --url ...`); unset, it is not served.
pub const ENV_CLOCK_GRPC_ADDR: &str = "MISIM_CLOCK_GRPC_ADDR";

/// Reading or writing the offset file failed.
#[derive(Debug, thiserror::Error)]
pub enum ClockFileError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The offset file.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file does not hold a number of seconds.
    #[error("{path}: not an offset in seconds: {text:?}")]
    Malformed {
        /// The offset file.
        path: String,
        /// What it holds (trimmed).
        text: String,
    },
}

/// The virtual clock of one data directory and the `Clock` gRPC service that moves it.
#[derive(Debug, Clone)]
pub struct ClockService {
    clock: Arc<VirtualClock>,
    file: Arc<PathBuf>,
    /// One move at a time: compute, persist, apply.
    moving: Arc<tokio::sync::Mutex<()>>,
    /// The offset after each move, for whoever acts on a moved clock at once (ARM's
    /// credential renewal) instead of at its next look.
    moved: Arc<tokio::sync::watch::Sender<i64>>,
}

impl ClockService {
    /// `base` moved by the offset persisted in `data_dir` (none yet: 0).
    pub fn open(base: SharedClock, data_dir: &Path) -> Result<Self, ClockFileError> {
        let file = data_dir.join(OFFSET_FILE);
        let offset = read_offset(&file)?;
        Ok(Self {
            clock: Arc::new(VirtualClock::new(base, offset)),
            file: Arc::new(file),
            moving: Arc::new(tokio::sync::Mutex::new(())),
            moved: Arc::new(tokio::sync::watch::Sender::new(offset)),
        })
    }

    /// A service process's clock: the real clock moved by the offset kept in `data_dir`, and
    /// the address to serve it on ([`ENV_CLOCK_GRPC_ADDR`]; `None`: not served).
    pub fn for_process(
        env: &dyn misim_types::EnvSource,
        data_dir: &Path,
    ) -> Result<(Self, Option<String>), ClockFileError> {
        let svc = Self::open(Arc::new(misim_types::SystemClock), data_dir)?;
        Ok((svc, env.get(ENV_CLOCK_GRPC_ADDR).filter(|a| !a.is_empty())))
    }

    /// The clock, for the services to read.
    pub fn clock(&self) -> SharedClock {
        self.clock.clone()
    }

    /// Changes after every move of the clock (its value: the new offset).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<i64> {
        self.moved.subscribe()
    }

    /// The current state.
    pub fn state(&self) -> pb::ClockState {
        pb::ClockState {
            now_unix_seconds: self.clock.unix(),
            offset_seconds: self.clock.offset_secs(),
        }
    }

    /// Moves the clock forward by `seconds`.
    pub async fn advance(&self, seconds: i64) -> Result<pb::ClockState, Status> {
        let _one = self.moving.lock().await;
        let offset = self.clock.offset_after_advance(seconds).map_err(refusal)?;
        self.apply(offset)
    }

    /// Moves the clock to `unix` seconds (backwards only if allowed).
    pub async fn set(&self, unix: i64, allow_backwards: bool) -> Result<pb::ClockState, Status> {
        let _one = self.moving.lock().await;
        let offset = self
            .clock
            .offset_to_reach(unix, allow_backwards)
            .map_err(refusal)?;
        self.apply(offset)
    }

    fn apply(&self, offset: i64) -> Result<pb::ClockState, Status> {
        write_offset(&self.file, offset).map_err(|e| {
            tracing::error!(error = %e, "persisting the clock offset");
            Status::internal("the clock's offset could not be saved; the clock did not move")
        })?;
        self.clock.set_offset(offset);
        self.moved.send_replace(offset);
        tracing::info!(offset, "the sandbox clock moved");
        Ok(self.state())
    }

    /// The service for a gRPC router, admin only (add it with `Router::add_service`).
    pub fn guarded(
        &self,
        key: &ControlKey,
    ) -> crate::server::Guarded<crate::server::Detached<pb::clock_server::ClockServer<Self>>> {
        crate::server::guarded(
            pb::clock_server::ClockServer::new(self.clone()),
            key,
            policy,
        )
    }

    /// A router serving only this service (plus health and reflection).
    pub fn router(&self, key: &ControlKey) -> tonic::transport::server::Router {
        crate::server::router_with(
            pb::clock_server::ClockServer::new(self.clone()),
            key,
            policy,
        )
    }
}

/// Only the sandbox owner (`admin`) moves the clock: no service calls it.
fn policy(_method: &str) -> &'static [Caller] {
    &[]
}

fn refusal(e: ClockMoveError) -> Status {
    match e {
        ClockMoveError::Backwards { .. } => Status::failed_precondition(e.to_string()),
        ClockMoveError::NotForward | ClockMoveError::OutOfRange => {
            Status::invalid_argument(e.to_string())
        }
    }
}

fn read_offset(path: &Path) -> Result<i64, ClockFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(ClockFileError::Io {
                path: path.display().to_string(),
                source,
            });
        }
    };
    text.trim().parse().map_err(|_| ClockFileError::Malformed {
        path: path.display().to_string(),
        text: text.trim().chars().take(40).collect(),
    })
}

/// Writes a temporary file, syncs it and renames it over the old one: a crash leaves
/// either offset, never a torn one.
fn write_offset(path: &Path, offset: i64) -> Result<(), ClockFileError> {
    use std::io::Write as _;
    let io = |source| ClockFileError::Io {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension(format!("offset.{}.tmp", std::process::id()));
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(format!("{offset}\n").as_bytes())?;
        f.sync_all()
    });
    let renamed = written.and_then(|()| std::fs::rename(&tmp, path));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    renamed.map_err(io)
}

#[tonic::async_trait]
impl pb::clock_server::Clock for ClockService {
    async fn show(
        &self,
        _: Request<pb::ShowClockRequest>,
    ) -> Result<Response<pb::ClockState>, Status> {
        Ok(Response::new(self.state()))
    }

    async fn advance(
        &self,
        req: Request<pb::AdvanceClockRequest>,
    ) -> Result<Response<pb::ClockState>, Status> {
        self.advance(req.into_inner().seconds)
            .await
            .map(Response::new)
    }

    async fn set(
        &self,
        req: Request<pb::SetClockRequest>,
    ) -> Result<Response<pb::ClockState>, Status> {
        let r = req.into_inner();
        self.set(r.unix_seconds, r.allow_backwards)
            .await
            .map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use misim_types::ManualClock;

    fn base() -> Arc<ManualClock> {
        Arc::new(ManualClock::at_unix(1_800_000_000))
    }

    #[tokio::test]
    async fn a_move_is_persisted_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let base = base();
        let svc = ClockService::open(base.clone(), dir.path()).unwrap();
        assert_eq!(svc.state().offset_seconds, 0);
        let s = svc.advance(25 * 3600).await.unwrap();
        assert_eq!(s.now_unix_seconds, 1_800_000_000 + 25 * 3600);
        assert_eq!(svc.clock().unix(), s.now_unix_seconds);
        // Real time ticks on; a reopened service keeps the offset.
        base.advance(std::time::Duration::from_secs(60));
        let again = ClockService::open(base.clone(), dir.path()).unwrap();
        assert_eq!(again.state().offset_seconds, 25 * 3600);
        assert_eq!(again.clock().unix(), 1_800_000_060 + 25 * 3600);
        // Only the offset file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn refusals_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let svc = ClockService::open(base(), dir.path()).unwrap();
        let mut moves = svc.subscribe();
        svc.advance(100).await.unwrap();
        assert!(moves.has_changed().unwrap(), "a move is announced");
        assert_eq!(*moves.borrow_and_update(), 100);
        let e = svc.advance(0).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let e = svc.set(1_800_000_050, false).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(
            e.message().contains("only moves forward"),
            "{}",
            e.message()
        );
        assert_eq!(svc.state().offset_seconds, 100);
        assert_eq!(read_offset(&dir.path().join(OFFSET_FILE)).unwrap(), 100);
        assert!(
            !moves.has_changed().unwrap(),
            "a refused move is not announced"
        );
        let s = svc.set(1_800_000_050, true).await.unwrap();
        assert_eq!((s.now_unix_seconds, s.offset_seconds), (1_800_000_050, 50));
    }

    #[test]
    fn a_malformed_offset_file_is_an_error_not_zero() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(OFFSET_FILE), "tomorrow").unwrap();
        let e = ClockService::open(base(), dir.path()).unwrap_err();
        assert!(e.to_string().contains("tomorrow"), "{e}");
    }
}
