//! A lean HTTP/1.1-over-TLS load generator: a fixed set of keep-alive
//! connections (hyper's connection API over tokio-rustls, no pool, redirect,
//! retry or tower layers), one request in flight on each.
//!
//! Target 3 compares the token endpoint's rate with raw signing, which has no
//! client at all, while the clients share the server's two cores: every
//! microsecond a client spends counts against the server. A wrk-style client
//! keeps that share small; reqwest's layers cost about as much again per request
//! (docs/performance.md finding 15), and the h2 rows still use it.

use std::sync::{Arc, Mutex};

use anyhow::{Context, anyhow};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use tokio::net::TcpStream;

/// Open keep-alive connections to one HTTPS origin.
pub(crate) struct Pool {
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    /// `host:port`, for the `Host` header.
    authority: String,
}

/// Opens `connections` TLS connections to `origin` (`https://host:port`), trusting only `ca_pem`.
pub(crate) async fn connect(
    origin: &str,
    ca_pem: &str,
    connections: usize,
) -> anyhow::Result<Arc<Pool>> {
    let authority = origin
        .strip_prefix("https://")
        .with_context(|| format!("{origin} is not an https origin"))?
        .trim_end_matches('/')
        .to_owned();
    let host = authority
        .rsplit_once(':')
        .map_or(authority.as_str(), |(h, _)| h)
        .to_owned();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from(host)?;
    let mut idle = Vec::with_capacity(connections);
    for _ in 0..connections {
        let tcp = TcpStream::connect(&authority).await?;
        tcp.set_nodelay(true)?;
        let stream = tls.connect(name.clone(), tcp).await?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        idle.push(sender);
    }
    Ok(Arc::new(Pool {
        idle: Mutex::new(idle),
        authority,
    }))
}

impl Pool {
    /// POSTs `body` as a form to `path` on an idle connection: the answer's
    /// status and body. A connection whose exchange failed is dropped; one
    /// that answered, whatever the status, is kept.
    pub(crate) async fn post_form(
        &self,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<(http::StatusCode, Bytes)> {
        let mut sender = self
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .context("no open connection left")?;
        let answer = self.send(&mut sender, path, body).await?;
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(sender);
        Ok(answer)
    }

    async fn send(
        &self,
        sender: &mut SendRequest<Full<Bytes>>,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<(http::StatusCode, Bytes)> {
        sender.ready().await?;
        let req = http::Request::post(path)
            .header(http::header::HOST, &self.authority)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(Full::new(body))
            .map_err(|e| anyhow!("building the request: {e}"))?;
        let res = sender.send_request(req).await?;
        let status = res.status();
        Ok((status, res.into_body().collect().await?.to_bytes()))
    }
}
