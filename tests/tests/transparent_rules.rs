//! `koguma-dp install/uninstall transparent-proxy` in network namespaces of
//! their own: dry runs, reinstalling, refusing bad flags and uninstalling
//! exactly, on the nf_tables and legacy back ends.

use koguma_e2e::binaries;
use koguma_e2e::netns::{Netns, root_or_skip};

/// Install, reinstall, uninstall and dry runs, on both iptables back ends.
#[test]
fn rules_install_idempotently_and_uninstall_exactly() {
    if !root_or_skip("rules_install_idempotently_and_uninstall_exactly") {
        return;
    }
    let dp = binaries::path("koguma-dp");
    let dp = dp.to_str().expect("path");
    for (backend, save) in [
        ("nft", "iptables-nft-save"),
        ("legacy", "iptables-legacy-save"),
    ] {
        let ns = Netns::create(backend);
        ns.set_resolv_conf("nameserver 10.99.0.53\n");
        // Someone else's rule, in the back end under test: it must survive,
        // and it tells auto-detection which back end is in use.
        let other = if backend == "nft" {
            "iptables-nft"
        } else {
            "iptables-legacy"
        };
        ns.run(&[
            other,
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-d",
            "10.9.9.9/32",
            "-j",
            "RETURN",
        ]);
        let v6save = save.replace("iptables", "ip6tables");
        if backend == "legacy" {
            // The kernel keeps a legacy table once a namespace has used it
            // (nf_tables ones are deleted when left empty): on a host with
            // legacy iptables in use these already exist.
            ns.run(&["iptables-legacy", "-t", "raw", "-S"]);
            ns.run(&["ip6tables-legacy", "-t", "nat", "-S"]);
        }
        let before = (ns.iptables_state(save), ns.iptables_state(&v6save));

        let dry = ns.run(&[
            dp,
            "install",
            "transparent-proxy",
            "--redirect-dns",
            "--dry-run",
        ]);
        assert!(dry.contains("-A KUMA_MESH_OUTBOUND_REDIRECT -p tcp -m comment --comment kuma/mesh/transparent/proxy/outbound/to-proxy -j REDIRECT --to-ports 15001"), "{dry}");
        assert!(
            dry.contains("-d 10.99.0.53 -p udp -m udp --dport 53"),
            "{dry}"
        );
        assert_eq!(
            (ns.iptables_state(save), ns.iptables_state(&v6save)),
            before,
            "--dry-run changed nothing"
        );

        let args = [
            dp,
            "install",
            "transparent-proxy",
            "--redirect-dns",
            "--exclude-inbound-ports",
            "22",
        ];
        let said = ns.run(&args);
        assert!(
            said.contains(if backend == "nft" {
                "nf_tables"
            } else {
                "legacy"
            }),
            "{said}"
        );
        let installed = ns.iptables_state(save);
        assert!(
            installed.contains("--to-ports 15006") && installed.contains("--dport 22"),
            "{installed}"
        );
        assert!(installed.contains("-A OUTPUT -d 10.9.9.9/32 -j RETURN"));
        assert!(ns.iptables_state(&v6save).contains("-s ::6/128 -o lo"));
        ns.run(&args);
        assert_eq!(
            ns.iptables_state(save),
            installed,
            "installing twice leaves the same rules"
        );

        // A bad flag changes nothing and names itself.
        let bad = ns.output_as(
            None,
            &[
                dp,
                "install",
                "transparent-proxy",
                "--exclude-outbound-ips",
                "10.0.0.300",
            ],
        );
        assert!(!bad.status.success());
        assert!(
            String::from_utf8_lossy(&bad.stderr).contains("--exclude-outbound-ips: \"10.0.0.300\"")
        );
        assert_eq!(ns.iptables_state(save), installed);

        ns.run(&[dp, "uninstall", "transparent-proxy"]);
        assert_eq!(
            (ns.iptables_state(save), ns.iptables_state(&v6save)),
            before,
            "uninstall restores the {backend} rules"
        );
    }
}
