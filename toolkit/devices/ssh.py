"""The `ssh` transport, through the system OpenSSH client.

Using `ssh` itself (not a Python SSH library) means the user's `~/.ssh/config`, agent and
`known_hosts` work as they do in a terminal. Safety, since a device name, a user or a
path must never become a command:
- BatchMode=yes (no prompt ever hangs us), ConnectTimeout, StrictHostKeyChecking=yes
  (an unknown or changed host key is refused, never added; the error shows the fingerprint);
- `--` before the destination, and a host beginning with `-` refused outright;
- the remote command is ONE string built with `shlex.quote` for every argument;
- uploads go to a temp name then `mv`; the work folder is removed afterwards, and work
  folders abandoned by a lost connection are removed on the next connection.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from toolkit.devices.transport import Completed, Transport, stream
from toolkit.errors import BadInput, DeviceError

PULL_CAP = 512 * 2**20
# Work folders live under $TMPDIR/edgeward-work/run-*. A folder is stale when its runner
# (pid in .pid) is gone and that was over STALE_GRACE_S ago, or when nothing touched it
# for STALE_IDLE_MIN minutes (a session that died before starting the runner).
STALE_GRACE_S = 120
STALE_IDLE_MIN = 30

OPEN_SCRIPT = """set -e
base="${{TMPDIR:-/tmp}}/edgeward-work"
mkdir -p "$base"; chmod 700 "$base"
now=$(date +%s)
for d in "$base"/run-*; do
  [ -d "$d" ] || continue
  if [ -f "$d/.pid" ]; then
    kill -0 "$(cat "$d/.pid")" 2>/dev/null && continue
    age=$(( now - $(stat -c %Y "$d/.pid" 2>/dev/null || echo "$now") ))
    [ "$age" -gt {grace} ] || continue
  else
    [ -n "$(find "$d" -maxdepth 0 -mmin +{idle} 2>/dev/null)" ] || continue
  fi
  rm -rf -- "$d" && echo "cleaned $d" >&2
done
mktemp -d "$base/run-XXXXXXXX"
"""


def check_host(host: str) -> str:
    """Refuse host names that ssh would read as options or that carry shell metacharacters."""
    if not isinstance(host, str) or not host:
        raise BadInput("the ssh host is empty")
    if host.startswith("-"):
        raise BadInput(f"ssh host {host!r} begins with '-': refused (it would be read as an ssh option)")
    if not re.fullmatch(r"[A-Za-z0-9._:%\[\]-]+", host):
        raise BadInput(f"ssh host {host!r} has characters a host name cannot have")
    return host


class SshTransport(Transport):
    name = "ssh device"

    def __init__(self, transport: dict, device: str = "device"):
        self.host = check_host(transport.get("host"))
        self.user = transport.get("user")
        if self.user is not None and (not re.fullmatch(r"[A-Za-z0-9._][A-Za-z0-9._-]*", str(self.user))):
            raise BadInput(f"ssh user {self.user!r} is not a valid user name")
        self.port = transport.get("port")
        self.identity = transport.get("identity_file")
        self.known_hosts = transport.get("known_hosts")
        self.connect_timeout = int(transport.get("connect_timeout") or 10)
        self.python = transport.get("python") or "python3"
        self.device = device
        self.name = f"ssh device {device} ({self.destination})"

    @property
    def destination(self) -> str:
        where = f"{self.user}@{self.host}" if self.user else self.host
        return f"{where}:{self.port}" if self.port else where

    def ssh_args(self) -> list[str]:
        args = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}",
                "-o", "StrictHostKeyChecking=yes", "-o", "ServerAliveInterval=2", "-o", "ServerAliveCountMax=3",
                "-o", "ClearAllForwardings=yes", "-T"]
        if self.port:
            args += ["-p", str(int(self.port))]
        if self.user:
            args += ["-l", str(self.user)]
        if self.identity:
            args += ["-i", str(Path(self.identity).expanduser()), "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            args += ["-o", f'UserKnownHostsFile="{Path(self.known_hosts).expanduser()}"']
        return args

    def remote(self, script: str) -> list[str]:
        """argv that runs `script` (already quoted) on the device: `--` keeps the host a host."""
        return [*self.ssh_args(), "--", self.host, script]

    # -------------------------------------------------------------- the surface

    def _open(self) -> str:
        completed = stream(self.remote(OPEN_SCRIPT.format(grace=STALE_GRACE_S, idle=STALE_IDLE_MIN)),
                           timeout=self.connect_timeout + 30, what=self.name)
        self.classify(completed)
        workdir = completed.stdout.strip().splitlines()[-1] if completed.stdout.strip() else ""
        if completed.returncode != 0 or "/edgeward-work/run-" not in workdir:
            raise DeviceError(f"{self.name}: could not make a work folder: {_reason(completed.stderr)}")
        self.cleaned = [line for line in completed.stderr.splitlines() if line.startswith("cleaned ")]
        return workdir

    def _close(self) -> None:
        try:
            stream(self.remote(f"rm -rf -- {shlex.quote(self.workdir)}"), timeout=self.connect_timeout + 20,
                   what=self.name)
        except DeviceError:
            pass  # the connection is gone; the next connection cleans the folder up

    def push(self, local: Path, name: str) -> str:
        target = f"{self.workdir}/{name}"
        temporary = f"{self.workdir}/.{name}.tmp"
        script = f"cat > {shlex.quote(temporary)} && mv -f -- {shlex.quote(temporary)} {shlex.quote(target)}"
        with open(local, "rb") as handle:
            completed = stream(self.remote(script), timeout=self.connect_timeout + 600, what=self.name, stdin=handle)
        self.classify(completed)
        if completed.returncode != 0:
            raise DeviceError(f"{self.name}: upload of {name} failed: {_reason(completed.stderr)}")
        return target

    def pull(self, name: str, local: Path) -> Path:
        argv = self.remote(f"cat -- {shlex.quote(self.workdir + '/' + name)}")
        temporary = local.with_name(f".{local.name}.part")
        with open(temporary, "wb") as handle:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            size = 0
            while chunk := process.stdout.read(1 << 20):
                size += len(chunk)
                if size > PULL_CAP:
                    process.kill()
                    process.wait()
                    handle.close()
                    temporary.unlink(missing_ok=True)
                    raise DeviceError(f"{self.name}: {name} is larger than {PULL_CAP // 2**20} MB; refused")
                handle.write(chunk)
            stderr = process.stderr.read().decode("utf-8", "replace")
            process.wait()
        self.classify(Completed(process.returncode, "", stderr))
        if process.returncode != 0:
            temporary.unlink(missing_ok=True)
            raise DeviceError(f"{self.name}: could not fetch {name}: {_reason(stderr)}")
        temporary.replace(local)
        return local

    def command(self, argv: list[str]) -> list[str]:
        """The runner started inside the work folder; its pid is kept for the stale-folder check."""
        quoted = shlex.join([self.python, *argv])
        return self.remote(f"cd {shlex.quote(self.workdir)} && echo $$ > .pid && exec {quoted}")

    def run(self, argv, *, timeout, on_line=None) -> Completed:
        completed = stream(self.command(argv), timeout=timeout, on_line=on_line, what=self.name)
        self.classify(completed)
        if completed.returncode == 127:
            raise DeviceError(f"{self.name}: {self.python!r} was not found on the device; set 'python:' in the "
                              f"profile's transport to the Python that has the runtime")
        return completed

    # -------------------------------------------------------------- errors

    def classify(self, completed: Completed) -> None:
        """ssh exits 255 for its own failures: say which, in one line."""
        if completed.returncode != 255:
            return
        text = completed.stderr
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or "Host key verification failed" in text:
            changed = "HAS CHANGED" in text
            fingerprint = _fingerprint(text) or self.server_fingerprint()
            state = "CHANGED since it was recorded" if changed else "not in known_hosts"
            raise DeviceError(
                f"{self.name}: host key refused: the server's key is {state}; it offers {fingerprint}. "
                f"Verify it out of band, then add it to known_hosts (Edgeward never accepts keys itself)")
        lowered = text.lower()
        reason = _reason(text)
        if "permission denied" in lowered:
            raise DeviceError(f"{self.name}: authentication failed ({reason}); check the key/agent and user")
        if any(s in lowered for s in ("connection refused", "timed out", "no route to host", "could not resolve",
                                      "network is unreachable", "name or service not known")):
            raise DeviceError(f"{self.name}: unreachable: {reason}")
        if any(s in lowered for s in ("closed by remote host", "connection reset", "broken pipe", "timeout, server",
                                      "connection closed", "lost connection")):
            raise DeviceError(f"{self.name}: the connection was lost mid-run ({reason})")
        raise DeviceError(f"{self.name}: ssh failed: {reason or 'exit status 255'}")

    def server_fingerprint(self) -> str:
        """The key the server offers, read with ssh-keyscan (read-only: nothing is trusted or stored)."""
        argv = ["ssh-keyscan", "-T", str(self.connect_timeout)]
        if self.port:
            argv += ["-p", str(int(self.port))]
        try:
            scan = subprocess.run([*argv, "--", self.host], capture_output=True, text=True,
                                  timeout=self.connect_timeout + 5)
            listed = subprocess.run(["ssh-keygen", "-lf", "-"], input=scan.stdout, capture_output=True, text=True,
                                    timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "a key whose fingerprint could not be read"
        prints = [" ".join(line.split()[1:2] + line.split()[-1:]) for line in listed.stdout.splitlines() if line]
        return "; ".join(prints) or "a key whose fingerprint could not be read"

    def probe(self) -> dict:
        return {"transport": "ssh", "destination": self.destination, "python": self.python}


def _fingerprint(text: str) -> str | None:
    match = re.search(r"(SHA256:[A-Za-z0-9+/=]+)", text)
    return match.group(1) if match else None


def _reason(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip() and not line.startswith("@@@")]
    return lines[-1][:300] if lines else ""
