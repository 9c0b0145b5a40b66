//! The client side's TLS session cache for mesh mTLS. rustls's default
//! keeps 8 tickets per peer, which a burst of new connections to one peer
//! (an L4 caller opening a connection per request) empties at once, so
//! that a third of such connections paid a full handshake (measured:
//! `envoy_listener_ssl_session_reused` on the peer). This one keeps 16 per
//! peer, for at most 64 peers per cluster, so that it stays small (a
//! ticket is about a kilobyte, the peer's certificates included). TLS 1.2
//! is never used between proxies, so it keeps nothing of it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use rustls::NamedGroup;
use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::ServerName;

const TICKETS_PER_PEER: usize = 16;
const PEERS: usize = 64;

#[derive(Debug, Default)]
pub struct MeshSessionCache {
    peers: Mutex<HashMap<ServerName<'static>, PeerSessions>>,
}

#[derive(Debug, Default)]
struct PeerSessions {
    kx_hint: Option<NamedGroup>,
    /// Oldest first; the newest is used first.
    tickets: VecDeque<Tls13ClientSessionValue>,
}

impl MeshSessionCache {
    fn with_peer<T>(&self, name: ServerName<'static>, f: impl FnOnce(&mut PeerSessions) -> T) -> T {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if !peers.contains_key(&name) && peers.len() >= PEERS {
            // Any one goes: a peer left out costs one full handshake.
            if let Some(old) = peers.keys().next().cloned() {
                peers.remove(&old);
            }
        }
        f(peers.entry(name).or_default())
    }
}

impl ClientSessionStore for MeshSessionCache {
    fn set_kx_hint(&self, name: ServerName<'static>, group: NamedGroup) {
        self.with_peer(name, |p| p.kx_hint = Some(group));
    }

    fn kx_hint(&self, name: &ServerName<'_>) -> Option<NamedGroup> {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.get(&name.to_owned()).and_then(|p| p.kx_hint)
    }

    fn set_tls12_session(&self, _: ServerName<'static>, _: Tls12ClientSessionValue) {}

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        None
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {}

    fn insert_tls13_ticket(&self, name: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.with_peer(name, |p| {
            if p.tickets.len() >= TICKETS_PER_PEER {
                p.tickets.pop_front();
            }
            p.tickets.push_back(value);
        });
    }

    fn take_tls13_ticket(&self, name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.get_mut(name).and_then(|p| p.tickets.pop_back())
    }
}
