//! Hosts of our own, for tests that need root: network namespaces joined
//! by a bridge, each with its own loopback, routes, iptables and
//! resolv.conf (`ip netns exec` mounts /etc/netns/<name>/resolv.conf).
//! Everything is deleted on drop.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// Whether this test can create namespaces and iptables rules. When not,
/// it says why on stderr and the caller returns (skips).
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("SKIPPED {test}: needs root (network namespaces, iptables); CI runs it as root");
    false
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A name no other namespace of this machine uses now.
fn unique(role: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("kg{}-{n}-{role}", std::process::id())
}

fn must(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(role: &str) -> Netns {
        let ns = Netns { name: unique(role) };
        must(Command::new("ip").args(["netns", "add", &ns.name]));
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> <args>`, asserting success.
    pub fn ip(&self, args: &[&str]) {
        must(Command::new("ip").args(["-n", &self.name]).args(args));
    }

    /// `program` inside the namespace, as `uid` (and the same gid) when given.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>, uid: Option<u32>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]);
        if let Some(uid) = uid {
            cmd.args([
                "setpriv",
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
            ]);
        }
        cmd.arg(program);
        cmd
    }

    /// Runs `args` in the namespace as root, asserting success; stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = must(self.command(args[0], None).args(&args[1..]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `args` as `uid`, whatever the outcome.
    pub fn output_as(&self, uid: Option<u32>, args: &[&str]) -> Output {
        self.command(args[0], uid)
            .args(&args[1..])
            .output()
            .expect("run a command in a namespace")
    }

    fn etc_dir(&self) -> PathBuf {
        PathBuf::from("/etc/netns").join(&self.name)
    }

    /// What /etc/resolv.conf says for processes started in the namespace.
    pub fn set_resolv_conf(&self, text: &str) {
        std::fs::create_dir_all(self.etc_dir()).expect("create /etc/netns/<ns>");
        std::fs::write(self.etc_dir().join("resolv.conf"), text).expect("write resolv.conf");
    }

    /// `iptables-save` (or ip6tables-save with `v6`) without counters,
    /// timestamps or comments: what two snapshots compare on.
    pub fn iptables_state(&self, tool: &str) -> String {
        self.run(&[tool])
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| match l.find(" [") {
                Some(i) if l.starts_with(':') => l[..i].to_string(),
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = std::fs::remove_dir_all(self.etc_dir());
    }
}

/// Hosts on one /24 (10.77.0.0/24) behind a bridge that lives in the
/// first host's namespace (10.77.0.1), each host's default route through it.
pub struct Lan {
    pub hosts: Vec<(Netns, Ipv4Addr)>,
}

impl Lan {
    pub fn new(roles: &[&str]) -> Lan {
        let mut hosts: Vec<(Netns, Ipv4Addr)> = Vec::new();
        for (i, role) in roles.iter().enumerate() {
            let ns = Netns::create(role);
            let ip = Ipv4Addr::new(10, 77, 0, i as u8 + 1);
            if i == 0 {
                ns.ip(&["link", "add", "br0", "type", "bridge"]);
                ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "br0"]);
                ns.ip(&["link", "set", "br0", "up"]);
            } else {
                let bridge = &hosts[0].0;
                let port = format!("p{i}");
                must(Command::new("ip").args([
                    "link",
                    "add",
                    &port,
                    "netns",
                    &bridge.name,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    &ns.name,
                ]));
                bridge.ip(&["link", "set", &port, "master", "br0", "up"]);
                ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
                ns.ip(&["link", "set", "eth0", "up"]);
                // Without a route, connecting to a VIP (240.0.0.0/4) fails
                // before iptables can redirect it: real hosts have one.
                ns.ip(&["route", "add", "default", "via", "10.77.0.1"]);
            }
            hosts.push((ns, ip));
        }
        Lan { hosts }
    }

    pub fn ns(&self, i: usize) -> &Netns {
        &self.hosts[i].0
    }

    pub fn addr(&self, i: usize) -> Ipv4Addr {
        self.hosts[i].1
    }
}
