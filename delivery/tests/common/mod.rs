#![allow(dead_code)] // each test binary uses part of the harness
//! Test harness: a fresh database of each backend for every test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use mlschat_delivery::certificate::NodeCertificate;
use mlschat_delivery::config::LimitsSection;
use mlschat_delivery::guard::rate;
use mlschat_delivery::run::transport;
use mlschat_delivery::server::{Node, NodeConfig, serve};
use mlschat_delivery::storage::Database;
use mlschat_wire::auth::Purpose;
use mlschat_wire::quic::Connection;
use mlschat_wire::token::client_id;
use mlschat_wire::*;
use openmls::prelude::{
    BasicCredential, Capabilities, Ciphersuite, CredentialWithKey, ExtensionType, KeyPackage,
    MlsMessageOut, tls_codec::Serialize as _,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::OpenMlsProvider as _;
use openmls_traits::signatures::Signer;

/// A new, empty database on the Postgres server named by `DATABASE_URL` (the README's test
/// command starts a throwaway one). Without it the test fails: it must not pass unchecked.
pub async fn fresh_postgres() -> Database {
    Database::postgres(&fresh_postgres_url().await, 80)
        .await
        .unwrap()
}

/// The URL of a new, empty database (see [`fresh_postgres`]).
pub async fn fresh_postgres_url() -> String {
    mlschat_testkit::fresh_postgres_url().await
}

/// Drops a database made by [`fresh_postgres_url`] (benchmarks fill gigabytes).
pub async fn drop_postgres(url: &str) {
    let (server, name) = url.rsplit_once('/').expect("a URL ending in /database");
    let admin_url = std::env::var("DATABASE_URL").unwrap_or(format!("{server}/postgres"));
    let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await
    .unwrap();
    admin.close().await;
}

/// A new SQLite database in a temporary directory that lives as long as the process.
pub async fn fresh_sqlite() -> Database {
    let dir = tempfile::tempdir().unwrap().keep();
    Database::sqlite(&dir.join("delivery.db")).await.unwrap()
}

/// A running node and what a client needs to reach it.
pub struct TestNode {
    pub addr: SocketAddr,
    pub fingerprint: [u8; 32],
    pub node: Arc<Node>,
    _endpoint: quinn::Endpoint,
}

/// A node with the default limits, but for registrations and connections per address: tests
/// connect many clients from one address.
pub async fn start_node() -> TestNode {
    start_node_with(roomy()).await
}

pub fn roomy() -> NodeConfig {
    let mut config = NodeConfig::default();
    config.guard.address_registrations = rate(100_000, 1000.0);
    config.guard.connections_per_address = 10_000;
    config
}

pub async fn start_node_with(config: NodeConfig) -> TestNode {
    let db = fresh_postgres().await;
    let cert = NodeCertificate::self_signed("localhost").unwrap();
    let mut server = cert.server_config().unwrap();
    server.transport_config(Arc::new(transport(&LimitsSection::default())));
    let endpoint = quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
    let node = Arc::new(Node::new(db, config));
    tokio::spawn(serve(endpoint.clone(), node.clone()));
    TestNode {
        addr: endpoint.local_addr().unwrap(),
        fingerprint: cert.fingerprint(),
        node,
        _endpoint: endpoint,
    }
}

pub fn error_code(response: &Response) -> Option<ErrorCode> {
    match response {
        Response::Error(e) => Some(e.code),
        _ => None,
    }
}

/// A test client: its MLS signature key (which is also its node identity) and a connection.
pub struct Client {
    pub signer: SignatureKeyPair,
    pub provider: OpenMlsRustCrypto,
    pub connection: Connection,
}

impl Client {
    pub async fn connect(addr: SocketAddr, fingerprint: [u8; 32]) -> Client {
        Self::connect_from("127.0.0.1", addr, fingerprint).await
    }

    /// Connects from `local`, one of the loopback addresses (127.0.0.0/8), as another host would.
    pub async fn connect_from(local: &str, addr: SocketAddr, fingerprint: [u8; 32]) -> Client {
        let local = SocketAddr::new(local.parse().unwrap(), 0);
        Client {
            signer: SignatureKeyPair::new(openmls::prelude::SignatureScheme::ED25519).unwrap(),
            provider: OpenMlsRustCrypto::default(),
            connection: Connection::connect_from(local, addr, fingerprint)
                .await
                .unwrap(),
        }
    }

    pub fn id(&self) -> ClientId {
        client_id(self.signer.public())
    }

    pub async fn raw(&self, bytes: &[u8]) -> Response {
        self.connection.raw(bytes).await.unwrap()
    }

    pub async fn request(&self, request: &Request) -> Response {
        self.connection.answer(request).await.unwrap()
    }

    /// The `Register` request for this connection (after a fresh challenge).
    pub async fn register_request(&self) -> Request {
        self.sign_register(b"").await
    }

    /// A `Register` request with an invite, after a fresh challenge.
    pub async fn sign_register(&self, invite: &[u8]) -> Request {
        let signature = self.sign(Purpose::Register, invite).await;
        Request::Register(Register {
            signature_key: self.signer.public().into(),
            invite: invite.into(),
            signature: signature.into(),
        })
    }

    /// Proves, on this connection, that we hold our key: as an already registered client.
    pub async fn authenticate(&self) {
        let signature = self.sign(Purpose::Authenticate, b"").await;
        let request = Request::Authenticate(Authenticate {
            signature_key: self.signer.public().into(),
            signature: signature.into(),
        });
        assert_eq!(
            self.request(&request).await,
            Response::Authenticated { client: self.id() }
        );
    }

    /// Gets a challenge and signs the transcript for this connection.
    async fn sign(&self, purpose: Purpose, invite: &[u8]) -> Vec<u8> {
        let key = self.signer.public();
        let sign = |transcript: &[u8]| self.signer.sign(transcript).unwrap();
        self.connection
            .sign_challenge(purpose, key, invite, sign)
            .await
            .unwrap()
    }

    pub async fn register(&self) {
        let request = self.register_request().await;
        assert_eq!(
            self.request(&request).await,
            Response::Authenticated { client: self.id() }
        );
    }

    /// Lets us send `invitee` a Welcome, as adding someone does: the invitee (registered on its
    /// connection) publishes a KeyPackage and we claim it. Returns a real Welcome to the
    /// claimed package, the only kind the node delivers.
    pub async fn claims_key_package_of(&self, invitee: &Client) -> tls_codec::VLBytes {
        let publish = Request::PublishKeyPackages(PublishKeyPackages {
            one_time: vec![invitee.key_package(&invitee.signer, false)],
            last_resort: b"".as_slice().into(),
        });
        assert_eq!(invitee.request(&publish).await, Response::Ok);
        let claim = Request::ClaimKeyPackage {
            owner: invitee.id(),
        };
        let Response::KeyPackage { key_package } = self.request(&claim).await else {
            panic!("the claim failed");
        };
        self.welcome_for(key_package.as_slice())
    }

    /// A Welcome into a new group of ours, to the KeyPackage `key_package` (an `MLSMessage`).
    pub fn welcome_for(&self, key_package: &[u8]) -> tls_codec::VLBytes {
        use openmls::prelude::{
            KeyPackageIn, MlsGroup, MlsGroupCreateConfig, MlsMessageBodyIn, MlsMessageIn,
            ProtocolVersion, tls_codec::Deserialize as _,
        };
        let MlsMessageBodyIn::KeyPackage(kp) = MlsMessageIn::tls_deserialize_exact(key_package)
            .unwrap()
            .extract()
        else {
            panic!("not a KeyPackage")
        };
        let kp: KeyPackageIn = kp;
        let kp = kp
            .validate(self.provider.crypto(), ProtocolVersion::Mls10)
            .unwrap();
        let credential = CredentialWithKey {
            credential: BasicCredential::new(b"committer/dev".to_vec()).into(),
            signature_key: self.signer.public().into(),
        };
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519)
            .capabilities(
                Capabilities::builder()
                    .extensions(vec![ExtensionType::LastResort])
                    .build(),
            )
            .build();
        let mut group = MlsGroup::new(&self.provider, &self.signer, &config, credential).unwrap();
        let (_, welcome, _) = group
            .add_members(&self.provider, &self.signer, &[kp])
            .unwrap();
        welcome.tls_serialize_detached().unwrap().into()
    }

    /// A KeyPackage signed by `signer` (ours, unless testing someone else's).
    pub fn key_package(&self, signer: &SignatureKeyPair, last_resort: bool) -> tls_codec::VLBytes {
        let credential = CredentialWithKey {
            credential: BasicCredential::new(b"someone/dev".to_vec()).into(),
            signature_key: signer.public().into(),
        };
        let capabilities = Capabilities::builder()
            .extensions(vec![ExtensionType::LastResort])
            .build();
        let mut builder = KeyPackage::builder().leaf_node_capabilities(capabilities);
        if last_resort {
            builder = builder.mark_as_last_resort();
        }
        let bundle = builder
            .build(
                Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519,
                &self.provider,
                signer,
                credential,
            )
            .unwrap();
        MlsMessageOut::from(bundle.key_package().clone())
            .tls_serialize_detached()
            .unwrap()
            .into()
    }
}

/// A running node process and where it listens.
pub struct NodeProcess {
    pub child: Child,
    pub quic: SocketAddr,
    pub admin: SocketAddr,
    pub fingerprint: [u8; 32],
    pub data_dir: std::path::PathBuf,
}

impl NodeProcess {
    /// Starts `mlschat-delivery` on free loopback ports with `env` added to its environment,
    /// and waits for the line that says where it listens.
    pub fn start(data_dir: &Path, database_url: &str, env: &[(&str, &str)]) -> NodeProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mlschat-delivery"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(["--database-url", database_url])
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(match std::env::var_os("MLSCHAT_NODE_LOG") {
                // For benchmarks: where the node's warnings go.
                Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
                None => Stdio::null(),
            })
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                .to_owned()
        };
        NodeProcess {
            quic: field("quic").parse().unwrap(),
            admin: field("admin").parse().unwrap(),
            fingerprint: hex::decode(field("fingerprint"))
                .unwrap()
                .try_into()
                .unwrap(),
            child,
            data_dir: data_dir.to_owned(),
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.quic, self.fingerprint).await
    }

    /// A request to the admin port as the operator sends it (Host by IP, the admin token);
    /// returns status line and body.
    pub fn admin(&self, method: &str, path: &str) -> (String, String) {
        let token = std::fs::read_to_string(self.data_dir.join("admin-token")).unwrap();
        let headers = format!(
            "Host: {}\r\nAuthorization: Bearer {}\r\n",
            self.admin,
            token.trim()
        );
        self.admin_with(method, path, &headers)
    }

    /// A plain HTTP/1.1 request to the admin port with these header lines (each ending in
    /// CRLF); returns status line and body.
    pub fn admin_with(&self, method: &str, path: &str, headers: &str) -> (String, String) {
        let mut stream = std::net::TcpStream::connect(self.admin).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response.lines().next().unwrap_or_default().to_owned();
        let body = response
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        (status, body)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh post id: every post of these tests is a new message, never a repeat.
#[allow(dead_code)] // not every test binary posts
pub fn post_id() -> mlschat_wire::PostId {
    let mut id = [0; 16];
    getrandom::fill(&mut id).expect("the OS random source is available");
    id
}
