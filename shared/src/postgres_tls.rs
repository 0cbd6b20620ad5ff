//! `DATABASE_URL` as libpq reads it, TLS included: one [`Database`] for every Postgres
//! connection the binary makes (the CDC's replication session and its plain connections, the
//! gateway's pool, the CLI).
//!
//! Managed Postgres services accept only TLS connections, and their URLs say so with libpq's
//! `sslmode` and `sslrootcert`. tokio-postgres knows `sslmode=disable|prefer|require` only,
//! refuses `verify-ca`, `verify-full` and `sslrootcert` as unknown options, and leaves TLS itself
//! to a connector. So [`Database::parse`] takes both parameters out of the URL (URL and
//! `key=value` forms) before tokio-postgres sees it, and turns them into a [`TlsPolicy`] with
//! libpq's semantics:
//!
//! | `sslmode`            | TLS                          | certificate check                   |
//! |----------------------|------------------------------|-------------------------------------|
//! | `disable`            | never                        | —                                   |
//! | `allow`, `prefer` (default) | if the server offers it | none, or the chain when a root certificate is there |
//! | `require`            | always                       | none, or the chain when a root certificate is there |
//! | `verify-ca`          | always                       | chain against the root certificates |
//! | `verify-full`        | always                       | chain, and the host name (or IP)    |
//!
//! The root certificates are `sslrootcert` (a PEM file), else `~/.postgresql/root.crt` when it
//! exists, as in libpq; `sslrootcert=system` means the operating system's roots and, as in libpq
//! 16, implies `verify-full`. Unix-socket connections stay plain (Postgres has no TLS there).
//!
//! TLS is rustls on ring, which the build already has for NATS. tokio-postgres gets it through
//! [`MakeRustlsConnect`] (what [`Database::connect`] uses); the CDC's own replication client
//! calls [`TlsPolicy::negotiate`] on its TCP stream, which does the `SSLRequest` exchange and the
//! handshake. The connector is ours rather than the `tokio-postgres-rustls` crate's: that crate
//! brings sha2 and an X.509 parser for SCRAM channel binding, and the replication client needs
//! the same rustls configuration without tokio-postgres anyway. Channel binding is not offered
//! (SCRAM runs as it does without TLS; the server's certificate check is what TLS adds).

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_postgres::config::Host;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

/// libpq's `sslmode`, as asked for (`allow` reads as [`SslMode::Prefer`]: TLS when offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// The `sslmode` value (`allow` is not kept apart).
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl FromStr for SslMode {
    type Err = DatabaseUrlError;

    fn from_str(s: &str) -> Result<SslMode, DatabaseUrlError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => return Err(DatabaseUrlError::SslMode(other.to_string())),
        })
    }
}

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Nothing: the connection is encrypted, the server not authenticated.
    None,
    /// The chain up to a root certificate (verify-ca).
    Chain,
    /// The chain and the host name (verify-full).
    Full,
}

/// A `DATABASE_URL` that cannot be used; each message names the fix.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseUrlError {
    #[error("DATABASE_URL is not a valid Postgres URL ({0}); use postgres://user:password@host:5432/dbname")]
    Invalid(String),
    #[error("DATABASE_URL has sslmode={0:?}; use disable, allow, prefer, require, verify-ca or verify-full")]
    SslMode(String),
    #[error("cannot read sslrootcert {path} ({source}); point sslrootcert at a readable PEM file of the server's CA certificate(s)")]
    RootCertUnreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("sslrootcert {path} holds no usable PEM certificate ({reason}); point sslrootcert at the server's CA certificate(s) in PEM form")]
    RootCertEmpty { path: PathBuf, reason: String },
    #[error("sslmode={mode} checks the server's certificate against a root certificate, and there is none: add sslrootcert=/path/to/ca.crt (or sslrootcert=system for the system's roots) to DATABASE_URL, or create {default}")]
    NoRootCert { mode: &'static str, default: String },
    #[error("sslrootcert=system needs sslmode=verify-full (as in libpq); remove sslmode or set it to verify-full")]
    SystemNeedsVerifyFull,
    #[error("sslrootcert=system: no root certificates found on this system ({0}); install the CA certificates package or give sslrootcert=/path/to/ca.crt")]
    NoSystemRoots(String),
    #[error(
        "DATABASE_URL has {0}: client certificates are not supported; authenticate with a password"
    )]
    ClientCertificate(&'static str),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// A TLS connection that could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the server does not accept TLS connections (it answered the SSLRequest with N) but sslmode={0} requires TLS; enable ssl on the server, or use sslmode=prefer")]
    NotOffered(&'static str),
    #[error("the server answered the SSLRequest with {0:?}, not S or N")]
    UnexpectedAnswer(char),
    #[error("{0:?} is not a host name or IP address TLS can check a certificate against")]
    InvalidHostName(String),
    #[error("TLS needs a host name: give host= (not only a Unix socket or hostaddr)")]
    NoHostName,
    #[error(
        "TLS handshake with {host} failed: {source}; check sslmode and sslrootcert in DATABASE_URL"
    )]
    Handshake {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("TLS was attempted with sslmode=disable")]
    Disabled,
    #[error("sending the SSLRequest: {0}")]
    Io(#[from] io::Error),
}

/// What `sslmode` and the root certificates decided: whether to ask for TLS, whether to insist,
/// and the rustls configuration that checks the server.
#[derive(Clone)]
pub struct TlsPolicy {
    mode: SslMode,
    verification: Verification,
    /// `None` for `sslmode=disable`.
    client: Option<Arc<ClientConfig>>,
}

impl fmt::Debug for TlsPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsPolicy")
            .field("mode", &self.mode)
            .field("verification", &self.verification)
            .finish()
    }
}

/// Where the root certificates come from.
enum Roots {
    File(PathBuf),
    System,
}

impl TlsPolicy {
    /// No TLS (`sslmode=disable`).
    pub fn disabled() -> TlsPolicy {
        TlsPolicy {
            mode: SslMode::Disable,
            verification: Verification::None,
            client: None,
        }
    }

    /// The policy for `sslmode` and `sslrootcert` (both optional), with libpq's defaults:
    /// `prefer`, and `~/.postgresql/root.crt` when it exists.
    pub fn new(
        mode: Option<SslMode>,
        root_cert: Option<&str>,
    ) -> Result<TlsPolicy, DatabaseUrlError> {
        TlsPolicy::with_default_root(mode, root_cert, default_root_cert())
    }

    /// [`TlsPolicy::new`] with `default` in place of `~/.postgresql/root.crt`.
    fn with_default_root(
        mode: Option<SslMode>,
        root_cert: Option<&str>,
        default: Option<PathBuf>,
    ) -> Result<TlsPolicy, DatabaseUrlError> {
        let system = root_cert == Some("system");
        let mode = match mode {
            Some(SslMode::VerifyFull) | None if system => SslMode::VerifyFull,
            Some(_) if system => return Err(DatabaseUrlError::SystemNeedsVerifyFull),
            Some(mode) => mode,
            None => SslMode::Prefer,
        };
        if mode == SslMode::Disable {
            return Ok(TlsPolicy::disabled());
        }
        let roots = match root_cert {
            Some("system") => Some(Roots::System),
            Some(path) if !path.is_empty() => Some(Roots::File(PathBuf::from(path))),
            // libpq: a missing default file is no error unless a verify mode needs it.
            _ => default
                .as_ref()
                .filter(|p| p.exists())
                .cloned()
                .map(Roots::File),
        };
        let verification = match (mode, &roots) {
            (SslMode::VerifyFull, Some(_)) => Verification::Full,
            // With a root certificate, libpq checks the chain in prefer and require too.
            (_, Some(_)) => Verification::Chain,
            (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
                return Err(DatabaseUrlError::NoRootCert {
                    mode: mode.as_str(),
                    default: default.map_or_else(
                        || "~/.postgresql/root.crt".into(),
                        |p| p.display().to_string(),
                    ),
                })
            }
            _ => Verification::None,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let mut client = match roots {
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth(),
            Some(roots) => {
                let roots = Arc::new(load_roots(&roots)?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| DatabaseUrlError::Tls(rustls::Error::General(e.to_string())))?;
                if verification == Verification::Full {
                    builder.with_webpki_verifier(webpki).with_no_client_auth()
                } else {
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
                        .with_no_client_auth()
                }
            }
        };
        // What libpq 17 sends; required by servers that take direct TLS, ignored by older ones.
        client.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(TlsPolicy {
            mode,
            verification,
            client: Some(Arc::new(client)),
        })
    }

    /// The `sslmode` in force.
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// How much of the server's certificate is checked.
    pub fn verification(&self) -> Verification {
        self.verification
    }

    /// tokio-postgres' `sslmode`: whether to ask for TLS and whether to insist.
    pub fn tokio_postgres_mode(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        }
    }

    /// The connector for `tokio_postgres::Config::connect`.
    pub fn connector(&self) -> MakeRustlsConnect {
        MakeRustlsConnect {
            client: self.client.clone(),
        }
    }

    /// For a client speaking the protocol itself (the replication connection): on a fresh TCP
    /// `stream` to `host`, sends the `SSLRequest` unless TLS is disabled and, when the server
    /// answers `S`, does the TLS handshake. An `N` means plain for `prefer` and an error for
    /// every mode that requires TLS. The startup message follows on what this returns.
    pub async fn negotiate<S>(&self, mut stream: S, host: &str) -> Result<Negotiated<S>, TlsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(client) = &self.client else {
            return Ok(Negotiated::Plain(stream));
        };
        // SSLRequest: length 8, then the code 1234.5679.
        stream
            .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
            .await?;
        stream.flush().await?;
        let answer = stream.read_u8().await?;
        match answer {
            b'S' => {}
            b'N' if self.mode == SslMode::Prefer => return Ok(Negotiated::Plain(stream)),
            b'N' => return Err(TlsError::NotOffered(self.mode.as_str())),
            other => return Err(TlsError::UnexpectedAnswer(other as char)),
        }
        let stream = handshake(client.clone(), host, stream).await?;
        Ok(Negotiated::Tls(Box::new(stream)))
    }
}

/// A TLS connection over `S` (the client side of tokio-rustls).
pub use tokio_rustls::client::TlsStream;

/// A stream after [`TlsPolicy::negotiate`].
#[derive(Debug)]
pub enum Negotiated<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
}

async fn handshake<S>(
    client: Arc<ClientConfig>,
    host: &str,
    stream: S,
) -> Result<tokio_rustls::client::TlsStream<S>, TlsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if host.is_empty() {
        return Err(TlsError::NoHostName);
    }
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| TlsError::InvalidHostName(host.to_string()))?;
    tokio_rustls::TlsConnector::from(client)
        .connect(name, stream)
        .await
        .map_err(|source| TlsError::Handshake {
            host: host.to_string(),
            source,
        })
}

/// libpq's default root certificate file, `~/.postgresql/root.crt`.
fn default_root_cert() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(Path::new(&home).join(".postgresql").join("root.crt"))
}

fn load_roots(roots: &Roots) -> Result<RootCertStore, DatabaseUrlError> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
                return Err(DatabaseUrlError::NoSystemRoots(if errors.is_empty() {
                    "none installed".into()
                } else {
                    errors.join("; ")
                }));
            }
        }
        Roots::File(path) => {
            let pem =
                std::fs::read(path).map_err(|source| DatabaseUrlError::RootCertUnreadable {
                    path: path.clone(),
                    source,
                })?;
            let empty = |reason: String| DatabaseUrlError::RootCertEmpty {
                path: path.clone(),
                reason,
            };
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| empty(e.to_string()))?;
            if certs.is_empty() {
                return Err(empty("no BEGIN CERTIFICATE block".into()));
            }
            for cert in certs {
                store.add(cert).map_err(|e| empty(e.to_string()))?;
            }
        }
    }
    Ok(store)
}

/// `prefer` and `require` without a root certificate: encryption only, as in libpq. The
/// handshake signature is still checked (it proves the server holds the certificate's key).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// verify-ca: the chain must lead to a root certificate; the name in it does not matter.
/// webpki checks the name after the chain, so "not valid for this name" means the chain is good.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// tokio-postgres' side of the policy: a connector per host (`MakeTlsConnect`).
#[derive(Clone)]
pub struct MakeRustlsConnect {
    client: Option<Arc<ClientConfig>>,
}

impl<S> MakeTlsConnect<S> for MakeRustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = TlsError;

    /// Called for every host, `""` for a Unix socket, whatever the `sslmode`: a name TLS cannot
    /// use is only an error once TLS is attempted.
    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, TlsError> {
        Ok(RustlsConnect {
            client: self.client.clone(),
            host: domain.to_string(),
        })
    }
}

/// The connector for one host.
pub struct RustlsConnect {
    client: Option<Arc<ClientConfig>>,
    host: String,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = TlsError;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream<S>, TlsError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            // tokio-postgres only gets here with a mode other than disable, which always has a
            // client configuration; the check keeps that an error rather than a panic.
            let client = self.client.ok_or(TlsError::Disabled)?;
            Ok(RustlsStream(handshake(client, &self.host, stream).await?))
        })
    }
}

/// A TLS connection to Postgres for tokio-postgres.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// A Postgres to connect to: tokio-postgres' settings and the TLS policy. This is what
/// `DATABASE_URL` becomes everywhere in the binary.
#[derive(Clone)]
pub struct Database {
    config: tokio_postgres::Config,
    tls: TlsPolicy,
}

/// The connection half tokio-postgres hands back, to be polled (spawned) by the caller.
pub type Connection =
    tokio_postgres::Connection<tokio_postgres::Socket, RustlsStream<tokio_postgres::Socket>>;

impl fmt::Debug for Database {
    /// tokio-postgres' `Debug` leaves the password out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("config", &self.config)
            .field("tls", &self.tls)
            .finish()
    }
}

impl FromStr for Database {
    type Err = DatabaseUrlError;

    fn from_str(url: &str) -> Result<Database, DatabaseUrlError> {
        Database::parse(url)
    }
}

impl Database {
    /// Reads a `DATABASE_URL` (`postgres://…?sslmode=…&sslrootcert=…` or
    /// `host=… sslmode=…`); the certificate file is read here, so a bad one fails at start-up.
    pub fn parse(url: &str) -> Result<Database, DatabaseUrlError> {
        let (rest, mode, root_cert) = take_tls_parameters(url)?;
        let mut config: tokio_postgres::Config = rest
            .parse()
            .map_err(|e: tokio_postgres::Error| DatabaseUrlError::Invalid(e.to_string()))?;
        let tls = TlsPolicy::new(mode, root_cert.as_deref())?;
        config.ssl_mode(tls.tokio_postgres_mode());
        // hostaddr alone: the address is also the name TLS checks (and tokio-postgres needs one).
        if config.get_hosts().is_empty() {
            let addrs: Vec<String> = config
                .get_hostaddrs()
                .iter()
                .map(|a| a.to_string())
                .collect();
            for addr in addrs {
                config.host(&addr);
            }
        }
        Ok(Database { config, tls })
    }

    /// A config built in code, with the TLS its `ssl_mode` says (tokio-postgres' modes:
    /// disable, prefer, require) and no certificate check: no root certificate is read.
    pub fn from_config(config: tokio_postgres::Config) -> Database {
        let mode = match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => SslMode::Disable,
            tokio_postgres::config::SslMode::Require => SslMode::Require,
            _ => SslMode::Prefer,
        };
        let tls = TlsPolicy::with_default_root(Some(mode), None, None).expect(
            "without root certificates only the protocol versions can fail, and ring has them",
        );
        Database { config, tls }
    }

    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// For settings such as `application_name`; TLS stays as parsed.
    pub fn config_mut(&mut self) -> &mut tokio_postgres::Config {
        &mut self.config
    }

    pub fn tls(&self) -> &TlsPolicy {
        &self.tls
    }

    /// Connects as `tokio_postgres::Config::connect` does, with TLS per the policy. Only Unix
    /// sockets: plain, as libpq does (Postgres has no TLS on them).
    pub async fn connect(
        &self,
    ) -> Result<(tokio_postgres::Client, Connection), tokio_postgres::Error> {
        let unix_only = self.config.get_hostaddrs().is_empty()
            && !self.config.get_hosts().is_empty()
            && self
                .config
                .get_hosts()
                .iter()
                .all(|h| !matches!(h, Host::Tcp(_)));
        if unix_only && self.tls.mode != SslMode::Disable {
            let mut plain = self.config.clone();
            plain.ssl_mode(tokio_postgres::config::SslMode::Disable);
            return plain.connect(self.tls.connector()).await;
        }
        self.config.connect(self.tls.connector()).await
    }
}

/// Splits `sslmode` and `sslrootcert` off a connection string, returning the rest for
/// tokio-postgres. Both forms are handled: a URL's query (percent-encoded) and `key=value` pairs
/// (values may be single-quoted with backslash escapes).
fn take_tls_parameters(
    url: &str,
) -> Result<(String, Option<SslMode>, Option<String>), DatabaseUrlError> {
    let mut mode = None;
    let mut root_cert = None;
    let mut take = |key: &str, value: String| -> Result<bool, DatabaseUrlError> {
        match key {
            "sslmode" => mode = Some(value.parse::<SslMode>()?),
            "sslrootcert" => root_cert = Some(value),
            "sslcert" => return Err(DatabaseUrlError::ClientCertificate("sslcert")),
            "sslkey" => return Err(DatabaseUrlError::ClientCertificate("sslkey")),
            _ => return Ok(false),
        }
        Ok(true)
    };
    let trimmed = url.trim();
    let rest = if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        match trimmed.split_once('?') {
            None => trimmed.to_string(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    if !take(&percent_decode(key)?, percent_decode(value)?)? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for (key, value) in key_value_pairs(trimmed)? {
            if !take(&key, value.clone())? {
                let escaped = value.replace('\\', "\\\\").replace('\'', "\\'");
                kept.push(format!("{key}='{escaped}'"));
            }
        }
        kept.join(" ")
    };
    Ok((rest, mode, root_cert))
}

fn percent_decode(text: &str) -> Result<String, DatabaseUrlError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    DatabaseUrlError::Invalid(format!("bad percent-encoding in {text:?}"))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| DatabaseUrlError::Invalid(format!("{text:?} is not UTF-8")))
}

/// The pairs of a `key=value key2='quoted value'` string, as libpq reads it.
fn key_value_pairs(text: &str) -> Result<Vec<(String, String)>, DatabaseUrlError> {
    let invalid = |why: &str| DatabaseUrlError::Invalid(why.to_string());
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(invalid(&format!("expected = after {key:?}")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(invalid(&format!("unterminated quoted value of {key:?}"))),
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parameters_are_taken_out() {
        let (rest, mode, root) = take_tls_parameters(
            "postgres://u:p@db.example.com:5432/app?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u:p@db.example.com:5432/app?application_name=x"
        );
        assert_eq!(mode, Some(SslMode::VerifyFull));
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));
        let (rest, _, _) = take_tls_parameters("postgresql://h/db?sslmode=require").unwrap();
        assert_eq!(rest, "postgresql://h/db");
    }

    #[test]
    fn key_value_parameters_are_taken_out() {
        let (rest, mode, root) = take_tls_parameters(
            "host=db port = 5432 sslmode=verify-ca sslrootcert='/a b/c\\'s.pem' password='x y'",
        )
        .unwrap();
        assert_eq!(rest, "host='db' port='5432' password='x y'");
        assert_eq!(mode, Some(SslMode::VerifyCa));
        assert_eq!(root.as_deref(), Some("/a b/c's.pem"));
        let config: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(config.get_password(), Some(&b"x y"[..]));
    }

    #[test]
    fn modes_map_to_tokio_postgres() {
        use tokio_postgres::config::SslMode as T;
        for (url, mode) in [
            ("postgres://u@h/db", T::Prefer),
            ("postgres://u@h/db?sslmode=disable", T::Disable),
            ("postgres://u@h/db?sslmode=allow", T::Prefer),
            ("postgres://u@h/db?sslmode=prefer", T::Prefer),
            ("postgres://u@h/db?sslmode=require", T::Require),
        ] {
            let db = Database::parse(url).unwrap();
            assert_eq!(db.config().get_ssl_mode(), mode, "{url}");
        }
    }

    #[test]
    fn bad_values_name_the_fix() {
        let e = Database::parse("postgres://u@h/db?sslmode=always").unwrap_err();
        assert!(
            matches!(e, DatabaseUrlError::SslMode(ref m) if m == "always"),
            "{e}"
        );
        assert!(e.to_string().contains("verify-full"));

        let e =
            Database::parse("postgres://u@h/db?sslmode=require&sslrootcert=/nonexistent/ca.crt")
                .unwrap_err();
        assert!(
            matches!(e, DatabaseUrlError::RootCertUnreadable { .. }),
            "{e}"
        );

        let empty = std::env::temp_dir().join(format!("empty-root-{}.crt", std::process::id()));
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = Database::parse(&format!(
            "host=h user=u sslmode=verify-ca sslrootcert={}",
            empty.display()
        ))
        .unwrap_err();
        std::fs::remove_file(&empty).unwrap();
        assert!(matches!(e, DatabaseUrlError::RootCertEmpty { .. }), "{e}");

        let e =
            Database::parse("postgres://u@h/db?sslmode=verify-ca&sslrootcert=system").unwrap_err();
        assert!(matches!(e, DatabaseUrlError::SystemNeedsVerifyFull), "{e}");

        let e = Database::parse("postgres://u@h/db?sslcert=/c.pem").unwrap_err();
        assert!(
            matches!(e, DatabaseUrlError::ClientCertificate("sslcert")),
            "{e}"
        );
    }

    #[test]
    fn verify_modes_need_a_root_certificate() {
        // As if ~/.postgresql/root.crt did not exist.
        let missing = Some(PathBuf::from("/nonexistent/.postgresql/root.crt"));
        let e = TlsPolicy::with_default_root(Some(SslMode::VerifyFull), None, missing.clone())
            .unwrap_err();
        assert!(
            matches!(
                e,
                DatabaseUrlError::NoRootCert {
                    mode: "verify-full",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("sslrootcert="), "{e}");
        let require = TlsPolicy::with_default_root(Some(SslMode::Require), None, missing).unwrap();
        assert_eq!(require.verification(), Verification::None);
        assert_eq!(require.mode(), SslMode::Require);
    }

    #[test]
    fn hostaddr_alone_is_the_tls_name() {
        let db = Database::parse("hostaddr=127.0.0.1 user=u sslmode=require").unwrap();
        assert_eq!(db.config().get_hosts(), &[Host::Tcp("127.0.0.1".into())]);
    }
}
