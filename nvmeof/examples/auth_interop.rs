//! Drives the built-in initiator's DH-HMAC-CHAP against a real target for
//! tests/kernel/auth.sh: connect with a host secret (and optionally a
//! controller secret), write and read back 1 MiB on every I/O queue,
//! re-authenticate every queue, read back again, disconnect. With
//! `--expect-auth-failure` the connect must fail with an authentication
//! error instead. Prints one result line; exits non-zero on failure.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use ferrofab_nvmeof_host::{BlockIo, ConnectOptions, Controller, HostIdentity};
use ferrofab_nvmeof_wire::auth::DhchapSecret;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    addr: String,
    #[arg(long)]
    nqn: String,
    #[arg(long)]
    hostnqn: String,
    #[arg(long, default_value = "3c5e7a90-1b2d-4e6f-8a9b-0c1d2e3f4a5b")]
    hostid: String,
    #[arg(long)]
    secret: String,
    #[arg(long)]
    ctrl_secret: Option<String>,
    #[arg(long)]
    expect_auth_failure: bool,
}

fn run(a: &Args) -> anyhow::Result<String> {
    let id = HostIdentity::new(&a.hostnqn, uuid::Uuid::parse_str(&a.hostid)?)?;
    let mut o = ConnectOptions::new(a.addr.clone(), a.nqn.clone(), id);
    o.nr_io_queues = 2;
    o.queue_size = 32;
    o.ctrl_loss_tmo = Some(Duration::from_secs(5));
    o.dhchap_secret = Some(DhchapSecret::parse(&a.secret).context("--secret")?);
    o.dhchap_ctrl_secret = a
        .ctrl_secret
        .as_deref()
        .map(DhchapSecret::parse)
        .transpose()
        .context("--ctrl-secret")?;
    let t0 = Instant::now();
    let ctrl = match Controller::connect(o) {
        Ok(c) if a.expect_auth_failure => {
            drop(c);
            bail!("connected although authentication should have failed")
        }
        Ok(c) => c,
        Err(e) if a.expect_auth_failure && e.is_auth_failure() => {
            return Ok(format!("refused as expected: {e}"));
        }
        Err(e) => return Err(e.into()),
    };
    let connect_ms = t0.elapsed().as_millis();
    let ns = ctrl.namespace(1)?;
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 + 3) as u8).collect();
    for (i, chunk) in data.chunks(128 << 10).enumerate() {
        ns.write_at(chunk, (i as u64) * (128 << 10))?;
    }
    let check = |what: &str| -> anyhow::Result<()> {
        let mut back = vec![0u8; data.len()];
        for (i, chunk) in back.chunks_mut(128 << 10).enumerate() {
            ns.read_at(chunk, (i as u64) * (128 << 10))?;
        }
        if back != data {
            bail!("data read back {what} differs");
        }
        Ok(())
    };
    check("after authentication")?;
    ctrl.reauthenticate().context("re-authentication")?;
    check("after re-authentication")?;
    ctrl.disconnect()?;
    Ok(format!(
        "authenticated {} queues in {connect_ms} ms (connect), 1 MiB verified, re-authenticated",
        3
    ))
}

fn main() {
    ferrofab_nvmeof::cli::init_logging(ferrofab_nvmeof::cli::LogFormat::Human, 0);
    let a = Args::parse();
    match run(&a) {
        Ok(line) => println!("auth_interop: {line}"),
        Err(e) => {
            eprintln!("auth_interop: FAIL: {e:#}");
            std::process::exit(1);
        }
    }
}
