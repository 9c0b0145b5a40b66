"""Processes the benchmark starts, and what /proc says about them."""
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")

# The CPUs each side runs on when pinned (`--pin`): the load generators on
# one, the proxies and the application on the others, so that the client
# never takes the proxies' core and ratios stop swinging with scheduling.
PIN = {}


def pin(n_cpus):
    """Pins the client to CPU 0 and everything measured to the rest."""
    PIN["client"] = "0"
    PIN["server"] = f"1-{n_cpus - 1}" if n_cpus > 2 else "1"


def pinned(role, cmd):
    """`cmd`, run on `role`'s CPUs when pinning is on (taskset execs the
    command, so the pid stays the command's)."""
    cpus = PIN.get(role)
    return ["taskset", "-c", cpus, *cmd] if cpus else list(cmd)


class Proc:
    """A child whose output goes to a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name, cmd, log_dir: Path, role="server"):
        self.name = name
        self.log = log_dir / f"{name}.log"
        self.started = time.monotonic()
        with open(self.log, "wb") as out:
            self.popen = subprocess.Popen(pinned(role, cmd), stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL)

    @property
    def pid(self):
        return self.popen.pid

    def stop(self, timeout=10):
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def alive(self):
        return self.popen.poll() is None


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kib(pid, field):
    """VmRSS (resident now) or VmHWM (resident at its peak), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def http_status(url, timeout=1.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except OSError:
        return None, b""


def wait_until(what, check, timeout=30.0, procs=()):
    """Polls `check` until true; fails with the logs of `procs` if it never is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        for p in procs:
            if not p.alive():
                raise RuntimeError(f"{p.name} exited while waiting for {what}; see {p.log}")
        time.sleep(0.005)
    raise RuntimeError(f"timed out waiting for {what}")
