//! Running iptables: which back end holds the rules (nf_tables or legacy),
//! and the save/restore calls, for IPv4 and IPv6.

use std::io::Write;
use std::process::{Command, Stdio};

use super::rules::Family;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Nft,
    Legacy,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Nft => "nf_tables",
            Backend::Legacy => "legacy",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error("cannot run {program}: {source} (is the iptables package installed?)")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("no iptables found: install the iptables package (iptables-nft or iptables-legacy)")]
    NotInstalled,
}

/// The commands of one back end.
#[derive(Debug, Clone)]
pub struct Iptables {
    pub backend: Backend,
    /// Whether the back end's own names exist (`iptables-nft-save`); else
    /// plain `iptables-save` is that back end.
    suffixed: bool,
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, IptablesError> {
    let spawn = |source| IptablesError::Spawn {
        program: program.to_string(),
        source,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).map_err(spawn)?;
    }
    let out = child.wait_with_output().map_err(spawn)?;
    if !out.status.success() {
        return Err(IptablesError::Failed {
            program: format!("{program} {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn exists(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether a save output holds any rule at all.
fn has_rules(save: &str) -> bool {
    save.lines().any(|l| l.starts_with("-A "))
}

impl Iptables {
    /// The back end in use: the one that already holds rules (legacy only
    /// when nf_tables holds none, as Kuma decides), else nf_tables when
    /// this host has it. `forced` skips the guess.
    pub fn detect(forced: Option<Backend>) -> Result<Iptables, IptablesError> {
        let suffixed = |b: Backend| exists(&format!("iptables-{}-save", b.suffix()));
        if let Some(b) = forced {
            return Ok(Iptables {
                backend: b,
                suffixed: suffixed(b),
            });
        }
        let nft = suffixed(Backend::Nft);
        let legacy = suffixed(Backend::Legacy);
        if nft && legacy {
            let holds = |b: Backend| {
                let ipt = Iptables {
                    backend: b,
                    suffixed: true,
                };
                [Family::V4, Family::V6]
                    .iter()
                    .any(|f| ipt.save(*f).is_ok_and(|s| has_rules(&s)))
            };
            let backend = if !holds(Backend::Nft) && holds(Backend::Legacy) {
                Backend::Legacy
            } else {
                Backend::Nft
            };
            return Ok(Iptables {
                backend,
                suffixed: true,
            });
        }
        if nft || legacy {
            let backend = if nft { Backend::Nft } else { Backend::Legacy };
            return Ok(Iptables {
                backend,
                suffixed: true,
            });
        }
        // Only plain names: `iptables --version` says which it is.
        let version =
            run("iptables", &["--version"], None).map_err(|_| IptablesError::NotInstalled)?;
        let backend = if version.contains("legacy") {
            Backend::Legacy
        } else {
            Backend::Nft
        };
        Ok(Iptables {
            backend,
            suffixed: false,
        })
    }

    fn program(&self, family: Family, tool: &str) -> String {
        let base = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        if self.suffixed {
            format!("{base}-{}-{tool}", self.backend.suffix())
        } else {
            format!("{base}-{tool}")
        }
    }

    pub fn save(&self, family: Family) -> Result<String, IptablesError> {
        run(&self.program(family, "save"), &[], None)
    }

    /// Applies `input` in one transaction, keeping every rule it does not
    /// name. Waits up to 5 s for the xtables lock, as Kuma does.
    pub fn restore(&self, family: Family, input: &str) -> Result<(), IptablesError> {
        run(
            &self.program(family, "restore"),
            &["--noflush", "--wait", "5"],
            Some(input),
        )
        .map(|_| ())
    }

    /// Replaces the tables named in `input` with exactly its content: used
    /// to put back what a failed install changed.
    pub fn restore_exact(&self, family: Family, input: &str) -> Result<(), IptablesError> {
        run(
            &self.program(family, "restore"),
            &["--wait", "5"],
            Some(input),
        )
        .map(|_| ())
    }

    /// With nf_tables, touching a table creates it, and it stays after our
    /// rules are gone. Tables left with no rule, no chain of their own and
    /// every policy ACCEPT do nothing: they are deleted, so that the host
    /// looks as before the install. Legacy tables cannot be removed (the
    /// kernel keeps them), but they are just as empty.
    pub fn drop_empty_tables(&self, family: Family, tables: &[&str]) {
        if self.backend != Backend::Nft {
            return;
        }
        let Ok(save) = self.save(family) else { return };
        let nft_family = match family {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        };
        for table in tables {
            if !table_is_empty(&save, table) {
                continue;
            }
            if let Err(e) = run("nft", &["delete", "table", nft_family, table], None) {
                tracing::debug!(table, error = %e, "empty table left in place");
            }
        }
    }
}

/// Whether `table` in a save output is present and holds nothing.
fn table_is_empty(save: &str, table: &str) -> bool {
    let mut inside = false;
    let mut seen = false;
    for line in save.lines() {
        if let Some(t) = line.strip_prefix('*') {
            inside = t.trim() == table;
            seen |= inside;
            continue;
        }
        if !inside || line.starts_with('#') || line == "COMMIT" {
            continue;
        }
        let builtin_accept = line.strip_prefix(':').is_some_and(|decl| {
            let mut words = decl.split_whitespace();
            let chain = words.next().unwrap_or_default();
            chain.chars().all(|c| c.is_ascii_uppercase()) && words.next() == Some("ACCEPT")
        });
        if !builtin_accept {
            return false;
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::table_is_empty;

    #[test]
    fn empty_tables() {
        let save = "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j RETURN\nCOMMIT\n*filter\n:INPUT DROP [0:0]\nCOMMIT\n";
        assert!(table_is_empty(save, "raw"));
        assert!(!table_is_empty(save, "nat"));
        assert!(!table_is_empty(save, "filter"));
        assert!(!table_is_empty(save, "mangle"));
    }
}
