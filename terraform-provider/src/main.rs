//! terraform-provider-ferrofab: the Terraform provider for ferrofab,
//! serving plugin protocol 6 over go-plugin's gRPC transport.
//!
//! Started by Terraform, it checks the handshake environment, serves on a
//! loopback port with auto-mTLS and prints the handshake line (the only
//! thing ever written to stdout); logs go to stderr, which Terraform relays
//! under TF_LOG. With `--debug` it serves in plaintext for a Terraform
//! started with the printed TF_REATTACH_PROVIDERS.
#![forbid(unsafe_code)]

mod common;
mod config;
mod demand;
mod diag;
mod handshake;
mod provider;
mod resources;
mod schema;
mod value;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};

/// tfplugin6, generated from proto/tfplugin6.proto.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("tfplugin6");
}

/// go-plugin's controller service, from proto/grpc_controller.proto.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod plugin_pb {
    tonic::include_proto!("plugin");
}

fn main() {
    init_logging();
    let debug = std::env::args()
        .skip(1)
        .any(|a| a == "--debug" || a == "-debug");
    if std::env::args().skip(1).any(|a| a == "--version") {
        println!(
            "terraform-provider-ferrofab {}",
            ferrofab_buildinfo::VERSION_LINE
        );
        return;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("terraform-provider-ferrofab: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(debug)) {
        eprintln!(
            "terraform-provider-ferrofab: {}",
            ferrofab_buildinfo::error_line(e.as_ref())
        );
        std::process::exit(1);
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERROFAB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

async fn run(debug: bool) -> anyhow::Result<()> {
    let env = if debug {
        handshake::PluginEnv { client_cert: None }
    } else {
        handshake::read_env(|k| std::env::var(k).ok())?
    };
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding a loopback port")?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let shutdown = Arc::new(Notify::new());
    let router = tonic::transport::Server::builder()
        .add_service(pb::provider_server::ProviderServer::new(
            provider::FerrofabProvider::new(),
        ))
        .add_service(
            plugin_pb::grpc_controller_server::GrpcControllerServer::new(provider::Controller {
                shutdown: shutdown.clone(),
            }),
        );
    let stop = {
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                _ = shutdown.notified() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
    };
    match env.client_cert {
        Some(client_cert) => {
            let server = handshake::server_cert()?;
            let tls = Arc::new(handshake::tls_config(&server, client_cert)?);
            announce(&handshake::handshake_line(addr, Some(&server.cert_der)))?;
            let incoming = tls_incoming(listener, tokio_rustls::TlsAcceptor::from(tls));
            router.serve_with_incoming_shutdown(incoming, stop).await?;
        }
        None => {
            if debug {
                announce_debug(addr)?;
            } else {
                tracing::warn!("PLUGIN_CLIENT_CERT not set: serving without TLS");
                announce(&handshake::handshake_line(addr, None))?;
            }
            router
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop)
                .await?;
        }
    }
    Ok(())
}

/// Prints the handshake line alone on stdout and flushes it.
fn announce(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").context("writing the handshake line")?;
    out.flush().context("flushing the handshake line")?;
    Ok(())
}

fn announce_debug(addr: SocketAddr) -> anyhow::Result<()> {
    let value = handshake::reattach_json(addr, std::process::id());
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Provider started. To attach Terraform, set:\n\n\tTF_REATTACH_PROVIDERS='{value}'\n"
    )?;
    out.flush()?;
    Ok(())
}

type TlsConn = tokio_rustls::server::TlsStream<TcpStream>;

/// Accepts TCP connections and completes their TLS handshakes concurrently,
/// yielding the established streams; failed handshakes are logged and
/// dropped (they never reach gRPC).
fn tls_incoming(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
) -> ReceiverStream<Result<TlsConn, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(tls) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Err(e) => tracing::warn!(%peer, error = %e, "TLS handshake refused"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
