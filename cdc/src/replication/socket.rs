//! The byte stream under the protocol: a TCP or a Unix-domain socket, chosen from the hosts of a
//! `tokio_postgres::Config`, with TLS on TCP as `sslmode` says.
//!
//! A host that is a directory path means the server's Unix socket `<dir>/.s.PGSQL.<port>`, as in
//! libpq. Hosts are tried in order with their port (one port for all hosts, or one per host) and
//! the first that accepts a connection wins. On TCP, [`TlsPolicy::negotiate`] (shared with every
//! other Postgres connection of the binary) does the `SSLRequest` and the handshake, checking
//! the certificate against the host name (or `hostaddr` when there is no name); a Unix socket
//! stays plain, as in libpq.

use super::error::ReplicationError;
use nself_realtime_shared::postgres_tls::{Negotiated, TlsPolicy, TlsStream};
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::config::Host;

/// Postgres' default port.
const DEFAULT_PORT: u16 = 5432;
/// Where Debian's (and most distributions') Postgres puts its socket; libpq's default host.
const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// `name` is what TLS checks the certificate against: the host name, which `hostaddr` (an
    /// address to connect to instead of resolving it) does not replace.
    Tcp {
        host: String,
        port: u16,
        name: String,
    },
    Unix {
        path: PathBuf,
    },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp { host, port, .. } => write!(f, "{host}:{port}"),
            Target::Unix { path } => write!(f, "{}", path.display()),
        }
    }
}

/// The targets of a config, in the order to try them.
pub(crate) fn targets(config: &tokio_postgres::Config) -> Result<Vec<Target>, ReplicationError> {
    let ports = config.get_ports();
    let port_for = |i: usize, count: usize| -> Result<u16, ReplicationError> {
        match ports.len() {
            0 => Ok(DEFAULT_PORT),
            1 => Ok(ports[0]),
            n if n == count => Ok(ports[i]),
            n => Err(ReplicationError::Config(format!(
                "{n} ports for {count} hosts: give one port, or one per host"
            ))),
        }
    };
    let addrs: &[IpAddr] = config.get_hostaddrs();
    let hosts = config.get_hosts();
    if !addrs.is_empty() {
        // hostaddr skips name resolution, as in libpq.
        return addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let name = match hosts.get(i) {
                    Some(Host::Tcp(name)) => name.clone(),
                    _ => addr.to_string(),
                };
                Ok(Target::Tcp {
                    host: addr.to_string(),
                    port: port_for(i, addrs.len())?,
                    name,
                })
            })
            .collect();
    }
    if hosts.is_empty() {
        let port = port_for(0, 1)?;
        return Ok(vec![
            Target::Unix {
                path: PathBuf::from(DEFAULT_SOCKET_DIR).join(format!(".s.PGSQL.{port}")),
            },
            Target::Tcp {
                host: "localhost".into(),
                port,
                name: "localhost".into(),
            },
        ]);
    }
    hosts
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = port_for(i, hosts.len())?;
            Ok(match host {
                Host::Tcp(name) => Target::Tcp {
                    host: name.clone(),
                    port,
                    name: name.clone(),
                },
                Host::Unix(dir) => Target::Unix {
                    path: dir.join(format!(".s.PGSQL.{port}")),
                },
            })
        })
        .collect()
}

/// A connected socket.
#[derive(Debug)]
pub(crate) enum Socket {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Unix(UnixStream),
}

impl Socket {
    /// Opens a connection to one target and, on TCP, sets up TLS as `tls` says (no timeout: the
    /// caller bounds the whole handshake).
    pub(crate) async fn connect(
        target: &Target,
        tls: &TlsPolicy,
    ) -> Result<Socket, ReplicationError> {
        let wrap = |source: io::Error| ReplicationError::Connect {
            target: target.to_string(),
            source,
        };
        match target {
            Target::Tcp { host, port, name } => {
                let stream = TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(wrap)?;
                // Status updates are tiny and latency matters for the walsender's timeout.
                stream.set_nodelay(true).map_err(wrap)?;
                let negotiated =
                    tls.negotiate(stream, name)
                        .await
                        .map_err(|source| ReplicationError::Tls {
                            target: target.to_string(),
                            source,
                        })?;
                Ok(match negotiated {
                    Negotiated::Plain(stream) => Socket::Tcp(stream),
                    Negotiated::Tls(stream) => {
                        tracing::debug!(%target, "TLS established");
                        Socket::Tls(stream)
                    }
                })
            }
            Target::Unix { path } => {
                Ok(Socket::Unix(UnixStream::connect(path).await.map_err(wrap)?))
            }
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_flush(cx),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Socket::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Socket::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_hosts_become_socket_paths() {
        let config: tokio_postgres::Config = "postgres://u@%2Ftmp%2Fpg:6543/db".parse().unwrap();
        assert_eq!(
            targets(&config).unwrap(),
            vec![Target::Unix {
                path: PathBuf::from("/tmp/pg/.s.PGSQL.6543")
            }]
        );
    }

    #[test]
    fn ports_pair_with_hosts() {
        let config: tokio_postgres::Config = "host=a,b port=1,2 user=u".parse().unwrap();
        assert_eq!(
            targets(&config).unwrap(),
            vec![
                Target::Tcp {
                    host: "a".into(),
                    port: 1,
                    name: "a".into()
                },
                Target::Tcp {
                    host: "b".into(),
                    port: 2,
                    name: "b".into()
                }
            ]
        );
        let config: tokio_postgres::Config = "host=a,b port=7 user=u".parse().unwrap();
        assert!(targets(&config)
            .unwrap()
            .iter()
            .all(|t| matches!(t, Target::Tcp { port: 7, .. })));
        let config: tokio_postgres::Config = "host=a,b,c port=1,2 user=u".parse().unwrap();
        assert!(targets(&config).is_err());
    }

    #[test]
    fn tls_checks_the_host_name_not_the_hostaddr() {
        let config: tokio_postgres::Config =
            "host=db.example.com hostaddr=10.0.0.5 port=5432 user=u"
                .parse()
                .unwrap();
        assert_eq!(
            targets(&config).unwrap(),
            vec![Target::Tcp {
                host: "10.0.0.5".into(),
                port: 5432,
                name: "db.example.com".into()
            }]
        );
    }
}
