//! One peer: connect (or wait for the peer), run a session, reconnect with backoff.
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use futures::{SinkExt, StreamExt};
use netgauze_bgp_pkt::{
    codec::{BgpCodec, BgpCodecDecoderError},
    notification::{BgpNotificationMessage, FiniteStateMachineError, OpenMessageError},
    BgpMessage,
};
use tokio::{
    net::TcpStream,
    sync::{mpsc, watch},
    time::Instant,
};
use tokio_util::codec::Framed;
use tracing::{debug, info, warn, Instrument};

use super::{
    bfd::{self, BfdState},
    config::{BgpConfig, PeerConfig, RoutePolicy},
    sock, update, wire, Control, Routes, SessionState, SharedRef,
};

pub(super) struct PeerCtx {
    pub cfg: Arc<BgpConfig>,
    pub peer: PeerConfig,
    pub shared: SharedRef,
    pub desired: watch::Receiver<Arc<Routes>>,
    pub control: watch::Receiver<Control>,
    /// Connections accepted for this peer (passive peers only).
    pub incoming: Option<mpsc::Receiver<TcpStream>>,
    pub bfd: Option<bfd::Hub>,
}

/// The first retry comes quickly (a router restarting its BGP daemon is back in well under
/// a second); later ones back off so a dead peer costs little.
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long we wait for the peer's OPEN (RFC 4271 suggests a "large" hold time here).
const OPEN_WAIT: Duration = Duration::from_secs(30);
/// A write that takes longer than this means the peer stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

type Conn = Framed<TcpStream, BgpCodec>;

/// Why a session ended.
enum End {
    /// Shutdown or restart requested: the task exits.
    Stopped,
    /// The session failed; reconnect. `established` says whether it got that far.
    Failed { error: String, established: bool },
}

pub(super) async fn run(mut ctx: PeerCtx) {
    let span = tracing::info_span!("bgp", peer = %ctx.peer.address);
    async move {
        let mut backoff = BACKOFF_FIRST;
        // Until one session is Established after start, our OPEN says we restarted (R bit)
        // so a graceful-restart peer does not wait for our End-of-RIB before sending its.
        let mut restarted = true;
        loop {
            if *ctx.control.borrow() != Control::Run {
                break;
            }
            let stream = match next_connection(&mut ctx).await {
                Some(Ok(s)) => s,
                Some(Err(e)) => {
                    debug!(error = %crate::Chain(&e), "connect failed");
                    update(&ctx.shared, |s| {
                        s.state = SessionState::Active;
                        s.last_error = Some(format!("connect: {e}"));
                    });
                    if !sleep_or_stop(&mut ctx.control, backoff).await {
                        break;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
                None => break,
            };
            match session(&mut ctx, stream, restarted).await {
                End::Stopped => break,
                End::Failed { error, established } => {
                    warn!(%error, "session ended");
                    update(&ctx.shared, |s| {
                        if established {
                            s.flaps += 1;
                        }
                        s.state = SessionState::Active;
                        s.established_at = None;
                        s.announced.clear();
                        s.last_error = Some(error);
                        if s.bfd.is_some() {
                            s.bfd = Some(BfdState::Down);
                        }
                    });
                    if established {
                        restarted = false;
                        backoff = BACKOFF_FIRST;
                    }
                    if !sleep_or_stop(&mut ctx.control, backoff).await {
                        break;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        update(&ctx.shared, |s| {
            if s.state == SessionState::Established {
                s.flaps += 1;
            }
            s.state = SessionState::Idle;
            s.established_at = None;
            s.announced.clear();
        });
    }
    .instrument(span)
    .await
}

/// false when told to stop while sleeping.
async fn sleep_or_stop(control: &mut watch::Receiver<Control>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        r = control.changed() => r.is_ok() && *control.borrow() == Control::Run,
    }
}

/// A TCP connection to the peer, or None when told to stop.
async fn next_connection(ctx: &mut PeerCtx) -> Option<std::io::Result<TcpStream>> {
    let p = &ctx.peer;
    let ebgp = p.remote_as != ctx.cfg.local_as;
    if let Some(rx) = ctx.incoming.as_mut() {
        update(&ctx.shared, |s| s.state = SessionState::Active);
        return tokio::select! {
            s = rx.recv() => s.map(|s| {
                set_ttl_after_accept(&s, p, ebgp);
                Ok(s)
            }),
            r = ctx.control.changed() => {
                if r.is_err() || *ctx.control.borrow() != Control::Run {
                    None
                } else {
                    Some(Err(std::io::Error::other("control changed")))
                }
            }
        };
    }
    update(&ctx.shared, |s| s.state = SessionState::Connect);
    let addr = SocketAddr::new(p.address, p.port);
    let key = p.password.as_deref().map(str::as_bytes);
    tokio::select! {
        r = sock::connect(addr, key, ttl(p, ebgp), CONNECT_TIMEOUT) => Some(r),
        r = ctx.control.changed() => {
            if r.is_err() || *ctx.control.borrow() != Control::Run {
                None
            } else {
                Some(Err(std::io::Error::other("control changed")))
            }
        }
    }
}

/// Direct eBGP: TTL 1, what routers expect of a directly connected neighbour (bird and
/// FRR send 1 themselves and accept it; GTSM (255) would need `ttl security` on the
/// router). iBGP is multihop by nature.
fn ttl(p: &PeerConfig, ebgp: bool) -> u8 {
    p.multihop_ttl.unwrap_or(if ebgp { 1 } else { 64 })
}

fn set_ttl_after_accept(s: &TcpStream, p: &PeerConfig, ebgp: bool) {
    if let Err(e) = sock::set_ttl(s, p.address.is_ipv6(), ttl(p, ebgp)) {
        warn!(error = %crate::Chain(&e), "setting the TTL of an accepted connection");
    }
    let _ = s.set_nodelay(true);
}

async fn send(conn: &mut Conn, m: BgpMessage) -> Result<(), String> {
    match tokio::time::timeout(WRITE_TIMEOUT, conn.send(m)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("write: {e}")),
        Err(_) => Err("write timed out (peer not reading)".into()),
    }
}

async fn send_all(conn: &mut Conn, ms: Vec<BgpMessage>) -> Result<(), String> {
    for m in ms {
        match tokio::time::timeout(WRITE_TIMEOUT, conn.feed(m)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("write: {e}")),
            Err(_) => return Err("write timed out (peer not reading)".into()),
        }
    }
    match tokio::time::timeout(WRITE_TIMEOUT, conn.flush()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("write: {e}")),
        Err(_) => Err("write timed out (peer not reading)".into()),
    }
}

fn failed(error: impl Into<String>, established: bool) -> End {
    End::Failed {
        error: error.into(),
        established,
    }
}

/// A decode error is answered with the NOTIFICATION netgauze maps it to (RFC 4271 6.x).
async fn on_decode_error(conn: &mut Conn, e: BgpCodecDecoderError, established: bool) -> End {
    if let BgpCodecDecoderError::BgpMessageParsingError(pe) = &e {
        let n: BgpNotificationMessage = pe.clone().into();
        let _ = send(conn, BgpMessage::Notification(n)).await;
    }
    failed(format!("malformed message from peer: {e}"), established)
}

async fn notify(conn: &mut Conn, m: BgpMessage, why: String) -> End {
    let _ = send(conn, m).await;
    failed(why, false)
}

/// The next message, or how the session ended.
async fn recv(conn: &mut Conn, established: bool) -> Result<BgpMessage, End> {
    match conn.next().await {
        None => Err(failed("connection closed by peer", established)),
        Some(Err(BgpCodecDecoderError::IoError(e))) => {
            Err(failed(format!("read: {e}"), established))
        }
        Some(Err(e)) => Err(on_decode_error(conn, e, established).await),
        Some(Ok((BgpMessage::Notification(n), _))) => {
            Err(failed(format!("peer sent NOTIFICATION {n:?}"), established))
        }
        Some(Ok((m, _))) => Ok(m),
    }
}

async fn session(ctx: &mut PeerCtx, stream: TcpStream, restarted: bool) -> End {
    let local = match stream.local_addr() {
        Ok(a) => a.ip(),
        Err(e) => return failed(format!("getsockname: {e}"), false),
    };
    info!(%local, "TCP connected");
    let cfg = ctx.cfg.clone();
    let p = ctx.peer.clone();
    let our_hold = p.hold_time_s.unwrap_or(cfg.hold_time_s);
    let mut conn = Framed::new(stream, BgpCodec::new(true));

    update(&ctx.shared, |s| s.state = SessionState::OpenSent);
    let open = wire::open(&wire::OpenParams {
        local_as: cfg.local_as,
        hold_time_s: our_hold,
        router_id: cfg.router_id,
        gr_restart_time_s: cfg.graceful_restart.map(|g| g.restart_time_s),
        gr_restarted: restarted && cfg.graceful_restart.is_some(),
    });
    if let Err(e) = send(&mut conn, open).await {
        return failed(e, false);
    }

    // OpenSent: wait for the peer's OPEN.
    let their = tokio::select! {
        r = tokio::time::timeout(OPEN_WAIT, recv(&mut conn, false)) => match r {
            Err(_) => return notify(&mut conn, wire::hold_timer_expired(), "no OPEN from peer".into()).await,
            Ok(Err(end)) => return end,
            Ok(Ok(BgpMessage::Open(o))) => wire::peer_open(&o),
            Ok(Ok(other)) => {
                let n = BgpNotificationMessage::FiniteStateMachineError(
                    FiniteStateMachineError::ReceiveUnexpectedMessageInOpenSentState { value: Box::new([]) });
                return notify(&mut conn, BgpMessage::Notification(n), format!("expected OPEN, got {:?}", other.get_type())).await;
            }
        },
        _ = stopped(&mut ctx.control) => return End::Stopped,
    };
    if their.asn != p.remote_as {
        let n = BgpNotificationMessage::OpenMessageError(OpenMessageError::BadPeerAs {
            value: Box::new([]),
        });
        return notify(
            &mut conn,
            BgpMessage::Notification(n),
            format!("peer says AS {}, configured {}", their.asn, p.remote_as),
        )
        .await;
    }
    if their.hold_time_s == 1 || their.hold_time_s == 2 {
        let n = BgpNotificationMessage::OpenMessageError(OpenMessageError::UnacceptableHoldTime {
            value: Box::new([]),
        });
        return notify(
            &mut conn,
            BgpMessage::Notification(n),
            format!("unacceptable hold time {}", their.hold_time_s),
        )
        .await;
    }
    let ebgp = p.remote_as != cfg.local_as;
    if !ebgp && their.router_id == cfg.router_id {
        let n = BgpNotificationMessage::OpenMessageError(OpenMessageError::BadBgpIdentifier {
            value: Box::new([]),
        });
        return notify(
            &mut conn,
            BgpMessage::Notification(n),
            "iBGP peer has our router id".into(),
        )
        .await;
    }
    let hold = our_hold.min(their.hold_time_s);
    // Zero hold time: neither keepalives nor a hold timer (RFC 4271 4.4).
    let hold_d = (hold > 0).then(|| Duration::from_secs(u64::from(hold)));
    let keepalive_d = hold_d.map(|h| (h / 3).max(Duration::from_millis(333)));
    debug!(?their, hold, "OPEN received");
    if let Err(e) = send(&mut conn, BgpMessage::KeepAlive).await {
        return failed(e, false);
    }
    update(&ctx.shared, |s| s.state = SessionState::OpenConfirm);

    // OpenConfirm: wait for the KEEPALIVE that confirms our OPEN.
    let far = Duration::from_secs(86400 * 365);
    let confirm_wait = hold_d.unwrap_or(OPEN_WAIT);
    tokio::select! {
        r = tokio::time::timeout(confirm_wait, recv(&mut conn, false)) => match r {
            Err(_) => return notify(&mut conn, wire::hold_timer_expired(), "hold timer expired in OpenConfirm".into()).await,
            Ok(Err(end)) => return end,
            Ok(Ok(BgpMessage::KeepAlive)) => {}
            Ok(Ok(other)) => {
                let n = BgpNotificationMessage::FiniteStateMachineError(
                    FiniteStateMachineError::ReceiveUnexpectedMessageInOpenConfirmState { value: Box::new([]) });
                return notify(&mut conn, BgpMessage::Notification(n), format!("expected KEEPALIVE, got {:?}", other.get_type())).await;
            }
        },
        _ = stopped(&mut ctx.control) => return End::Stopped,
    }

    let attrs = wire::RouteAttrs {
        local_as: cfg.local_as,
        ebgp,
        asn4: their.asn4,
        local_pref: cfg.local_pref,
        communities: cfg.communities.clone(),
        next_hop_v4: cfg.next_hop_v4.or(match local {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        }),
        next_hop_v6: cfg.next_hop_v6.or(match local {
            IpAddr::V6(a) if a.to_ipv4_mapped().is_none() => Some(a),
            _ => None,
        }),
    };
    let can_v4 = their.ipv4 && attrs.next_hop_v4.is_some();
    let can_v6 = their.ipv6 && attrs.next_hop_v6.is_some();
    if their.ipv6 && !can_v6 {
        warn!("IPv6 routes not announced on this session: set bgp.next_hop_v6");
    }
    if their.ipv4 && !can_v4 {
        warn!("IPv4 routes not announced on this session: set bgp.next_hop_v4");
    }
    info!(
        hold,
        ebgp,
        ipv4 = can_v4,
        ipv6 = can_v6,
        peer_gr = their.graceful_restart,
        route_refresh = their.route_refresh,
        "Established"
    );
    update(&ctx.shared, |s| {
        s.state = SessionState::Established;
        s.established_at = Some(std::time::Instant::now());
        s.last_error = None;
    });
    let eligible = |routes: &Routes| -> Routes {
        routes
            .iter()
            .filter(|(a, _)| if a.is_ipv4() { can_v4 } else { can_v6 })
            .map(|(a, p)| (*a, p.clone()))
            .collect()
    };

    // The full table, then End-of-RIB per family.
    let mut advertised = eligible(&ctx.desired.borrow_and_update());
    if let Err(e) = send_table(&mut conn, &attrs, &advertised, can_v4, can_v6).await {
        return failed(e, true);
    }
    update(&ctx.shared, |s| {
        s.announced = advertised.keys().copied().collect()
    });

    let mut bfd_session = match (&ctx.bfd, p.bfd) {
        (Some(hub), Some(bcfg)) => match hub.session(local, p.address, bcfg) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %crate::Chain(&e), "BFD session not started");
                None
            }
        },
        _ => None,
    };
    let mut bfd_was_up = false;

    let mut hold_deadline = Instant::now() + hold_d.unwrap_or(far);
    let mut keepalive = tokio::time::interval(keepalive_d.unwrap_or(far));
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    keepalive.tick().await;
    loop {
        tokio::select! {
            r = recv(&mut conn, true) => match r {
                Err(end) => return end,
                Ok(m) => {
                    if let Some(h) = hold_d {
                        hold_deadline = Instant::now() + h;
                    }
                    match m {
                        BgpMessage::RouteRefresh(_) => {
                            debug!("route refresh: sending the table again");
                            if let Err(e) = send_table(&mut conn, &attrs, &advertised, can_v4, can_v6).await {
                                return failed(e, true);
                            }
                        }
                        BgpMessage::Open(_) => {
                            let n = BgpNotificationMessage::FiniteStateMachineError(
                                FiniteStateMachineError::ReceiveUnexpectedMessageInEstablishedState { value: Box::new([]) });
                            let _ = send(&mut conn, BgpMessage::Notification(n)).await;
                            return failed("OPEN in Established", true);
                        }
                        // We import nothing.
                        _ => {}
                    }
                }
            },
            _ = tokio::time::sleep_until(hold_deadline), if hold_d.is_some() => {
                let _ = send(&mut conn, wire::hold_timer_expired()).await;
                return failed("hold timer expired", true);
            }
            _ = keepalive.tick(), if keepalive_d.is_some() => {
                if let Err(e) = send(&mut conn, BgpMessage::KeepAlive).await {
                    return failed(e, true);
                }
            }
            r = ctx.desired.changed() => {
                if r.is_err() {
                    // The Speaker is gone without shutdown: behave like a crash.
                    return End::Stopped;
                }
                let want = eligible(&ctx.desired.borrow_and_update());
                // New prefixes and ones whose policy changed: announcing again replaces the
                // route at the peer (RFC 4271 3.1), no withdrawal in between.
                let add: Routes = want
                    .iter()
                    .filter(|(a, p)| advertised.get(a) != Some(p))
                    .map(|(a, p)| (*a, p.clone()))
                    .collect();
                let del: Vec<IpAddr> = advertised.keys().filter(|a| !want.contains_key(a)).copied().collect();
                let (d4, d6) = wire::split(del.iter().copied());
                let mut msgs = wire::withdraw(&d4, &d6);
                msgs.extend(announcements(&attrs, &add));
                if !msgs.is_empty() {
                    debug!(announce = add.len(), withdraw = del.len(), "UPDATE");
                    if let Err(e) = send_all(&mut conn, msgs).await {
                        return failed(e, true);
                    }
                }
                advertised = want;
                update(&ctx.shared, |s| s.announced = advertised.keys().copied().collect());
            }
            r = ctx.control.changed() => {
                let how = if r.is_err() { Control::Restart } else { *ctx.control.borrow() };
                match how {
                    Control::Run => {}
                    Control::Restart => {
                        info!("closing for graceful restart (routes kept by the peer)");
                        return End::Stopped;
                    }
                    Control::Shutdown => {
                        let (v4, v6) = wire::split(advertised.keys().copied());
                        let mut msgs = wire::withdraw(&v4, &v6);
                        msgs.push(wire::cease_admin_shutdown());
                        if let Err(e) = send_all(&mut conn, msgs).await {
                            warn!(error = %e, "withdrawing on shutdown");
                        }
                        let _ = conn.close().await;
                        info!("shut down: routes withdrawn, Cease sent");
                        return End::Stopped;
                    }
                }
            }
            st = bfd_changed(&mut bfd_session) => {
                update(&ctx.shared, |s| s.bfd = Some(st));
                if st == BfdState::Up {
                    bfd_was_up = true;
                } else if bfd_was_up {
                    // The session only falls on a BFD failure it has seen come up: a
                    // router without BFD configured must not keep us from Established.
                    let _ = send(&mut conn, wire::cease_bfd_down()).await;
                    return failed("BFD session went down", true);
                }
            }
        }
    }
}

/// UPDATEs for `routes`: one group per distinct policy, each with the session's attributes
/// refined by that policy.
fn announcements(base: &wire::RouteAttrs, routes: &Routes) -> Vec<netgauze_bgp_pkt::BgpMessage> {
    let mut groups: BTreeMap<&RoutePolicy, Vec<IpAddr>> = BTreeMap::new();
    for (a, p) in routes {
        groups.entry(p).or_default().push(*a);
    }
    let mut out = Vec::new();
    for (policy, addrs) in groups {
        let (a4, a6) = wire::split(addrs);
        out.extend(wire::announce(&base.with_policy(policy), &a4, &a6));
    }
    out
}

async fn send_table(
    conn: &mut Conn,
    attrs: &wire::RouteAttrs,
    routes: &Routes,
    v4: bool,
    v6: bool,
) -> Result<(), String> {
    let mut msgs = announcements(attrs, routes);
    if v4 {
        msgs.push(wire::end_of_rib(false));
    }
    if v6 {
        msgs.push(wire::end_of_rib(true));
    }
    send_all(conn, msgs).await
}

async fn stopped(control: &mut watch::Receiver<Control>) {
    loop {
        if *control.borrow_and_update() != Control::Run {
            return;
        }
        if control.changed().await.is_err() {
            return;
        }
    }
}

/// The next BFD state change, or never when there is no BFD session.
async fn bfd_changed(s: &mut Option<bfd::Session>) -> BfdState {
    match s {
        Some(s) => s.changed().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    //! The FSM against a scripted peer on loopback: what real routers do not show us.
    use super::*;
    use crate::bgp::Shared;
    use netgauze_bgp_pkt::{
        notification::{HoldTimerExpiredError, MessageHeaderError},
        open::{BgpOpenMessage, BgpOpenMessageParameter},
        update::BgpUpdateMessage,
    };
    use netgauze_iana::address_family::AddressType;
    use std::net::Ipv4Addr;
    use tokio::{io::AsyncWriteExt, net::TcpListener};

    struct Harness {
        conn: Framed<TcpStream, BgpCodec>,
        shared: SharedRef,
        desired: watch::Sender<Arc<Routes>>,
        _control: watch::Sender<Control>,
    }

    /// A speaker (AS 65001) connected to a fake router (AS 65000, hold `hold`) that has
    /// completed OPEN/KEEPALIVE.
    async fn established(hold: u16, announce: &[IpAddr]) -> Harness {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let mut peer = PeerConfig::new("127.0.0.1".parse().unwrap(), 65000);
        peer.port = port;
        peer.multihop_ttl = Some(64);
        let mut cfg = BgpConfig::new(65001, Ipv4Addr::new(10, 0, 0, 2), vec![peer.clone()]);
        cfg.hold_time_s = 30;
        let shared = Shared::idle(false);
        let (desired, desired_rx) = watch::channel(Arc::new(
            announce
                .iter()
                .map(|a| (*a, RoutePolicy::default()))
                .collect::<Routes>(),
        ));
        let (control, control_rx) = watch::channel(Control::Run);
        tokio::spawn(run(PeerCtx {
            cfg: Arc::new(cfg),
            peer,
            shared: shared.clone(),
            desired: desired_rx,
            control: control_rx,
            incoming: None,
            bfd: None,
        }));
        let (s, _) = l.accept().await.unwrap();
        let mut conn = Framed::new(s, BgpCodec::new(true));
        let BgpMessage::Open(o) = conn.next().await.unwrap().unwrap().0 else {
            panic!("first message is not OPEN")
        };
        let p = wire::peer_open(&o);
        assert_eq!((p.asn, p.hold_time_s, p.asn4), (65001, 30, true));
        let caps = vec![
            netgauze_bgp_pkt::capabilities::BgpCapability::FourOctetAs(
                netgauze_bgp_pkt::capabilities::FourOctetAsCapability::new(65000),
            ),
            netgauze_bgp_pkt::capabilities::BgpCapability::MultiProtocolExtensions(
                netgauze_bgp_pkt::capabilities::MultiProtocolExtensionsCapability::new(
                    AddressType::Ipv4Unicast,
                ),
            ),
        ];
        let open = BgpOpenMessage::new(
            65000,
            hold,
            Ipv4Addr::new(10, 0, 0, 1),
            vec![BgpOpenMessageParameter::new_capabilities(caps)],
        );
        conn.send(BgpMessage::Open(open)).await.unwrap();
        conn.send(BgpMessage::KeepAlive).await.unwrap();
        assert!(matches!(
            conn.next().await.unwrap().unwrap().0,
            BgpMessage::KeepAlive
        ));
        Harness {
            conn,
            shared,
            desired,
            _control: control,
        }
    }

    async fn next_update(conn: &mut Framed<TcpStream, BgpCodec>) -> BgpUpdateMessage {
        loop {
            match conn.next().await.unwrap().unwrap().0 {
                BgpMessage::Update(u) => return u,
                BgpMessage::KeepAlive => {}
                other => panic!("expected UPDATE, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn table_then_end_of_rib_then_diffs() {
        let v4: IpAddr = "192.0.2.10".parse().unwrap();
        let mut h = established(9, &[v4, "fd00::10".parse().unwrap()]).await;
        // The peer offered IPv4 only: the /128 is not sent, and there is no IPv6 EoR.
        let u = next_update(&mut h.conn).await;
        assert_eq!(u.nlri().len(), 1);
        assert!(u.path_attributes().iter().any(|a| matches!(
            a.value(),
            netgauze_bgp_pkt::path_attribute::PathAttributeValue::NextHop(nh)
                if nh.next_hop() == Ipv4Addr::LOCALHOST
        )));
        let eor = next_update(&mut h.conn).await;
        assert_eq!(eor.end_of_rib(), Some(AddressType::Ipv4Unicast));
        assert_eq!(h.shared.lock().unwrap().announced, vec![v4]);
        // A new policy for the same prefix: announced again (replacing it), not withdrawn.
        let mut policy = RoutePolicy::default();
        policy
            .communities
            .push(crate::bgp::Community::new(65001, 9));
        h.desired.send_replace(Arc::new([(v4, policy)].into()));
        let u = next_update(&mut h.conn).await;
        assert_eq!(u.nlri().len(), 1);
        assert!(u.withdraw_routes().is_empty());
        assert!(u.path_attributes().iter().any(|a| matches!(
            a.value(),
            netgauze_bgp_pkt::path_attribute::PathAttributeValue::Communities(c)
                if c.communities().len() == 1
        )));
        h.desired.send_replace(Arc::new(Routes::new()));
        let w = next_update(&mut h.conn).await;
        assert_eq!(w.withdraw_routes().len(), 1);
        assert!(w.nlri().is_empty());
    }

    #[tokio::test]
    async fn hold_timer_expiry_sends_notification() {
        // Hold 3 s: we send keepalives every second, and give up 3 s after the last
        // message from the (now silent) peer.
        let mut h = established(3, &[]).await;
        let t0 = std::time::Instant::now();
        let mut keepalives = 0;
        loop {
            match h.conn.next().await.unwrap().unwrap().0 {
                BgpMessage::KeepAlive => keepalives += 1,
                BgpMessage::Update(_) => {}
                BgpMessage::Notification(BgpNotificationMessage::HoldTimerExpiredError(
                    HoldTimerExpiredError::Unspecific { .. },
                )) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(2900) && took < Duration::from_secs(5),
            "{took:?}"
        );
        assert!(keepalives >= 2, "{keepalives} keepalives in {took:?}");
        // Reconnection follows; the flap is counted.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while h.shared.lock().unwrap().flaps == 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let s = h.shared.lock().unwrap();
        assert_eq!(s.flaps, 1);
        assert_eq!(s.last_error.as_deref(), Some("hold timer expired"));
    }

    #[tokio::test]
    async fn malformed_message_gets_a_notification() {
        let mut h = established(9, &[]).await;
        next_update(&mut h.conn).await; // End-of-RIB
                                        // A header whose marker is not all ones: the connection is not synchronized.
        let mut bad = vec![0u8; 16];
        bad.extend_from_slice(&19u16.to_be_bytes());
        bad.push(4);
        h.conn.get_mut().write_all(&bad).await.unwrap();
        loop {
            match h.conn.next().await.unwrap().unwrap().0 {
                BgpMessage::KeepAlive => {}
                BgpMessage::Notification(BgpNotificationMessage::MessageHeaderError(
                    MessageHeaderError::ConnectionNotSynchronized { .. },
                )) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
