//! Serving [`answer`](crate::answer::answer) over UDP and TCP on sockets the
//! caller has bound, with the limits every misim listener has: a connection
//! cap that stops accepting while full, read/idle and write timeouts, accept
//! back-off on resource errors and rate-limited warnings.

use std::sync::Arc;
use std::time::Duration;

use misim_runtime::Shutdown;
use misim_runtime::serve::{AcceptBackoff, LogLimiter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::Records;
use crate::answer::answer;

/// Limits of the TCP listener (UDP needs none: each datagram is answered
/// inline, without a task or a buffer per client).
#[derive(Debug, Clone)]
pub struct DnsLimits {
    /// TCP connections served at once; over the cap the listener stops
    /// accepting until one closes.
    pub max_connections: usize,
    /// A TCP connection that sends no complete query for this long is closed
    /// (RFC 7766 §6.2.3 asks servers to close idle connections).
    pub idle_timeout: Duration,
    /// The longest wait for a client to take an answer.
    pub write_timeout: Duration,
}

impl Default for DnsLimits {
    fn default() -> Self {
        Self {
            max_connections: 128,
            idle_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `records` on `udp` and `tcp` until `shutdown` fires.
pub async fn serve(
    records: Arc<Records>,
    udp: UdpSocket,
    tcp: TcpListener,
    shutdown: Shutdown,
    limits: DnsLimits,
) -> std::io::Result<()> {
    let (u, t) = tokio::join!(
        serve_udp(records.clone(), udp, shutdown.clone()),
        serve_tcp(records, tcp, shutdown, limits),
    );
    u.and(t)
}

/// Largest datagram read: EDNS clients may send more than 512 bytes (RFC
/// 6891 advertises up to 4096); a longer one is truncated and fails to parse.
const MAX_DATAGRAM: usize = 4096;

async fn serve_udp(
    records: Arc<Records>,
    socket: UdpSocket,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let local = socket.local_addr()?;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut backoff = AcceptBackoff::default();
    let mut warn = LogLimiter::new(Duration::from_secs(10));
    loop {
        let received = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let (len, peer) = match received {
            Ok(x) => {
                backoff.on_success();
                x
            }
            Err(e) => {
                // A previous answer's ICMP "port unreachable" surfaces here
                // as ConnectionRefused/Reset: retried at once.
                let delay = backoff.on_error(&e);
                if let Some(suppressed) = warn.allow(tokio::time::Instant::now()) {
                    tracing::warn!(%local, error = %e, suppressed, ?delay, "udp receive failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = shutdown.cancelled() => return Ok(()),
                }
            }
        };
        let Some(reply) = answer(&records, &buf[..len]) else {
            tracing::debug!(%peer, len, "dropped a datagram that is no query");
            continue;
        };
        // Never waits long: a full send buffer drops the answer (the client
        // retries), as UDP does.
        if let Err(e) = socket.try_send_to(&reply, peer)
            && let Some(suppressed) = warn.allow(tokio::time::Instant::now())
        {
            tracing::warn!(%local, %peer, error = %e, suppressed, "udp send failed");
        }
    }
}

async fn serve_tcp(
    records: Arc<Records>,
    listener: TcpListener,
    shutdown: Shutdown,
    limits: DnsLimits,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut backoff = AcceptBackoff::default();
    let mut warn = LogLimiter::new(Duration::from_secs(10));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        // Over the cap, stop accepting until a connection closes.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => {
                    backoff.on_success();
                    x
                }
                Err(e) => {
                    let delay = backoff.on_error(&e);
                    if let Some(suppressed) = warn.allow(tokio::time::Instant::now()) {
                        tracing::warn!(%local, error = %e, suppressed, ?delay, "accept failed");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => continue,
                        _ = shutdown.cancelled() => break,
                    }
                }
            },
            _ = shutdown.cancelled() => break,
        };
        // Reap finished connections so the set stays as small as the cap.
        while tasks.try_join_next().is_some() {}
        let records = records.clone();
        let limits = limits.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            tokio::select! {
                r = connection(&records, stream, &limits) => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "dns connection ended");
                    }
                }
                _ = shutdown.cancelled() => {}
            }
            drop(permit);
        });
    }
    tasks.shutdown().await;
    Ok(())
}

/// Answers length-prefixed queries (RFC 1035 §4.2.2) until the client closes,
/// idles, sends something that is no query, or stops reading.
async fn connection(
    records: &Records,
    mut stream: TcpStream,
    limits: &DnsLimits,
) -> std::io::Result<()> {
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
    let mut buf = Vec::new();
    loop {
        let read = async {
            let len = usize::from(stream.read_u16().await?);
            buf.resize(len, 0);
            stream.read_exact(&mut buf).await
        };
        match tokio::time::timeout(limits.idle_timeout, read).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(timed_out()),
        }
        let Some(reply) = answer(records, &buf) else {
            return Ok(());
        };
        let len = u16::try_from(reply.len())
            .map_err(|_| std::io::Error::other("answer longer than 64 KiB"))?;
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        tokio::time::timeout(limits.write_timeout, stream.write_all(&framed))
            .await
            .map_err(|_| timed_out())??;
    }
}
