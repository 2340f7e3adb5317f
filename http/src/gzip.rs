//! Gzip for what clients fetch from the API port: the embedded page
//! files (compressed once) and every JSON answer (compressed per
//! response, at the fastest level), when the client accepts it. A week
//! of panel data, a Grafana range query and uPlot are mostly repetition;
//! compressed, they move a fraction of the bytes.

use std::io::Write as _;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// Bodies smaller than this are sent as they are.
const MIN_BYTES: usize = 1024;
/// Largest body the middleware compresses (bigger ones go as they are).
const MAX_BYTES: usize = 64 << 20;

/// Whether the request accepts gzip.
pub fn accepts(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut parts = e.trim().split(';');
            let name = parts.next().unwrap_or_default().trim();
            let q_zero = parts.any(|p| p.trim().replace(' ', "") == "q=0");
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !q_zero
        })
}

/// `data` gzipped at `level` (1 fastest … 9 smallest).
pub fn compress(data: &[u8], level: u32) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::new(level),
    );
    // Writing to a Vec cannot fail.
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

/// Middleware: gzip a JSON response for a client that accepts it.
pub async fn json(req: Request, next: Next) -> Response {
    let wants = accepts(req.headers());
    let res = next.run(req).await;
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    // A body larger than the middleware buffers goes as it is.
    let too_big = axum::body::HttpBody::size_hint(res.body())
        .upper()
        .is_none_or(|n| n > MAX_BYTES as u64);
    if !wants || !is_json || too_big || res.headers().contains_key(header::CONTENT_ENCODING) {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BYTES).await else {
        parts.status = axum::http::StatusCode::INTERNAL_SERVER_ERROR;
        return Response::from_parts(parts, Body::from("response too large to send"));
    };
    parts
        .headers
        .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if bytes.len() < MIN_BYTES {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let gz = compress(&bytes, 1);
    parts
        .headers
        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(gz))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_is_read_as_browsers_send_it() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(v).expect("header"),
            );
            accepts(&m)
        };
        assert!(h("gzip, deflate, br, zstd"));
        assert!(h("br;q=1.0, gzip;q=0.8"));
        assert!(!h("br, zstd"));
        assert!(!h("gzip;q=0"));
        assert!(!accepts(&HeaderMap::new()));
    }

    #[test]
    fn compressed_bodies_decompress_to_the_original() {
        use std::io::Read as _;
        let data = "{\"values\":[1,2,3]}".repeat(500);
        let gz = compress(data.as_bytes(), 1);
        assert!(gz.len() < data.len() / 10, "{} of {}", gz.len(), data.len());
        let mut out = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut out)
            .expect("gunzip");
        assert_eq!(out, data);
    }
}
