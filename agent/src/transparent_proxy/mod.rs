//! `koguma-dp install transparent-proxy` and `uninstall transparent-proxy`:
//! Kuma's iptables rules (same flags, defaults, chains and comments),
//! applied per address family in one iptables-restore transaction each.
//! A failure puts back what was there before.

mod iptables;
mod options;
mod removal;
mod rules;

use std::process::Command;

use anyhow::{Context, bail};

pub use options::{InstallArgs, UninstallArgs};

use iptables::Iptables;
use removal::Removal;
use rules::Family;

fn families(ipv6: bool) -> Vec<Family> {
    // Kuma skips IPv6 silently on hosts without it.
    if ipv6 && host_has_ipv6() {
        vec![Family::V4, Family::V6]
    } else {
        vec![Family::V4]
    }
}

fn host_has_ipv6() -> bool {
    std::fs::read_to_string("/proc/net/if_inet6").is_ok_and(|s| !s.trim().is_empty())
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

fn require_root() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("changing iptables rules needs root (try --dry-run to see the rules)");
    }
    Ok(())
}

/// The tables of a save output named by `tables`, as restore input that
/// puts them back exactly (restore without --noflush replaces only the
/// tables it names).
fn tables_of(save: &str, tables: &[&str]) -> String {
    let mut out = String::new();
    let mut keep = false;
    for line in save.lines() {
        if let Some(t) = line.strip_prefix('*') {
            keep = tables.contains(&t.trim());
        }
        if keep && !line.starts_with('#') {
            out.push_str(line);
            out.push('\n');
        }
        if line == "COMMIT" {
            keep = false;
        }
    }
    out
}

pub fn install(args: InstallArgs) -> anyhow::Result<()> {
    let config = args.rule_config()?;
    let families = families(args.ipv6());
    if args.dry_run {
        // Reading the rules in force is harmless; without iptables (or
        // root) the output shows a fresh install.
        let ipt = Iptables::detect(args.backend()).ok();
        for f in &families {
            let removal = ipt
                .as_ref()
                .and_then(|i| i.save(*f).ok())
                .map(|s| Removal::from_save(&s))
                .unwrap_or_default();
            println!("# {} rules (iptables-restore --noflush)", family_name(*f));
            print!("{}", config.restore_input(*f, &removal));
        }
        return Ok(());
    }
    require_root()?;
    let ipt = Iptables::detect(args.backend())?;
    let mut done: Vec<(Family, String)> = Vec::new();
    for f in &families {
        let result = (|| -> anyhow::Result<String> {
            let before = ipt.save(*f)?;
            let input = config.restore_input(*f, &Removal::from_save(&before));
            if args.verbose {
                println!("# {} ({})\n{input}", family_name(*f), ipt.backend.name());
            }
            ipt.restore(*f, &input)?;
            Ok(before)
        })();
        match result {
            Ok(before) => done.push((*f, before)),
            Err(e) => {
                for (family, before) in done.iter().rev() {
                    if let Err(undo) =
                        ipt.restore_exact(*family, &tables_of(before, &["raw", "nat"]))
                    {
                        eprintln!(
                            "could not put back the {} rules: {undo}",
                            family_name(*family)
                        );
                    }
                }
                return Err(e.context(format!(
                    "installing the {} rules failed; nothing was changed",
                    family_name(*f)
                )));
            }
        }
    }
    if families.contains(&Family::V6) {
        add_ipv6_passthrough_address()?;
    }
    let fams: Vec<&str> = families.iter().map(|f| family_name(*f)).collect();
    println!(
        "transparent proxy installed ({}, {}): outbound -> {}, inbound -> {}{}; run koguma-dp as UID {} with --transparent-proxy",
        ipt.backend.name(),
        fams.join(" and "),
        config.outbound_port,
        if config.redirect_inbound {
            config.inbound_port.to_string()
        } else {
            "not redirected".into()
        },
        if config.redirect_dns {
            format!(", DNS -> {}", config.dns_port)
        } else {
            String::new()
        },
        config.uid,
    );
    Ok(())
}

pub fn uninstall(args: UninstallArgs) -> anyhow::Result<()> {
    if !args.dry_run {
        require_root()?;
    }
    let ipt = Iptables::detect(args.backend())?;
    let mut removed = 0;
    for f in families(true) {
        let save = match ipt.save(f) {
            Ok(s) => s,
            Err(e) if f == Family::V6 => {
                tracing::debug!(error = %e, "no IPv6 rules to look at");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let removal = Removal::from_save(&save);
        if removal.is_empty() {
            continue;
        }
        let input = removal.restore_input();
        if args.dry_run || args.verbose {
            println!("# {} ({})\n{input}", family_name(f), ipt.backend.name());
        }
        if !args.dry_run {
            ipt.restore(f, &input)
                .with_context(|| format!("removing the {} rules failed", family_name(f)))?;
            let tables: Vec<&str> = removal.tables().into_iter().collect();
            ipt.drop_empty_tables(f, &tables);
            removed += 1;
        }
    }
    if !args.dry_run {
        if removed == 0 {
            println!(
                "no transparent proxy rules found ({}): nothing to do",
                ipt.backend.name()
            );
        } else {
            println!("transparent proxy uninstalled ({})", ipt.backend.name());
        }
    }
    Ok(())
}

/// The proxy reaches the application from ::6 on IPv6, as from 127.0.0.6
/// on IPv4; unlike 127.0.0.0/8, ::6 is not local until added to `lo`.
fn add_ipv6_passthrough_address() -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(["-6", "addr", "add", "::6/128", "dev", "lo"])
        .output()
        .context("cannot run `ip` to add ::6 to lo (is iproute2 installed?)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let exists = stderr.contains("File exists") || stderr.contains("already assigned");
    if !out.status.success() && !exists {
        bail!("cannot add ::6 to lo: {}", stderr.trim());
    }
    Ok(())
}
