//! A minimal HTTP/1.1 client for talking to a siphon-local child on 127.0.0.1 (one
//! request per connection, `Connection: close`), so the fault suite and the benchmarks
//! need no HTTP client crate.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Standard base64 (with padding), for the Basic credentials.
pub fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// Decodes a `Transfer-Encoding: chunked` body.
fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunked body")?;
        let size_text = std::str::from_utf8(&body[..end]).map_err(|e| e.to_string())?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| format!("bad chunk size {size_text:?}: {e}"))?;
        body = &body[end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// One request; returns the status and the body parsed as JSON (`Value::Null` when
/// empty, a string when not JSON).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    basic: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<(u16, Value), String> {
    let (status, _, value) = exchange(
        addr,
        method,
        path,
        basic,
        "accept: application/json\r\n",
        body,
        timeout,
    )
    .await?;
    Ok((status, value))
}

/// One request with `headers` (each line ending in CRLF) in place of the JSON `accept`;
/// returns the status, the response head (lower case) and the body as [`request`] does.
pub async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    basic: &str,
    headers: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<(u16, String, Value), String> {
    let work = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Basic {}\r\n\
             content-type: application/json\r\n{headers}\
             content-length: {}\r\nconnection: close\r\n\r\n",
            base64(basic.as_bytes()),
            payload.len()
        );
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        stream
            .write_all(payload.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("read from {addr}: {e}"))?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| format!("no HTTP header in {} bytes", raw.len()))?;
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let mut body = raw[split + 4..].to_vec();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        let lower = head.to_ascii_lowercase();
        if lower.contains("transfer-encoding: chunked") {
            body = dechunk(&body)?;
        }
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).to_string()))
        };
        Ok((status, lower, value))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("{method} {path}: no answer within {timeout:?}"))?
}

/// `POST /rpc` with a JSON body; the `result` of a 200, else an error with the answer.
pub async fn rpc(addr: SocketAddr, basic: &str, body: &Value) -> Result<Value, String> {
    let (status, answer) = request(
        addr,
        "POST",
        "/rpc",
        basic,
        Some(body),
        Duration::from_secs(60),
    )
    .await?;
    if status != 200 {
        return Err(format!("POST /rpc {body}: {status} {answer}"));
    }
    Ok(answer.get("result").cloned().unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64(i.as_bytes()), o);
        }
    }
}
