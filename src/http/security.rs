//! Who may use the server (docs/design.md §11 "Security"): the token file
//! check at start-up, and the guard every request passes — the `Host`
//! header against DNS rebinding (421), the bearer token when one is set
//! (401, all but `/health`), and the CSRF token on every request that
//! changes something (403). No CORS header is ever sent, so a page on
//! another site can neither read an answer nor send the CSRF header.

use std::net::SocketAddr;
use std::path::Path;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::routes::{AppState, error_response};

/// The header that carries the CSRF token.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// The bearer token of `token_file`, checked: a non-loopback `listen`
/// needs one, and the file must be readable by its owner only.
pub(super) fn load_token(
    listen: SocketAddr,
    token_file: Option<&Path>,
) -> anyhow::Result<Option<String>> {
    let Some(path) = token_file else {
        if listen.ip().is_loopback() {
            return Ok(None);
        }
        anyhow::bail!(
            "[http] listen = \"{listen}\" is not a loopback address, so it needs [http] \
             token_file: a file of mode 0600 holding the bearer token clients must send \
             (or listen on 127.0.0.1)"
        );
    };
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|error| {
        anyhow::anyhow!(
            "cannot read [http] token_file {shown}: {error}; create it with a long random \
             token and chmod 600"
        )
    })?;
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "[http] token_file {shown} has mode {mode:04o}: others can read the token; \
             run chmod 600 {shown}"
        );
    }
    let token = std::fs::read_to_string(path)
        .map_err(|error| anyhow::anyhow!("cannot read [http] token_file {shown}: {error}"))?;
    let token = token.trim();
    if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        anyhow::bail!(
            "[http] token_file {shown} must hold one token of at least 16 characters \
             without spaces (e.g. the output of `openssl rand -hex 32`)"
        );
    }
    Ok(Some(token.to_owned()))
}

/// The `Host` values accepted: the bound address, `localhost` and
/// `127.0.0.1` (and `[::1]`) with the bound port, and the configured
/// names (with or without a port).
pub(super) fn accepted_hosts(bound: SocketAddr, allowed: &[String]) -> Vec<String> {
    let port = bound.port();
    let mut hosts = vec![
        bound.to_string(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ];
    for host in allowed {
        let host = host.trim().to_ascii_lowercase();
        if host.contains(':') && !host.ends_with(']') {
            hosts.push(host);
        } else {
            hosts.push(format!("{host}:{port}"));
            hosts.push(host);
        }
    }
    hosts
}

/// The guard in front of every route.
pub(super) async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(refusal) = refusal(
        &state,
        request.method(),
        request.uri().path(),
        request.headers(),
    ) {
        return refusal;
    }
    next.run(request).await
}

/// The checks of [`guard`], in order: Host, bearer, CSRF; the answer of
/// the first that fails.
fn refusal(state: &AppState, method: &Method, path: &str, headers: &HeaderMap) -> Option<Response> {
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_ascii_lowercase);
    let host_ok = host
        .as_deref()
        .is_some_and(|host| state.allowed_hosts.iter().any(|allowed| allowed == host));
    if !host_ok {
        return Some(error_response(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "Host {:?} is not this server's address; add it to [http] allowed_hosts if you \
                 reach ralphd under that name",
                host.unwrap_or_default()
            ),
        ));
    }
    if let Some(token) = &state.bearer_token
        && path != "/health"
    {
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        if !sent.is_some_and(|sent| same_secret(sent, token)) {
            let mut response = error_response(
                StatusCode::UNAUTHORIZED,
                "this server needs `Authorization: Bearer <token>` (the token of [http] token_file)"
                    .to_owned(),
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("static header"),
            );
            return Some(response);
        }
    }
    if !matches!(*method, Method::GET | Method::HEAD) {
        let sent = headers
            .get(CSRF_HEADER)
            .and_then(|value| value.to_str().ok());
        if !sent.is_some_and(|sent| same_secret(sent, &state.csrf_token)) {
            return Some(error_response(
                StatusCode::FORBIDDEN,
                "missing or wrong X-CSRF-Token (the page and `ralphd pause|resume|stop` send it)"
                    .to_owned(),
            ));
        }
    }
    None
}

/// Compares two secrets in time independent of where they differ.
fn same_secret(sent: &str, secret: &str) -> bool {
    let (sent, secret) = (sent.as_bytes(), secret.as_bytes());
    sent.len() == secret.len()
        && sent
            .iter()
            .zip(secret)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// A fresh random token (32 hex digits) from the OS's random source.
pub(super) fn random_token() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut file| file.read_exact(&mut bytes));
    if read.is_err() {
        // No /dev/urandom (a strange chroot): still unpredictable enough to a
        // page on another site, which cannot observe this process.
        let mut rng = fastrand::Rng::new();
        rng.fill(&mut bytes);
    }
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_by_content_and_length() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abd", "abc"));
        assert!(!same_secret("ab", "abc"));
        assert!(!same_secret("", "abc"));
    }

    #[test]
    fn the_bound_address_localhost_and_configured_names_are_accepted_hosts() {
        let hosts = accepted_hosts(
            "127.0.0.1:4000".parse().unwrap(),
            &["Ralph.example.org".to_owned(), "proxy:8443".to_owned()],
        );
        for host in [
            "127.0.0.1:4000",
            "localhost:4000",
            "ralph.example.org",
            "ralph.example.org:4000",
            "proxy:8443",
        ] {
            assert!(hosts.iter().any(|h| h == host), "{host} in {hosts:?}");
        }
        assert!(!hosts.iter().any(|h| h == "evil.example:4000"));
        assert!(!hosts.iter().any(|h| h == "localhost:4001"));
    }

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
