"""Device faults over the ssh test bed (a real sshd on 127.0.0.1): each ends within its
timeout with its own message. Complements tests/test_devices_ssh.py (unreachable host,
host keys, the connection dropped mid-run with a partial result, stale work folders)."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from processes import command_name, descendants, send_signal

from tests.testbed import PROFILES, STATE, boards_started

pytestmark = [pytest.mark.ssh, pytest.mark.skipif(not boards_started("ssh-testbed"), reason="the ssh test bed is not running "
                                                  "(scripts/ssh-testbed start)")]


def _profile(folder: Path, **transport):
    import yaml

    from toolkit.devices.profiles import load_profile

    data = yaml.safe_load((PROFILES / "ssh-testbed.yaml").read_text())
    data["transport"].update(transport)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "faulty.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_profile(path)


def _transport(folder: Path, **transport):
    from toolkit.devices import open_transport

    return open_transport(_profile(folder, **transport))


def test_refused_key_is_an_authentication_error_within_the_timeout(tmp_path):
    from toolkit.errors import DeviceError

    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    started = time.monotonic()
    with pytest.raises(DeviceError, match="authentication failed"), _transport(tmp_path, identity_file=str(key)):
        pass
    assert time.monotonic() - started < 20


def test_remote_output_over_10_mb_is_stopped(tmp_path):
    from toolkit.errors import DeviceError

    started = time.monotonic()
    with _transport(tmp_path) as device, pytest.raises(DeviceError, match="more than 10 MB of output"):
        device.run(["-c", "import sys\nwhile True: sys.stdout.write('x' * 65536)"], timeout=60)
    assert time.monotonic() - started < 60


def test_a_device_that_stops_answering_ends_within_the_timeout(tmp_path):
    """SIGSTOP the sshd session: no packet moves. The keep-alive or the timeout ends the run."""
    from toolkit.errors import DeviceError

    listener = int((STATE / "sshd.pid").read_text())
    with _transport(tmp_path) as device:
        before = set(descendants(listener))
        stopped: list[int] = []

        def freeze(line: str) -> None:
            if stopped or "tick" not in line:
                return
            for pid in set(descendants(listener)) - before:
                if (command_name(pid) or "").startswith("sshd") and send_signal(pid, signal.SIGSTOP):
                    stopped.append(pid)

        started = time.monotonic()
        try:
            with pytest.raises(DeviceError) as caught:
                device.run(["-u", "-c", "import time\nwhile True: print('tick', flush=True); time.sleep(0.2)"],
                           timeout=25, on_line=freeze)
        finally:
            for pid in stopped:  # the run's own cleanup may have ended them already
                send_signal(pid, signal.SIGCONT)
                send_signal(pid, signal.SIGKILL)
    elapsed = time.monotonic() - started
    assert stopped, "the session's sshd should have been found and frozen"
    assert elapsed < 25 + 10
    assert re.search(r"lost mid-run|did not finish within", str(caught.value))


def test_every_fault_has_its_own_message(tmp_path):
    """Unreachable, refused key, too much output, time-out: four distinct first lines."""
    from toolkit.errors import DeviceError

    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    messages = {}
    with pytest.raises(DeviceError) as caught, _transport(tmp_path / "a", port=1, connect_timeout=3):
        pass
    messages["unreachable"] = str(caught.value)
    with pytest.raises(DeviceError) as caught, _transport(tmp_path / "b", identity_file=str(key)):
        pass
    messages["refused key"] = str(caught.value)
    with _transport(tmp_path / "c") as device:
        with pytest.raises(DeviceError) as caught:
            device.run(["-c", "print('y' * (11 * 2**20))"], timeout=60)
        messages["output"] = str(caught.value)
        with pytest.raises(DeviceError) as caught:
            device.run(["-c", "import time; time.sleep(60)"], timeout=3)
        messages["timeout"] = str(caught.value)
    kinds = {name: re.sub(r"\(.*?\)", "", text).split(":")[-1].strip() for name, text in messages.items()}
    assert len(set(kinds.values())) == 4, messages
    assert "unreachable" in messages["unreachable"]
    assert "authentication failed" in messages["refused key"]
    assert "10 MB" in messages["output"]
    assert "did not finish within 3 s" in messages["timeout"]
