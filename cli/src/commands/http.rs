//! A minimal HTTP/1.1 client for the few requests the CLI makes to a gateway: `GET /health`,
//! `POST /api/control` and `POST /api/broadcast`.
//!
//! It exists so the binary needs no HTTP client crate (and its TLS stack) for three small JSON
//! requests to a gateway that is normally on 127.0.0.1 or a private network: one request per
//! connection (`Connection: close`), plain `http://` only, a response read to its end (by
//! `Content-Length`, chunked, or until the server closes), all within one timeout. A gateway
//! behind TLS is reached over NATS instead (`NATS_URL`), or through its plain address.

use anyhow::{anyhow, bail, Context};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest response accepted (a `connections` answer of a full gateway is a few MiB).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// A parsed `http://host[:port][/base]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// The path prefix without a trailing slash (`""` for none).
    pub base: String,
}

impl BaseUrl {
    /// Parses `url`; an error says what is wrong with it.
    pub fn parse(url: &str) -> anyhow::Result<BaseUrl> {
        let url = url.trim();
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some(("https", _)) => bail!(
                "{url} is https, which this client does not speak: use the gateway's plain http address, or NATS_URL"
            ),
            Some((scheme, _)) => bail!("{url} is not an http:// URL (scheme {scheme})"),
            None => url,
        };
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| anyhow!("{url}: unclosed [ in the host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            bail!("{url} names no host");
        }
        let port = match port {
            Some(port) => port
                .parse::<u16>()
                .map_err(|_| anyhow!("{url}: {port:?} is not a port"))?,
            None => 80,
        };
        Ok(BaseUrl {
            host: host.to_string(),
            port,
            base: path.trim_end_matches('/').to_string(),
        })
    }

    /// `http://host:port/base`.
    pub fn display(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("http://{host}:{}{}", self.port, self.base)
    }
}

/// A response: the status code and the body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).context("the answer is not JSON")
    }

    /// The `error` of a JSON error body, else the body as text.
    pub fn error_text(&self) -> String {
        match serde_json::from_slice::<serde_json::Value>(&self.body) {
            Ok(value) if value["error"].is_string() => {
                value["error"].as_str().unwrap_or_default().to_string()
            }
            _ => String::from_utf8_lossy(&self.body).trim().to_string(),
        }
    }
}

/// Why a request got no response.
#[derive(Debug)]
pub enum RequestError {
    /// Nothing listens there (or the name does not resolve, or the network is down).
    Connect(String, std::io::Error),
    /// Connected, but the exchange failed or took too long.
    Exchange(anyhow::Error),
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::Connect(url, e) => write!(f, "cannot connect to {url}: {e}"),
            RequestError::Exchange(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for RequestError {}

/// Sends one request to `url`'s `path` (appended to its base path); `bearer` becomes an
/// `Authorization` header and `body` a JSON body.
pub async fn request(
    url: &BaseUrl,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&[u8]>,
    limit: Duration,
) -> Result<Response, RequestError> {
    let stream = tokio::time::timeout(
        limit,
        tokio::net::TcpStream::connect((url.host.as_str(), url.port)),
    )
    .await
    .map_err(|_| {
        RequestError::Connect(
            url.display(),
            std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"),
        )
    })?
    .map_err(|e| RequestError::Connect(url.display(), e))?;
    tokio::time::timeout(limit, exchange(stream, url, method, path, bearer, body))
        .await
        .map_err(|_| {
            RequestError::Exchange(anyhow!(
                "{} did not answer {method} {path} within {limit:?}",
                url.display()
            ))
        })?
        .map_err(RequestError::Exchange)
}

async fn exchange(
    mut stream: tokio::net::TcpStream,
    url: &BaseUrl,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&[u8]>,
) -> anyhow::Result<Response> {
    let host = if url.host.contains(':') {
        format!("[{}]:{}", url.host, url.port)
    } else {
        format!("{}:{}", url.host, url.port)
    };
    let mut head = format!(
        "{method} {}{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: application/json\r\nUser-Agent: nself-realtime-cli\r\n",
        url.base
    );
    if let Some(token) = bearer {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or_default();
    if method != "GET" {
        head.push_str("Content-Type: application/json\r\n");
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    stream
        .write_all(&request)
        .await
        .with_context(|| format!("cannot send the request to {}", url.display()))?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .with_context(|| format!("cannot read the answer of {}", url.display()))?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
        if response.len() > MAX_RESPONSE_BYTES {
            bail!("the answer of {} is larger than 64 MiB", url.display());
        }
        if let Some(complete) = complete(&response)? {
            return Ok(complete);
        }
    }
    complete(&response)?
        .or_else(|| parse_until_close(&response))
        .ok_or_else(|| anyhow!("{} closed the connection mid-answer", url.display()))
}

/// A response's status line and headers, and where its body starts.
struct Head {
    body_start: usize,
    status: u16,
    /// Lower-case names.
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The head of `response`, once it is all there.
fn head(response: &[u8]) -> anyhow::Result<Option<Head>> {
    let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let text = std::str::from_utf8(&response[..end]).context("the answer's head is not text")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("not an HTTP answer: {status_line:?}"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Some(Head {
        body_start: end + 4,
        status,
        headers,
    }))
}

/// The response, once `response` holds all of it by its framing (`Content-Length` or chunked).
fn complete(response: &[u8]) -> anyhow::Result<Option<Response>> {
    let Some(head) = head(response)? else {
        return Ok(None);
    };
    let body = &response[head.body_start..];
    let status = head.status;
    if head
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        return Ok(dechunk(body).map(|body| Response { status, body }));
    }
    if let Some(length) = head.header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| anyhow!("bad Content-Length {length:?}"))?;
        return Ok((body.len() >= length).then(|| Response {
            status,
            body: body[..length].to_vec(),
        }));
    }
    Ok(None)
}

/// A response without framing: the body is whatever came before the server closed.
fn parse_until_close(response: &[u8]) -> Option<Response> {
    let head = head(response).ok()??;
    Some(Response {
        status: head.status,
        body: response[head.body_start..].to_vec(),
    })
}

/// A chunked body decoded, once it is complete.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if body.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_the_fix_for_what_does_not() {
        let url = BaseUrl::parse("http://127.0.0.1:4000").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.base.as_str()),
            ("127.0.0.1", 4000, "")
        );
        let url = BaseUrl::parse("localhost:4100/realtime/").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.base.as_str()),
            ("localhost", 4100, "/realtime")
        );
        let url = BaseUrl::parse("http://[::1]:4000").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 4000));
        assert_eq!(url.display(), "http://[::1]:4000");
        assert_eq!(BaseUrl::parse("http://gateway").unwrap().port, 80);
        for bad in ["https://x:4000", "ftp://x", "http://:4000", "http://x:port"] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn responses_complete_by_length_or_chunks() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        let response = complete(plain).unwrap().unwrap();
        assert_eq!(
            (response.status, response.body.as_slice()),
            (200, &b"{}"[..])
        );
        assert!(complete(&plain[..plain.len() - 1]).unwrap().is_none());
        let chunked = b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
        let response = complete(chunked).unwrap().unwrap();
        assert_eq!(response.body, b"{\"a\":1}");
        assert!(complete(&chunked[..40]).unwrap().is_none());
        let refused = b"HTTP/1.1 403 Forbidden\r\ncontent-length: 17\r\n\r\n{\"error\":\"nope!\"}";
        assert_eq!(complete(refused).unwrap().unwrap().error_text(), "nope!");
    }
}
