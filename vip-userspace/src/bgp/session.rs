//! One peer: connect (or wait for the peer), run a session, reconnect with backoff.
//!
//! This is the I/O half of the session: the socket, the timers and the handshake's waits.
//! What the protocol decides once Established lives in `fsm.rs`, without sockets.
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use futures::{SinkExt, StreamExt};
use netgauze_bgp_pkt::{
    codec::{BgpCodec, BgpCodecDecoderError},
    notification::{BgpNotificationMessage, FiniteStateMachineError},
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
    config::{BgpConfig, PeerConfig},
    fsm::{self, failed, Action, End, Event},
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

/// One TCP connection, from our OPEN to the end of the session.
async fn session(ctx: &mut PeerCtx, stream: TcpStream, restarted: bool) -> End {
    let local = match stream.local_addr() {
        Ok(a) => a.ip(),
        Err(e) => return failed(format!("getsockname: {e}"), false),
    };
    info!(%local, "TCP connected");
    let mut conn = Framed::new(stream, BgpCodec::new(true));
    let their = match open_sent(ctx, &mut conn, restarted).await {
        Ok(o) => o,
        Err(end) => return end,
    };
    let timers = match fsm::check_open(&ctx.cfg, &ctx.peer, &their) {
        Ok(t) => t,
        Err(r) => return notify(&mut conn, r.notification, r.why).await,
    };
    if let Err(e) = send(&mut conn, BgpMessage::KeepAlive).await {
        return failed(e, false);
    }
    update(&ctx.shared, |s| s.state = SessionState::OpenConfirm);
    if let Err(end) = open_confirm(ctx, &mut conn, timers.hold).await {
        return end;
    }
    established(ctx, &mut conn, &their, local, &timers).await
}

/// OpenSent: send our OPEN and wait for the peer's.
async fn open_sent(
    ctx: &mut PeerCtx,
    conn: &mut Conn,
    restarted: bool,
) -> Result<wire::PeerOpen, End> {
    let cfg = &ctx.cfg;
    update(&ctx.shared, |s| s.state = SessionState::OpenSent);
    let open = wire::open(&wire::OpenParams {
        local_as: cfg.local_as,
        hold_time_s: fsm::our_hold(cfg, &ctx.peer),
        router_id: cfg.router_id,
        gr_restart_time_s: cfg.graceful_restart.map(|g| g.restart_time_s),
        gr_restarted: restarted && cfg.graceful_restart.is_some(),
    });
    if let Err(e) = send(conn, open).await {
        return Err(failed(e, false));
    }
    tokio::select! {
        r = tokio::time::timeout(OPEN_WAIT, recv(conn, false)) => match r {
            Err(_) => Err(notify(conn, wire::hold_timer_expired(), "no OPEN from peer".into()).await),
            Ok(Err(end)) => Err(end),
            Ok(Ok(BgpMessage::Open(o))) => Ok(wire::peer_open(&o)),
            Ok(Ok(other)) => {
                let n = BgpNotificationMessage::FiniteStateMachineError(
                    FiniteStateMachineError::ReceiveUnexpectedMessageInOpenSentState { value: Box::new([]) });
                Err(notify(conn, BgpMessage::Notification(n), format!("expected OPEN, got {:?}", other.get_type())).await)
            }
        },
        _ = stopped(&mut ctx.control) => Err(End::Stopped),
    }
}

/// OpenConfirm: wait for the KEEPALIVE that confirms our OPEN.
async fn open_confirm(
    ctx: &mut PeerCtx,
    conn: &mut Conn,
    hold: Option<Duration>,
) -> Result<(), End> {
    let confirm_wait = hold.unwrap_or(OPEN_WAIT);
    tokio::select! {
        r = tokio::time::timeout(confirm_wait, recv(conn, false)) => match r {
            Err(_) => Err(notify(conn, wire::hold_timer_expired(), "hold timer expired in OpenConfirm".into()).await),
            Ok(Err(end)) => Err(end),
            Ok(Ok(BgpMessage::KeepAlive)) => Ok(()),
            Ok(Ok(other)) => {
                let n = BgpNotificationMessage::FiniteStateMachineError(
                    FiniteStateMachineError::ReceiveUnexpectedMessageInOpenConfirmState { value: Box::new([]) });
                Err(notify(conn, BgpMessage::Notification(n), format!("expected KEEPALIVE, got {:?}", other.get_type())).await)
            }
        },
        _ = stopped(&mut ctx.control) => Err(End::Stopped),
    }
}

/// Established: the I/O half of [`fsm::Established`]. Socket reads, timers, table,
/// control and BFD changes become events; the actions of each step are carried out here.
async fn established(
    ctx: &mut PeerCtx,
    conn: &mut Conn,
    their: &wire::PeerOpen,
    local: IpAddr,
    timers: &fsm::Timers,
) -> End {
    let mut fsm = fsm::Established::new(&ctx.cfg, &ctx.peer, their, local, timers.hold_s);
    update(&ctx.shared, |s| {
        s.state = SessionState::Established;
        s.established_at = Some(std::time::Instant::now());
        s.last_error = None;
    });
    let far = Duration::from_secs(86400 * 365);
    let mut hold_deadline = Instant::now() + timers.hold.unwrap_or(far);
    let first = ctx.desired.borrow_and_update().clone();
    let start = fsm.start(&first);
    if let Err(end) = apply(&ctx.shared, conn, timers.hold, &mut hold_deadline, start).await {
        return end;
    }
    let mut bfd_session = start_bfd(ctx, local);
    hold_deadline = Instant::now() + timers.hold.unwrap_or(far);
    let mut keepalive = tokio::time::interval(timers.keepalive.unwrap_or(far));
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    keepalive.tick().await;
    loop {
        let ev = tokio::select! {
            r = recv(conn, true) => match r {
                Err(end) => return end,
                Ok(m) => Event::Received(m),
            },
            _ = tokio::time::sleep_until(hold_deadline), if timers.hold.is_some() => Event::HoldTimerExpired,
            _ = keepalive.tick(), if timers.keepalive.is_some() => Event::KeepaliveDue,
            r = ctx.desired.changed() => match r {
                Err(_) => Event::SpeakerGone,
                Ok(()) => Event::RoutesChanged(ctx.desired.borrow_and_update().clone()),
            },
            r = ctx.control.changed() => Event::Control(if r.is_err() { Control::Restart } else { *ctx.control.borrow() }),
            st = bfd_changed(&mut bfd_session) => Event::Bfd(st),
        };
        let actions = fsm.step(ev);
        if let Err(end) = apply(&ctx.shared, conn, timers.hold, &mut hold_deadline, actions).await {
            return end;
        }
    }
}

/// Carry out one step's actions in order; `Err` once the session is over.
async fn apply(
    shared: &SharedRef,
    conn: &mut Conn,
    hold: Option<Duration>,
    hold_deadline: &mut Instant,
    actions: Vec<Action>,
) -> Result<(), End> {
    for a in actions {
        match a {
            Action::Send(m) => send(conn, m).await.map_err(|e| failed(e, true))?,
            Action::SendAll(ms) => send_all(conn, ms).await.map_err(|e| failed(e, true))?,
            Action::RestartHoldTimer => {
                if let Some(h) = hold {
                    *hold_deadline = Instant::now() + h;
                }
            }
            Action::Announced(a) => update(shared, |s| s.announced = a),
            Action::Bfd(st) => update(shared, |s| s.bfd = Some(st)),
            Action::Notify { message, end } => {
                let _ = send(conn, message).await;
                return Err(end);
            }
            Action::Shutdown(msgs) => {
                if let Err(e) = send_all(conn, msgs).await {
                    warn!(error = %e, "withdrawing on shutdown");
                }
                let _ = conn.close().await;
                info!("shut down: routes withdrawn, Cease sent");
                return Err(End::Stopped);
            }
            Action::End(end) => return Err(end),
        }
    }
    Ok(())
}

/// The BFD session for this peer, if it has one configured and it starts.
fn start_bfd(ctx: &PeerCtx, local: IpAddr) -> Option<bfd::Session> {
    match (&ctx.bfd, ctx.peer.bfd) {
        (Some(hub), Some(bcfg)) => match hub.session(local, ctx.peer.address, bcfg) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %crate::Chain(&e), "BFD session not started");
                None
            }
        },
        _ => None,
    }
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
    use crate::bgp::{RoutePolicy, Shared};
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
