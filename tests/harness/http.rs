//! A minimal HTTP/1.1 client for the services' `/health`, `/metrics` and REST endpoints on
//! 127.0.0.1: enough for tests, with no HTTP client crate to build.

use std::time::Duration;

/// A minimal HTTP/1.1 GET of a JSON document on 127.0.0.1.
pub async fn http_get_json(port: u16, path: &str) -> Option<(u16, serde_json::Value)> {
    let (status, body) = http_get(port, path).await?;
    Some((status, serde_json::from_str(&body).ok()?))
}

/// A minimal HTTP/1.1 GET on 127.0.0.1: the status code and the body as text.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_request(port, "GET", path, &[], "").await
}

/// A minimal HTTP/1.1 POST of a JSON body with a bearer token: the status code and the body.
pub async fn http_post(port: u16, path: &str, bearer: &str, body: &str) -> Option<(u16, String)> {
    let authorization = format!("Bearer {bearer}");
    http_request(
        port,
        "POST",
        path,
        &[
            ("Authorization", &authorization),
            ("Content-Type", "application/json"),
        ],
        body,
    )
    .await
}

/// A minimal HTTP/1.1 request on 127.0.0.1 (the connection closes after it).
pub async fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}
