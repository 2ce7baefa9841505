//! The protocol half of one BGP session, without sockets: the check of the peer's OPEN and
//! the Established state as `Established::step(Event) -> Vec<Action>`.
//!
//! `session.rs` owns the TCP connection and the timers: it turns reads, timer ticks, route
//! table changes, control changes and BFD changes into [`Event`]s and carries out the
//! returned [`Action`]s in order. After every step the caller must perform every action
//! until one ends the session (a failed write ends it too); nothing here blocks or writes.
use std::{collections::BTreeMap, net::IpAddr, sync::Arc, time::Duration};

use netgauze_bgp_pkt::{
    notification::{BgpNotificationMessage, FiniteStateMachineError, OpenMessageError},
    BgpMessage,
};
use tracing::{debug, info, warn};

use super::{
    bfd::BfdState,
    config::{BgpConfig, PeerConfig, RoutePolicy},
    wire, Control, Routes,
};

/// Why a session ended.
pub(super) enum End {
    /// Shutdown or restart requested: the task exits.
    Stopped,
    /// The session failed; reconnect. `established` says whether it got that far.
    Failed { error: String, established: bool },
}

pub(super) fn failed(error: impl Into<String>, established: bool) -> End {
    End::Failed {
        error: error.into(),
        established,
    }
}

/// Our hold time for this peer (its own, else the speaker's).
pub(super) fn our_hold(cfg: &BgpConfig, p: &PeerConfig) -> u16 {
    p.hold_time_s.unwrap_or(cfg.hold_time_s)
}

/// The peer's OPEN refused: the NOTIFICATION to send it and why.
pub(super) struct Refusal {
    pub notification: BgpMessage,
    pub why: String,
}

/// What the two OPENs agreed on.
pub(super) struct Timers {
    /// The negotiated hold time in seconds (0: no timers at all).
    pub hold_s: u16,
    pub hold: Option<Duration>,
    pub keepalive: Option<Duration>,
}

fn refuse(e: OpenMessageError, why: String) -> Refusal {
    Refusal {
        notification: BgpMessage::Notification(BgpNotificationMessage::OpenMessageError(e)),
        why,
    }
}

/// OpenSent: accept the peer's OPEN (RFC 4271 6.2) or say which NOTIFICATION refuses it.
pub(super) fn check_open(
    cfg: &BgpConfig,
    p: &PeerConfig,
    their: &wire::PeerOpen,
) -> Result<Timers, Refusal> {
    if their.asn != p.remote_as {
        return Err(refuse(
            OpenMessageError::BadPeerAs {
                value: Box::new([]),
            },
            format!("peer says AS {}, configured {}", their.asn, p.remote_as),
        ));
    }
    if their.hold_time_s == 1 || their.hold_time_s == 2 {
        return Err(refuse(
            OpenMessageError::UnacceptableHoldTime {
                value: Box::new([]),
            },
            format!("unacceptable hold time {}", their.hold_time_s),
        ));
    }
    let ebgp = p.remote_as != cfg.local_as;
    if !ebgp && their.router_id == cfg.router_id {
        return Err(refuse(
            OpenMessageError::BadBgpIdentifier {
                value: Box::new([]),
            },
            "iBGP peer has our router id".into(),
        ));
    }
    let hold_s = our_hold(cfg, p).min(their.hold_time_s);
    // Zero hold time: neither keepalives nor a hold timer (RFC 4271 4.4).
    let hold = (hold_s > 0).then(|| Duration::from_secs(u64::from(hold_s)));
    let keepalive = hold.map(|h| (h / 3).max(Duration::from_millis(333)));
    debug!(?their, hold = hold_s, "OPEN received");
    Ok(Timers {
        hold_s,
        hold,
        keepalive,
    })
}

/// What happened to an Established session.
pub(super) enum Event {
    /// A message from the peer other than NOTIFICATION (read errors, malformed messages
    /// and NOTIFICATIONs end the session in the I/O task).
    Received(BgpMessage),
    HoldTimerExpired,
    KeepaliveDue,
    /// The speaker's desired table changed.
    RoutesChanged(Arc<Routes>),
    /// The speaker is gone without a shutdown.
    SpeakerGone,
    /// The control channel changed (a closed channel is reported as `Restart`).
    Control(Control),
    Bfd(BfdState),
}

/// What the I/O task must do, in order.
pub(super) enum Action {
    /// Write one message; a failed write ends the session.
    Send(BgpMessage),
    /// Write these and flush; a failed write ends the session.
    SendAll(Vec<BgpMessage>),
    /// A message arrived: the hold timer starts over.
    RestartHoldTimer,
    /// These routes are advertised now (for status).
    Announced(Vec<IpAddr>),
    /// The BFD session is in this state (for status).
    Bfd(BfdState),
    /// Write `message` if the peer still reads, then end the session with `end`.
    Notify { message: BgpMessage, end: End },
    /// Write these if the peer still reads, close the connection; the task exits.
    Shutdown(Vec<BgpMessage>),
    /// The session is over.
    End(End),
}

/// An Established session: what we offer the peer and what it has from us.
pub(super) struct Established {
    attrs: wire::RouteAttrs,
    can_v4: bool,
    can_v6: bool,
    advertised: Routes,
    /// The session only falls on a BFD failure it has seen come up.
    bfd_was_up: bool,
}

impl Established {
    /// OpenConfirm got its KEEPALIVE: the session's attributes from both OPENs and the
    /// local address of the connection (the default next hop).
    pub fn new(
        cfg: &BgpConfig,
        p: &PeerConfig,
        their: &wire::PeerOpen,
        local: IpAddr,
        hold_s: u16,
    ) -> Self {
        let ebgp = p.remote_as != cfg.local_as;
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
            hold = hold_s,
            ebgp,
            ipv4 = can_v4,
            ipv6 = can_v6,
            peer_gr = their.graceful_restart,
            route_refresh = their.route_refresh,
            "Established"
        );
        Established {
            attrs,
            can_v4,
            can_v6,
            advertised: Routes::new(),
            bfd_was_up: false,
        }
    }

    /// The first step: the full table, then End-of-RIB per family.
    pub fn start(&mut self, desired: &Routes) -> Vec<Action> {
        self.advertised = self.eligible(desired);
        vec![Action::SendAll(self.table()), self.announced()]
    }

    pub fn step(&mut self, ev: Event) -> Vec<Action> {
        match ev {
            Event::Received(m) => {
                let mut out = vec![Action::RestartHoldTimer];
                out.extend(self.received(m));
                out
            }
            Event::HoldTimerExpired => vec![Action::Notify {
                message: wire::hold_timer_expired(),
                end: failed("hold timer expired", true),
            }],
            Event::KeepaliveDue => vec![Action::Send(BgpMessage::KeepAlive)],
            Event::RoutesChanged(want) => self.routes_changed(&want),
            // Behave like a crash.
            Event::SpeakerGone => vec![Action::End(End::Stopped)],
            Event::Control(c) => self.control(c),
            Event::Bfd(st) => self.bfd(st),
        }
    }

    fn received(&mut self, m: BgpMessage) -> Vec<Action> {
        match m {
            BgpMessage::RouteRefresh(_) => {
                debug!("route refresh: sending the table again");
                vec![Action::SendAll(self.table())]
            }
            BgpMessage::Open(_) => {
                let n = BgpNotificationMessage::FiniteStateMachineError(
                    FiniteStateMachineError::ReceiveUnexpectedMessageInEstablishedState {
                        value: Box::new([]),
                    },
                );
                vec![Action::Notify {
                    message: BgpMessage::Notification(n),
                    end: failed("OPEN in Established", true),
                }]
            }
            // We import nothing.
            _ => Vec::new(),
        }
    }

    fn routes_changed(&mut self, desired: &Routes) -> Vec<Action> {
        let want = self.eligible(desired);
        // New prefixes and ones whose policy changed: announcing again replaces the
        // route at the peer (RFC 4271 3.1), no withdrawal in between.
        let add: Routes = want
            .iter()
            .filter(|(a, p)| self.advertised.get(a) != Some(p))
            .map(|(a, p)| (*a, p.clone()))
            .collect();
        let del: Vec<IpAddr> = self
            .advertised
            .keys()
            .filter(|a| !want.contains_key(a))
            .copied()
            .collect();
        let (d4, d6) = wire::split(del.iter().copied());
        let mut msgs = wire::withdraw(&d4, &d6);
        msgs.extend(announcements(&self.attrs, &add));
        let mut out = Vec::new();
        if !msgs.is_empty() {
            debug!(announce = add.len(), withdraw = del.len(), "UPDATE");
            out.push(Action::SendAll(msgs));
        }
        self.advertised = want;
        out.push(self.announced());
        out
    }

    fn control(&mut self, how: Control) -> Vec<Action> {
        match how {
            Control::Run => Vec::new(),
            Control::Restart => {
                info!("closing for graceful restart (routes kept by the peer)");
                vec![Action::End(End::Stopped)]
            }
            Control::Shutdown => {
                let (v4, v6) = wire::split(self.advertised.keys().copied());
                let mut msgs = wire::withdraw(&v4, &v6);
                msgs.push(wire::cease_admin_shutdown());
                vec![Action::Shutdown(msgs)]
            }
        }
    }

    fn bfd(&mut self, st: BfdState) -> Vec<Action> {
        let mut out = vec![Action::Bfd(st)];
        if st == BfdState::Up {
            self.bfd_was_up = true;
        } else if self.bfd_was_up {
            // The session only falls on a BFD failure it has seen come up: a
            // router without BFD configured must not keep us from Established.
            out.push(Action::Notify {
                message: wire::cease_bfd_down(),
                end: failed("BFD session went down", true),
            });
        }
        out
    }

    /// The routes of the families this session carries.
    fn eligible(&self, routes: &Routes) -> Routes {
        routes
            .iter()
            .filter(|(a, _)| {
                if a.is_ipv4() {
                    self.can_v4
                } else {
                    self.can_v6
                }
            })
            .map(|(a, p)| (*a, p.clone()))
            .collect()
    }

    fn announced(&self) -> Action {
        Action::Announced(self.advertised.keys().copied().collect())
    }

    /// Everything advertised, then End-of-RIB for each family the session carries.
    fn table(&self) -> Vec<BgpMessage> {
        let mut msgs = announcements(&self.attrs, &self.advertised);
        if self.can_v4 {
            msgs.push(wire::end_of_rib(false));
        }
        if self.can_v6 {
            msgs.push(wire::end_of_rib(true));
        }
        msgs
    }
}

/// UPDATEs for `routes`: one group per distinct policy, each with the session's attributes
/// refined by that policy.
fn announcements(base: &wire::RouteAttrs, routes: &Routes) -> Vec<BgpMessage> {
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

#[cfg(test)]
mod tests {
    //! Steps of the state machine alone: no socket, no timer.
    use super::*;
    use std::net::Ipv4Addr;

    fn session() -> (BgpConfig, PeerConfig, wire::PeerOpen) {
        let peer = PeerConfig::new("192.0.2.1".parse().unwrap(), 65000);
        let cfg = BgpConfig::new(65001, Ipv4Addr::new(10, 0, 0, 2), vec![peer.clone()]);
        let their = wire::PeerOpen {
            asn: 65000,
            hold_time_s: 9,
            router_id: Ipv4Addr::new(10, 0, 0, 1),
            asn4: true,
            ipv4: true,
            ipv6: false,
            route_refresh: true,
            graceful_restart: true,
        };
        (cfg, peer, their)
    }

    fn established() -> Established {
        let (cfg, peer, their) = session();
        Established::new(&cfg, &peer, &their, "192.0.2.2".parse().unwrap(), 9)
    }

    #[test]
    fn open_checks_name_the_problem() {
        let (cfg, peer, mut their) = session();
        let t = check_open(&cfg, &peer, &their).ok().unwrap();
        assert_eq!((t.hold_s, t.keepalive), (9, Some(Duration::from_secs(3))));
        their.hold_time_s = 2;
        let r = check_open(&cfg, &peer, &their).err().unwrap();
        assert_eq!(r.why, "unacceptable hold time 2");
        their.asn = 65002;
        let r = check_open(&cfg, &peer, &their).err().unwrap();
        assert_eq!(r.why, "peer says AS 65002, configured 65000");
    }

    #[test]
    fn bfd_down_ends_the_session_only_after_it_was_up() {
        let mut s = established();
        let a = s.step(Event::Bfd(BfdState::Down));
        assert!(matches!(a[..], [Action::Bfd(BfdState::Down)]));
        s.step(Event::Bfd(BfdState::Up));
        let a = s.step(Event::Bfd(BfdState::Down));
        assert!(matches!(
            &a[..],
            [
                Action::Bfd(BfdState::Down),
                Action::Notify {
                    end: End::Failed {
                        established: true,
                        ..
                    },
                    ..
                }
            ]
        ));
    }

    #[test]
    fn shutdown_withdraws_then_ceases_and_restart_just_stops() {
        let mut s = established();
        let v4: IpAddr = "192.0.2.10".parse().unwrap();
        let table: Routes = [(v4, RoutePolicy::default())].into();
        let a = s.start(&table);
        assert!(
            matches!(&a[..], [Action::SendAll(m), Action::Announced(p)] if m.len() == 2 && p == &vec![v4])
        );
        assert!(matches!(
            s.step(Event::Control(Control::Restart))[..],
            [Action::End(End::Stopped)]
        ));
        let a = s.step(Event::Control(Control::Shutdown));
        let [Action::Shutdown(msgs)] = &a[..] else {
            panic!("expected one Shutdown action")
        };
        assert!(matches!(msgs.last(), Some(BgpMessage::Notification(_))));
        assert_eq!(msgs.len(), 2, "one withdrawal UPDATE, then the Cease");
    }
}
