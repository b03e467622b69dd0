//! X-Road's message metadata on every agency call (after the X-Road message protocol for
//! REST): who calls (`X-Road-Client`, this node's member and subsystem), which service
//! (`X-Road-Service`: the agency, the operation, its version), the message's id (`X-Road-Id`,
//! the attempt's), the citizen it is for (`X-Road-UserId`, a pseudonym, where the workflow
//! names one) and the case (`X-Road-Issue`, the dossier number). The agency answers with
//! `X-Road-Request-Hash`, the hash of the request it received: a reply whose hash is not the
//! hash of what was sent answers another request, or a changed one.

use base64::Engine as _;
use sha2::{Digest, Sha256, Sha512};

pub const CLIENT: &str = "x-road-client";
pub const SERVICE: &str = "x-road-service";
pub const ID: &str = "x-road-id";
pub const USER_ID: &str = "x-road-userid";
pub const ISSUE: &str = "x-road-issue";
pub const REQUEST_HASH: &str = "x-road-request-hash";

/// This node's X-Road identity unless configured: instance `VN`, member class `GOV`, member
/// `CIVICFLOW`, subsystem `orchestrator`.
pub const DEFAULT_CLIENT: &str = "VN/GOV/CIVICFLOW/orchestrator";

/// Whether `client` reads as `INSTANCE/CLASS/MEMBER/SUBSYSTEM`.
pub fn valid_client(client: &str) -> bool {
    let parts: Vec<&str> = client.split('/').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_graphic()))
}

/// The service an adapter (`agency/operation@version`) is, under the client's instance and
/// member class: `VN/GOV/civil-status/birth-registration/v1`.
pub fn service(client: &str, adapter: &str) -> String {
    let mut parts = client.split('/');
    let (instance, class) = (parts.next().unwrap_or("VN"), parts.next().unwrap_or("GOV"));
    let (path, version) = adapter.split_once('@').unwrap_or((adapter, "1"));
    format!("{instance}/{class}/{path}/v{version}")
}

/// The hash of a request as both sides compute it: SHA-512, base64, of the method, the
/// request target (path and query, as sent), the message id and the body, one per line.
pub fn request_hash(method: &str, target: &str, id: &str, body: &[u8]) -> String {
    let mut h = Sha512::new();
    h.update(method.as_bytes());
    h.update(b" ");
    h.update(target.as_bytes());
    h.update(b"\n");
    h.update(id.as_bytes());
    h.update(b"\n");
    h.update(body);
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// The hash of a reply's body, as the audit log keeps it: SHA-256, hex.
pub fn reply_hash(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_is_named_under_the_clients_instance_and_class() {
        assert!(valid_client(DEFAULT_CLIENT));
        assert!(!valid_client("VN/GOV/CIVICFLOW"));
        assert!(!valid_client("VN//CIVICFLOW/x"));
        assert_eq!(
            service(DEFAULT_CLIENT, "civil-status/birth-registration@1"),
            "VN/GOV/civil-status/birth-registration/v1"
        );
    }

    #[test]
    fn the_request_hash_covers_method_target_id_and_body() {
        let base = request_hash("POST", "/v1/x", "m1", b"{}");
        assert_eq!(base.len(), 88, "SHA-512 in base64");
        assert_ne!(base, request_hash("PUT", "/v1/x", "m1", b"{}"));
        assert_ne!(base, request_hash("POST", "/v1/y", "m1", b"{}"));
        assert_ne!(base, request_hash("POST", "/v1/x", "m2", b"{}"));
        assert_ne!(base, request_hash("POST", "/v1/x", "m1", b"{ }"));
    }
}
