//! Connection parameters.

use std::time::Duration;

use super::identity::HostIdentity;
use ferrofab_nvmeof_wire::wire::Digests;

/// Everything needed to connect to one subsystem. Build with
/// [`ConnectOptions::new`] and adjust the public fields; the defaults follow
/// the Linux host where that makes sense and are tuned for low latency
/// otherwise.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `host:port` of the controller.
    pub addr: String,
    pub subnqn: String,
    pub identity: HostIdentity,
    /// Header and data digests to request (CRC-32C on every PDU).
    pub digests: Digests,
    /// I/O queues (TCP connections) to open; the controller may grant
    /// fewer. Default: the number of CPUs.
    pub nr_io_queues: u16,
    /// Entries per I/O queue; at most this minus one commands are in flight
    /// per queue. Clamped to CAP.MQES+1 and MAXCMD.
    pub queue_size: u16,
    /// Keep Alive Timeout sent in Connect; keep-alives go out every half of
    /// it. Zero disables keep-alive (as discovery does).
    pub kato: Duration,
    /// How long to keep trying to reconnect after the connection is lost
    /// before failing all pending I/O. `None` retries forever.
    pub ctrl_loss_tmo: Option<Duration>,
    /// First delay between reconnect attempts; doubled after each failure
    /// up to `max_reconnect_delay`.
    pub reconnect_delay: Duration,
    pub max_reconnect_delay: Duration,
    /// Limit for TCP connect plus ICReq/ICResp.
    pub connect_timeout: Duration,
    /// Limit for each admin command (Identify, Property Get, ...).
    pub admin_timeout: Duration,
    /// Limit for the shutdown handshake (CSTS.SHST) on disconnect.
    pub shutdown_timeout: Duration,
    /// How long a waiting thread busy-polls its queue's socket before it
    /// sleeps in `poll(2)`, counted from the moment it found nothing to
    /// read (with `poll_adaptive`, the most it spins). Longer is lower
    /// latency at the price of CPU; zero sleeps at once. Spinning happens
    /// only while a thread waits for an outstanding command.
    pub poll_spin: Duration,
    /// Learn the spin from the queue's recent waits (adaptive hybrid
    /// polling, the default): spin about twice the typical wait for the
    /// next response, at most `poll_spin`, and not at all while most
    /// responses take longer than `poll_spin` (a slow target: sleep at
    /// once). Off: always spin the whole `poll_spin` (busy polling with a
    /// long one).
    pub poll_adaptive: bool,
    /// An I/O command without a response for this long means the
    /// association is broken: it is torn down and the command re-sent on a
    /// new one (as the Linux host's I/O timeout does). `None` waits forever.
    pub io_timeout: Option<Duration>,
    /// Largest data transfer of one command; larger requests are split.
    /// Further limited by the controller's MDTS.
    pub max_io_size: usize,
    /// DH-HMAC-CHAP host secret (`DHHC-1:..`): answers the controller's
    /// challenge on every queue when the controller asks for
    /// authentication. Without it such a controller cannot be used.
    pub dhchap_secret: Option<ferrofab_nvmeof_wire::auth::DhchapSecret>,
    /// DH-HMAC-CHAP controller secret: with it the host also challenges
    /// the controller (bidirectional authentication), on every queue, and
    /// refuses a controller that cannot answer or does not authenticate.
    pub dhchap_ctrl_secret: Option<ferrofab_nvmeof_wire::auth::DhchapSecret>,
}

impl ConnectOptions {
    pub fn new(addr: impl Into<String>, subnqn: impl Into<String>, identity: HostIdentity) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        ConnectOptions {
            addr: addr.into(),
            subnqn: subnqn.into(),
            identity,
            digests: Digests::default(),
            nr_io_queues: cpus.clamp(1, 64) as u16,
            queue_size: 128,
            kato: Duration::from_secs(5),
            ctrl_loss_tmo: Some(Duration::from_secs(600)),
            reconnect_delay: Duration::from_millis(500),
            max_reconnect_delay: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            admin_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(5),
            poll_spin: Duration::from_micros(50),
            poll_adaptive: true,
            io_timeout: Some(Duration::from_secs(30)),
            max_io_size: 1 << 20,
            dhchap_secret: None,
            dhchap_ctrl_secret: None,
        }
    }
}
