//! Real servers on 127.0.0.1 for the integration tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A hyper server that echoes: the request body back (byte for byte), the
/// method in `x-echo-method`, the status asked for in `x-want-status`.
pub struct Echo {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Echo {
    pub async fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(tandem::server::serve(
            listener,
            |req: Request<hyper::body::Incoming>, _peer| async move {
                let status = req
                    .headers()
                    .get("x-want-status")
                    .and_then(|v| v.to_str().ok()?.parse::<u16>().ok())
                    .unwrap_or(200);
                let method = req.method().to_string();
                let target = req.uri().to_string();
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let mut response = Response::new(Full::new(body));
                *response.status_mut() = StatusCode::from_u16(status).unwrap();
                response
                    .headers_mut()
                    .insert("x-echo-method", method.parse().unwrap());
                response
                    .headers_mut()
                    .insert("x-echo-target", target.parse().unwrap());
                response
            },
            async {
                let _ = stopped.await;
            },
            Duration::from_secs(1),
        ));
        Echo {
            addr,
            stop: Some(stop),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// What a client saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// Sends one request and reads the whole answer.
pub async fn send(
    client: &tandem::http::Client,
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Seen {
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = client
        .request(builder.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
        .collect();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Seen {
        status,
        headers,
        body,
    }
}

/// A port on which nothing listens (bound, then released).
pub async fn dead_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A server that accepts connections and never answers.
pub async fn silent_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// A server that accepts connections and resets them at once.
pub async fn resetting_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // Linger 0 turns the close into a RST.
            let _ = stream.set_zero_linger();
            drop(stream);
        }
    });
    addr
}
