//! The daemon's HTTP endpoint, on hyper: `GET /healthz` (200 when every connector runs,
//! 503 with a JSON body naming the ones that do not) and `GET /metrics` (Prometheus text).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::{Code, Error, Result};
use crate::{health, metrics};

/// A client has this long to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed `accept` (out of file descriptors, say), wait before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

pub async fn bind(addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        Error::permanent(
            Code::Http,
            format!(
            "http.listen {addr}: cannot listen: {e}; choose another address in the daemon config"
        ),
        )
        .with_source(e)
    })
}

/// Serves until `shutdown` turns true; then stops accepting and lets the requests in
/// flight finish (each is one short answer: connections are not kept alive).
pub async fn serve(listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "http: accept failed; retrying");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(answer));
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "http: connection ended with an error");
            }
        });
    }
}

async fn answer(req: Request<Incoming>) -> std::result::Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => {
            let (ok, body) = health::report();
            let status = if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, "application/json", format!("{body}\n"))
        }
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics::render(),
        ),
        (&Method::GET, _) => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /healthz or /metrics\n".to_owned(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET is served\n".to_owned(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    Ok(resp)
}
