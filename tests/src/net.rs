//! Addresses for one test: a /28 of loopback addresses no other test of
//! this run uses (tests run in parallel, in one process or several), and
//! free ports on 127.0.0.1 for the admin listeners.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT_BLOCK: AtomicU32 = AtomicU32::new(0);

pub struct TestNet {
    base: [u8; 3],
    block: u8,
}

impl TestNet {
    pub fn new() -> TestNet {
        let block = NEXT_BLOCK.fetch_add(1, Ordering::Relaxed);
        assert!(block < 15, "one test process ran out of address blocks");
        let pid = std::process::id() % 65536;
        let a = 1 + ((pid >> 8) % 254) as u8;
        TestNet {
            base: [127, a, (pid & 0xff) as u8],
            block: (block as u8 + 1) * 16,
        }
    }

    /// The `i`-th host address of this test (0..16).
    pub fn host(&self, i: u8) -> IpAddr {
        assert!(i < 16);
        IpAddr::V4(Ipv4Addr::new(
            self.base[0],
            self.base[1],
            self.base[2],
            self.block + i,
        ))
    }

    /// A port free on 127.0.0.1 right now.
    pub fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port()
    }
}

impl Default for TestNet {
    fn default() -> Self {
        Self::new()
    }
}
