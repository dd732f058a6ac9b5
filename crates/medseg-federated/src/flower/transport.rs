//! The Fleet API over HTTP, as the pinned Flower release serves it: each
//! call is a `POST /v1/fleet/<call>` whose body is the request's protobuf
//! (`application/protobuf`) and whose answer is the response's protobuf.
//! Every request carries the node's identity: its public key (PEM, base
//! 64), the current time, and an ECDSA (P-256, SHA-256) signature of that
//! time, which the SuperLink checks on every Fleet call.

use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64_022::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};

use super::proto;
use super::FlowerError;

/// Largest response body read (a pulled object is at most a 5 MiB chunk).
pub const MAX_RESPONSE: u64 = 64 << 20;

/// The node's key pair.
#[derive(Clone)]
pub struct NodeIdentity {
    key: SigningKey,
    public_pem: Vec<u8>,
}

impl NodeIdentity {
    /// A fresh key pair (a self-registering node).
    pub fn generate() -> Self {
        Self::from_key(SigningKey::random(&mut rand_core06::OsRng))
    }

    /// The key pair of a PKCS#8 PEM private key on the P-256 curve (for
    /// a SuperLink that admits only registered nodes).
    ///
    /// # Errors
    /// The file cannot be read, or is not such a key.
    pub fn from_pem_file(path: &std::path::Path) -> Result<Self, FlowerError> {
        let text = std::fs::read_to_string(path).map_err(|e| FlowerError::Config {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        let key = SigningKey::from_pkcs8_pem(&text).map_err(|e| FlowerError::Config {
            path: path.to_path_buf(),
            msg: format!("not a PKCS#8 PEM private key on P-256 (secp256r1): {e}"),
        })?;
        Ok(Self::from_key(key))
    }

    fn from_key(key: SigningKey) -> Self {
        let public_pem = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map(|s| s.into_bytes())
            .unwrap_or_default();
        NodeIdentity { key, public_pem }
    }

    /// The public key as the SuperLink stores it (SubjectPublicKeyInfo PEM).
    pub fn public_key(&self) -> &[u8] {
        &self.public_pem
    }

    /// The DER signature of `msg` (ECDSA with SHA-256).
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let sig: Signature = self.key.sign(msg);
        sig.to_der().as_bytes().to_vec()
    }
}

/// `t` as Python's `datetime.isoformat()` writes an aware UTC time:
/// `2026-12-05T12:00:19.123456+00:00`.
pub fn iso_utc(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil date from days since 1970-01-01 (Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60,
        d.subsec_micros()
    )
}

/// How the node reaches the SuperLink.
#[derive(Debug, Clone, PartialEq)]
pub enum Tls {
    /// Plain HTTP (`flower-superlink --insecure`).
    Insecure,
    /// HTTPS, the server's certificate checked against the usual public
    /// roots.
    PublicRoots,
    /// HTTPS, the server's certificate checked against the CA
    /// certificates of a PEM file (Flower's `--root-certificates`).
    RootCertificates(std::path::PathBuf),
}

fn tls_config(path: &std::path::Path) -> Result<std::sync::Arc<rustls::ClientConfig>, FlowerError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let err = |msg: String| FlowerError::Config {
        path: path.to_path_buf(),
        msg,
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(format!("cannot read PEM certificates: {e}")))?;
    for c in certs {
        let c = c.map_err(|e| err(format!("not a PEM certificate: {e}")))?;
        roots
            .add(c)
            .map_err(|e| err(format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(err("no certificate in the file".into()));
    }
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(cfg))
}

/// A Fleet API client for one SuperLink.
#[derive(Clone)]
pub struct FleetClient {
    base: String,
    agent: ureq::Agent,
    identity: NodeIdentity,
}

impl FleetClient {
    /// A client for the SuperLink at `address` (`HOST:PORT`).
    ///
    /// # Errors
    /// A root-certificates file that cannot be read or holds no CA
    /// certificate.
    pub fn new(
        address: &str,
        identity: NodeIdentity,
        timeout: Duration,
        tls: &Tls,
    ) -> Result<Self, FlowerError> {
        let mut b = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout(timeout);
        if let Tls::RootCertificates(p) = tls {
            b = b.tls_config(tls_config(p)?);
        }
        let scheme = if *tls == Tls::Insecure {
            "http"
        } else {
            "https"
        };
        Ok(FleetClient {
            base: format!("{scheme}://{}", address.trim_end_matches('/')),
            agent: b.build(),
            identity,
        })
    }

    /// The node's identity.
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// One Fleet call: `POST /v1/fleet/<call>` with `req`, decoding the
    /// answer as `R`.
    ///
    /// # Errors
    /// [`FlowerError::Transport`] when the SuperLink cannot be reached,
    /// [`FlowerError::Status`] when it answers with an HTTP error (its
    /// body, bounded, in the message), [`FlowerError::Content`] when the
    /// answer is not `R`.
    pub fn call<R: prost::Message + Default>(
        &self,
        call: &str,
        req: &impl prost::Message,
    ) -> Result<R, FlowerError> {
        let url = format!("{}/v1/fleet/{call}", self.base);
        let ts = iso_utc(SystemTime::now());
        let b64 = base64_022::engine::general_purpose::STANDARD;
        let resp = self
            .agent
            .post(&url)
            .set("content-type", "application/protobuf")
            .set("accept", "application/protobuf")
            .set("flwr-public-key", &b64.encode(self.identity.public_key()))
            .set("flwr-timestamp", &ts)
            .set(
                "flwr-signature",
                &b64.encode(self.identity.sign(ts.as_bytes())),
            )
            .send_bytes(&req.encode_to_vec());
        let resp = match resp {
            Ok(r) => r,
            Err(ureq::Error::Status(status, r)) => {
                let mut body = String::new();
                let _ = r.into_reader().take(4096).read_to_string(&mut body);
                return Err(FlowerError::Status {
                    call: call.to_string(),
                    status,
                    body,
                });
            }
            Err(ureq::Error::Transport(t)) => {
                return Err(FlowerError::Transport {
                    call: call.to_string(),
                    msg: t.to_string(),
                })
            }
        };
        let mut bytes = Vec::new();
        resp.into_reader()
            .take(MAX_RESPONSE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| FlowerError::Transport {
                call: call.to_string(),
                msg: e.to_string(),
            })?;
        if bytes.len() as u64 > MAX_RESPONSE {
            return Err(FlowerError::Content(format!(
                "{call}: answer larger than {MAX_RESPONSE} bytes"
            )));
        }
        R::decode(bytes.as_slice())
            .map_err(|e| FlowerError::Content(format!("{call}: undecodable answer: {e}")))
    }

    /// Registers the node's public key; returns the node ID.
    ///
    /// # Errors
    /// As [`FleetClient::call`].
    pub fn register_node(&self) -> Result<u64, FlowerError> {
        let r: proto::RegisterNodeFleetResponse = self.call(
            "register-node",
            &proto::RegisterNodeFleetRequest {
                public_key: self.identity.public_key().to_vec(),
            },
        )?;
        Ok(r.node_id)
    }

    /// Activates the node (it is then sampled by strategies); returns the
    /// node ID.
    ///
    /// # Errors
    /// As [`FleetClient::call`].
    pub fn activate_node(&self, heartbeat_interval: f64) -> Result<u64, FlowerError> {
        let r: proto::ActivateNodeResponse = self.call(
            "activate-node",
            &proto::ActivateNodeRequest {
                public_key: self.identity.public_key().to_vec(),
                heartbeat_interval,
            },
        )?;
        Ok(r.node_id)
    }

    /// Deactivates the node.
    ///
    /// # Errors
    /// As [`FleetClient::call`].
    pub fn deactivate_node(&self, node_id: u64) -> Result<(), FlowerError> {
        let _: proto::DeactivateNodeResponse =
            self.call("deactivate-node", &proto::DeactivateNodeRequest { node_id })?;
        Ok(())
    }

    /// Unregisters the node.
    ///
    /// # Errors
    /// As [`FleetClient::call`].
    pub fn unregister_node(&self, node_id: u64) -> Result<(), FlowerError> {
        let _: proto::UnregisterNodeFleetResponse = self.call(
            "unregister-node",
            &proto::UnregisterNodeFleetRequest { node_id },
        )?;
        Ok(())
    }

    /// Sends a heartbeat; `false` when the SuperLink does not know the node.
    ///
    /// # Errors
    /// As [`FleetClient::call`].
    pub fn heartbeat(&self, node_id: u64, interval: f64) -> Result<bool, FlowerError> {
        let r: proto::SendNodeHeartbeatResponse = self.call(
            "send-node-heartbeat",
            &proto::SendNodeHeartbeatRequest {
                node: Some(proto::Node { node_id }),
                heartbeat_interval: interval,
            },
        )?;
        Ok(r.success)
    }

    /// Pulls the next message for the node (at most one), with its object
    /// tree.
    ///
    /// # Errors
    /// As [`FleetClient::call`].
    pub fn pull_messages(&self, node_id: u64) -> Result<proto::PullMessagesResponse, FlowerError> {
        self.call(
            "pull-messages",
            &proto::PullMessagesRequest {
                node: Some(proto::Node { node_id }),
                message_ids: vec![],
            },
        )
    }

    /// Pushes a reply (its content as objects to follow); returns the IDs
    /// of the objects the SuperLink still needs and the session ID.
    ///
    /// # Errors
    /// As [`FleetClient::call`].
    pub fn push_messages(
        &self,
        req: &proto::PushMessagesRequest,
    ) -> Result<proto::PushMessagesResponse, FlowerError> {
        self.call("push-messages", req)
    }

    /// The run's description.
    ///
    /// # Errors
    /// As [`FleetClient::call`].
    pub fn get_run(&self, node_id: u64, run_id: u64) -> Result<proto::Run, FlowerError> {
        let r: proto::GetRunResponse = self.call(
            "get-run",
            &proto::GetRunRequest {
                node: Some(proto::Node { node_id }),
                run_id,
            },
        )?;
        r.run
            .ok_or_else(|| FlowerError::Content(format!("get-run: no run {run_id}")))
    }

    /// Pulls one object.
    ///
    /// # Errors
    /// As [`FleetClient::call`].
    pub fn pull_object(
        &self,
        node_id: u64,
        run_id: u64,
        object_id: &str,
    ) -> Result<proto::PullObjectResponse, FlowerError> {
        self.call(
            "pull-object",
            &proto::PullObjectRequest {
                node: Some(proto::Node { node_id }),
                run_id,
                object_id: object_id.to_string(),
            },
        )
    }

    /// Pushes one object of a reply.
    ///
    /// # Errors
    /// As [`FleetClient::call`].
    pub fn push_object(
        &self,
        node_id: u64,
        run_id: u64,
        session_id: &str,
        object_id: &str,
        content: Vec<u8>,
    ) -> Result<bool, FlowerError> {
        let r: proto::PushObjectResponse = self.call(
            "push-object",
            &proto::PushObjectRequest {
                node: Some(proto::Node { node_id }),
                run_id,
                object_id: object_id.to_string(),
                object_content: content,
                session_id: session_id.to_string(),
            },
        )?;
        Ok(r.stored)
    }

    /// Confirms that every object of a message arrived.
    ///
    /// # Errors
    /// As [`FleetClient::call`].
    pub fn confirm_message_received(
        &self,
        node_id: u64,
        run_id: u64,
        message_id: &str,
    ) -> Result<(), FlowerError> {
        let _: proto::ConfirmMessageReceivedResponse = self.call(
            "confirm-message-received",
            &proto::ConfirmMessageReceivedRequest {
                node: Some(proto::Node { node_id }),
                run_id,
                message_object_id: message_id.to_string(),
            },
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_time_matches_known_dates() {
        let t = UNIX_EPOCH + Duration::from_micros(1_780_000_000_123_456);
        assert_eq!(iso_utc(t), "2026-05-28T20:26:40.123456+00:00");
        assert_eq!(iso_utc(UNIX_EPOCH), "1970-01-01T00:00:00.000000+00:00");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(iso_utc(leap), "2000-02-29T00:00:00.000000+00:00");
    }

    #[test]
    fn signatures_verify_with_the_public_key() {
        use p256::ecdsa::signature::Verifier as _;
        use p256::pkcs8::DecodePublicKey;
        let id = NodeIdentity::generate();
        let pem = std::str::from_utf8(id.public_key()).unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        let vk = p256::ecdsa::VerifyingKey::from_public_key_pem(pem).unwrap();
        let sig = Signature::from_der(&id.sign(b"2026-12-05T12:00:00+00:00")).unwrap();
        assert!(vk.verify(b"2026-12-05T12:00:00+00:00", &sig).is_ok());
        assert!(vk.verify(b"2026-12-05T12:00:01+00:00", &sig).is_err());
    }
}
