"""A real Mosquitto broker for tests, in a directory of its own.

`Broker(directory)` writes a mosquitto.conf there (one listener on 127.0.0.1 and a free
port, persistence off, everything logged to mosquitto.log), starts `/usr/sbin/mosquitto -c`
and returns once the port accepts TCP connections and answers an MQTT CONNECT. `stop()`
ends it gently, `kill()` as a crash would, and `start()` brings it back on the SAME port,
so a client under test sees a broker restart. Without persistence a restarted broker has
lost its retained messages and sessions, as a real one that crashed without a store would.

With `users={name: password}` and `acl=` text the broker refuses anonymous clients, checks
passwords (a file written by mosquitto_passwd) and applies the ACL. Mosquitto drops a
publish the ACL forbids silently (the client is not told, at most a PUBACK says so in
MQTT 5), so a test checks what a subscriber receives.

Mosquitto 2.0 notes: without any `listener` it listens on localhost:1883 only, and a config
that declares a listener defaults to `allow_anonymous false`, so both are written out here.
Started as root it switches to the user `mosquitto`, who can neither write the log nor
read the password file in root's pytest tmp dir (it exits 13): `user` names the current
user, which keeps root as root (mosquitto then warns on stdout) and is ignored otherwise.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

import pytest

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
HOST = "127.0.0.1"
START_DEADLINE_S = 10.0
STOP_GRACE_S = 5.0
INSTALL_HINT = "apt-get install mosquitto mosquitto-clients"


def _connect_packet(client_id: str) -> bytes:
    """MQTT 3.1.1 CONNECT, clean session, keepalive 60 s, no credentials."""
    ident = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(ident).to_bytes(2, "big") + ident
    return bytes([0x10, len(body)]) + body


_PROBE_CONNECT = _connect_packet("mqtt-broker-fixture-probe")


def mosquitto_path() -> str | None:
    """The broker binary: the Debian path, else whatever `mosquitto` is on PATH."""
    if os.access(MOSQUITTO, os.X_OK):
        return MOSQUITTO
    return shutil.which("mosquitto")


def passwd_path() -> str | None:
    if os.access(MOSQUITTO_PASSWD, os.X_OK):
        return MOSQUITTO_PASSWD
    return shutil.which("mosquitto_passwd")


def missing_tools(clients: bool = False) -> list[str]:
    """What a test needs but this machine lacks: the broker, mosquitto_passwd (same Debian
    package) and, with `clients`, mosquitto_pub/mosquitto_sub (mosquitto-clients)."""
    missing = []
    if mosquitto_path() is None:
        missing.append(MOSQUITTO)
    if passwd_path() is None:
        missing.append(MOSQUITTO_PASSWD)
    if clients:
        missing += [tool for tool in ("mosquitto_pub", "mosquitto_sub") if not shutil.which(tool)]
    return missing


def require_mosquitto(clients: bool = False) -> None:
    """Skip the test when Mosquitto is missing; with $CI set fail it instead: CI must not
    pass without a broker."""
    missing = missing_tools(clients=clients)
    if not missing:
        return
    message = (f"Mosquitto is missing ({', '.join(missing)}): install it with "
               f"`{INSTALL_HINT}` (or `make mosquitto`)")
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def free_port(host: str = HOST) -> int:
    """A port nobody listens on right now: bind port 0 and let the kernel choose."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class BrokerError(RuntimeError):
    pass


class Broker:
    """One Mosquitto process. `url` and `port` stay the same across stop()/start()."""

    def __init__(self, directory: str | os.PathLike[str], *,
                 users: Mapping[str, str] | None = None, acl: str | None = None,
                 port: int | None = None, extra_config: str = "") -> None:
        binary = mosquitto_path()
        if binary is None:
            raise BrokerError(f"mosquitto is not installed ({INSTALL_HINT})")
        if acl is not None and not users:
            raise BrokerError("an ACL needs users: anonymous clients are refused with auth")
        self.binary = binary
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = port if port is not None else free_port()
        self.users: dict[str, str] = dict(users or {})
        self.acl = acl
        self.extra_config = extra_config
        self.conf_path = self.directory / "mosquitto.conf"
        self.log_path = self.directory / "mosquitto.log"
        self.output_path = self.directory / "mosquitto.out"  # stdout/stderr: errors before logging
        self.passwd_path = self.directory / "passwd"
        self.acl_path = self.directory / "acl"
        self.process: subprocess.Popen[bytes] | None = None
        self._write_config()

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def auth(self) -> bool:
        return bool(self.users)

    def url_as(self, user: str) -> str:
        """mqtt://user:password@127.0.0.1:PORT for one of the configured users."""
        password = self.users[user]
        return f"mqtt://{quote(user, safe='')}:{quote(password, safe='')}@{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if self.auth else 'true'}",
            "persistence false",
            f"log_dest file {self.log_path}",
            "log_type all",
            "connection_messages true",
            f"user {getpass.getuser()}",
        ]
        if self.auth:
            self._write_passwords()
            lines.append(f"password_file {self.passwd_path}")
            if self.acl is not None:
                self.acl_path.write_text(self.acl if self.acl.endswith("\n") else self.acl + "\n")
                lines.append(f"acl_file {self.acl_path}")
        if self.extra_config:
            lines.append(self.extra_config)
        self.conf_path.write_text("\n".join(lines) + "\n")

    def _write_passwords(self) -> None:
        tool = passwd_path()
        if tool is None:
            raise BrokerError(f"mosquitto_passwd is not installed ({INSTALL_HINT})")
        self.passwd_path.unlink(missing_ok=True)
        for index, (name, password) in enumerate(self.users.items()):
            create = ["-c"] if index == 0 else []
            result = subprocess.run(
                [tool, *create, "-b", str(self.passwd_path), name, password],
                capture_output=True, text=True, timeout=10, check=False)
            if result.returncode != 0:
                raise BrokerError(f"mosquitto_passwd failed for {name!r}: "
                                  f"{(result.stderr or result.stdout).strip()}")

    def start(self) -> Broker:
        """Start (or start again, on the same port) and wait until the port accepts TCP."""
        if self.running:
            return self
        with self.output_path.open("ab") as output:
            self.process = subprocess.Popen(
                [self.binary, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True)  # a Ctrl-C meant for pytest does not reach it first
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise BrokerError(f"mosquitto exited with {code} on starting\n{self.log_tail()}")
            if self._answers_mqtt():
                return self
            if time.monotonic() > deadline:
                self.kill()
                raise BrokerError(f"mosquitto did not listen on {self.host}:{self.port} "
                                  f"within {START_DEADLINE_S:.0f} s\n{self.log_tail()}")
            time.sleep(0.02)

    def _answers_mqtt(self) -> bool:
        """The port accepts a TCP connection AND answers an MQTT CONNECT with a CONNACK (with
        auth that CONNACK refuses: it is an answer all the same). A bare TCP check could be
        fooled by another process holding the port while this mosquitto fails to bind."""
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.settimeout(0.5)
                sock.sendall(_PROBE_CONNECT)
                answer = sock.recv(4)
                with contextlib.suppress(OSError):
                    sock.sendall(b"\xe0\x00")  # DISCONNECT
                return answer[:2] == b"\x20\x02"  # CONNACK, remaining length 2
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM, wait; SIGKILL after STOP_GRACE_S. Nothing to do when it is not running."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL: the broker crashes, clients find their connections cut."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.kill()
        process.wait()

    def restart(self) -> Broker:
        self.stop()
        return self.start()

    def log_tail(self, lines: int = 30) -> str:
        """The end of mosquitto.log, and what the process printed (config errors go there)."""
        parts = []
        for path in (self.output_path, self.log_path):
            try:
                text = path.read_text(errors="replace")
            except FileNotFoundError:
                continue
            if text.strip():
                tail = "\n".join(text.splitlines()[-lines:])
                parts.append(f"--- {path.name} ---\n{tail}")
        return "\n".join(parts) if parts else "(mosquitto wrote no log)"

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Broker {self.url} {'auth' if self.auth else 'anonymous'} {state}>"
