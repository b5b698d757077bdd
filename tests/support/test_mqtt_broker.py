"""The Mosquitto fixture itself: a real broker that routes, retains, restarts on its port
and, with auth, refuses what its password file and ACL refuse."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time

import aiomqtt
import pytest

from tests.support import mqtt_broker as broker_module
from tests.support.mqtt_broker import Broker, BrokerError, require_mosquitto

USERS = {"operator": "op-secret", "viewer": "view-secret"}
ACL = """\
user operator
topic readwrite bms/#

user viewer
topic read bms/#
"""
QUIET_S = 0.5  # how long a subscriber waits to be sure a dropped publish does not come


async def next_message(client: aiomqtt.Client, timeout: float = 5.0) -> aiomqtt.Message:
    return await asyncio.wait_for(anext(aiter(client.messages)), timeout)


async def nothing_within(client: aiomqtt.Client, seconds: float = QUIET_S) -> bool:
    try:
        message = await next_message(client, seconds)
    except TimeoutError:
        return True
    pytest.fail(f"unexpected message on {message.topic}: {message.payload!r}")


def run(*argv: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def wait_for_log(broker: Broker, text: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in broker.log_path.read_text(errors="replace"):
        if time.monotonic() > deadline:
            pytest.fail(f"{text!r} not in the broker log\n{broker.log_tail()}")
        time.sleep(0.02)


def test_broker_listens_on_loopback_and_a_free_port(mqtt_broker: Broker) -> None:
    assert mqtt_broker.running
    assert mqtt_broker.url == f"mqtt://127.0.0.1:{mqtt_broker.port}"
    assert mqtt_broker.port not in (0, 1883)
    with socket.create_connection(("127.0.0.1", mqtt_broker.port), timeout=2):
        pass
    conf = mqtt_broker.conf_path.read_text()
    assert f"listener {mqtt_broker.port} 127.0.0.1" in conf
    assert "allow_anonymous true" in conf
    assert "persistence false" in conf


async def test_publish_subscribe_round_trip(mqtt_broker: Broker) -> None:
    async with aiomqtt.Client(mqtt_broker.host, mqtt_broker.port) as subscriber, \
            aiomqtt.Client(mqtt_broker.host, mqtt_broker.port) as publisher:
        await subscriber.subscribe("bms/p1/telemetry/#", qos=1)
        await publisher.publish("bms/p1/telemetry/soc", b"42.5", qos=1)
        message = await next_message(subscriber)
    assert str(message.topic) == "bms/p1/telemetry/soc"
    assert message.payload == b"42.5"


def test_round_trip_with_the_command_line_clients(mqtt_broker: Broker,
                                                  mosquitto_clients: None) -> None:
    port = str(mqtt_broker.port)
    with subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-i", "cli-sub",
                           "-t", "bms/cli/#", "-C", "1", "-W", "5", "-v"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as sub:
        wait_for_log(mqtt_broker, "Received SUBSCRIBE from cli-sub")
        pub = run("mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-t", "bms/cli/x", "-m", "hi")
        assert pub.returncode == 0, pub.stderr
        out, err = sub.communicate(timeout=10)
    assert sub.returncode == 0, err
    assert out.strip() == "bms/cli/x hi"


def test_retained_message_reaches_a_later_subscriber(mqtt_broker: Broker,
                                                     mosquitto_clients: None) -> None:
    port = str(mqtt_broker.port)
    pub = run("mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-q", "1", "-r",
              "-t", "bms/p1/status", "-m", "online")
    assert pub.returncode == 0, pub.stderr
    # Subscribed only now: the message published before comes because it was retained.
    sub = run("mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-t", "bms/p1/status",
              "-C", "1", "-W", "5")
    assert sub.returncode == 0, sub.stderr
    assert sub.stdout.strip() == "online"


async def test_retained_message_with_aiomqtt(mqtt_broker: Broker) -> None:
    async with aiomqtt.Client(mqtt_broker.host, mqtt_broker.port) as publisher:
        await publisher.publish("bms/p1/state", b"ready", qos=1, retain=True)
    async with aiomqtt.Client(mqtt_broker.host, mqtt_broker.port) as subscriber:
        await subscriber.subscribe("bms/p1/state", qos=1)
        message = await next_message(subscriber)
    assert message.payload == b"ready"
    assert message.retain


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_restart_on_the_same_port(mqtt_broker: Broker, how: str) -> None:
    port, url = mqtt_broker.port, mqtt_broker.url
    async with aiomqtt.Client(mqtt_broker.host, port) as client:
        await client.publish("bms/p1/state", b"before", qos=1, retain=True)
    getattr(mqtt_broker, how)()
    assert not mqtt_broker.running
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    mqtt_broker.start()
    assert (mqtt_broker.port, mqtt_broker.url) == (port, url)
    async with aiomqtt.Client(mqtt_broker.host, port) as client:
        await client.subscribe("bms/p1/#", qos=1)
        # Persistence is off: the restarted broker has forgotten the retained message ...
        assert await nothing_within(client)
        # ... and routes as before.
        await client.publish("bms/p1/state", b"after", qos=1)
        assert (await next_message(client)).payload == b"after"


async def test_a_connected_client_sees_the_broker_go(mqtt_broker: Broker) -> None:
    async with aiomqtt.Client(mqtt_broker.host, mqtt_broker.port) as client:
        await client.subscribe("bms/#")
        mqtt_broker.kill()
        with pytest.raises(aiomqtt.MqttError):
            await next_message(client, timeout=5)


@pytest.fixture
def auth_broker(mqtt_broker_factory) -> Broker:
    return mqtt_broker_factory(users=USERS, acl=ACL)


def test_auth_config(auth_broker: Broker) -> None:
    conf = auth_broker.conf_path.read_text()
    assert "allow_anonymous false" in conf
    assert f"password_file {auth_broker.passwd_path}" in conf
    assert f"acl_file {auth_broker.acl_path}" in conf
    hashed = auth_broker.passwd_path.read_text()
    assert hashed.startswith("operator:") and "viewer:" in hashed
    assert "op-secret" not in hashed  # mosquitto_passwd stored hashes
    assert auth_broker.url_as("operator") == f"mqtt://operator:op-secret@127.0.0.1:{auth_broker.port}"


async def test_operator_may_command_and_the_viewer_may_not(auth_broker: Broker) -> None:
    host, port = auth_broker.host, auth_broker.port
    async with aiomqtt.Client(host, port, username="operator", password="op-secret") as watcher:
        await watcher.subscribe("bms/#", qos=1)
        async with aiomqtt.Client(host, port, username="viewer", password="view-secret") as viewer:
            # Accepted on the wire (QoS 1 acknowledged) but dropped by the ACL.
            await viewer.publish("bms/p1/cmd/x", b"from viewer", qos=1)
        assert await nothing_within(watcher)
        async with aiomqtt.Client(host, port, username="operator",
                                  password="op-secret") as operator:
            await operator.publish("bms/p1/cmd/x", b"from operator", qos=1)
        message = await next_message(watcher)
        assert (str(message.topic), message.payload) == ("bms/p1/cmd/x", b"from operator")
    assert "Denied PUBLISH from" in auth_broker.log_path.read_text()


async def test_viewer_may_read(auth_broker: Broker) -> None:
    host, port = auth_broker.host, auth_broker.port
    async with aiomqtt.Client(host, port, username="viewer", password="view-secret") as viewer, \
            aiomqtt.Client(host, port, username="operator", password="op-secret") as operator:
        await viewer.subscribe("bms/p1/telemetry/#", qos=1)
        await operator.publish("bms/p1/telemetry/soc", b"50", qos=1)
        assert (await next_message(viewer)).payload == b"50"


@pytest.mark.parametrize("credentials", [
    {},  # anonymous
    {"username": "operator", "password": "wrong"},
    {"username": "nobody", "password": "op-secret"},
], ids=["anonymous", "wrong-password", "unknown-user"])
async def test_refused_connections(auth_broker: Broker, credentials: dict[str, str]) -> None:
    with pytest.raises(aiomqtt.MqttCodeError) as refused:
        async with aiomqtt.Client(auth_broker.host, auth_broker.port, **credentials):
            pass
    # Mosquitto answers all three with "not authorised" (CONNACK 5), which paho reports as
    # the MQTT 5 reason code 135.
    assert refused.value.rc in (5, 135)


def test_refused_on_the_command_line(auth_broker: Broker, mosquitto_clients: None) -> None:
    port = str(auth_broker.port)
    base = ["mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-t", "bms/p1/cmd/x", "-m", "x"]
    assert run(*base, "-u", "operator", "-P", "op-secret").returncode == 0
    assert run(*base, "-u", "operator", "-P", "wrong").returncode != 0
    assert run(*base).returncode != 0


def test_start_failure_reports_the_log(mqtt_broker_factory) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(BrokerError, match="(?s)exited with.*Address already in use"):
            mqtt_broker_factory(port=taken.getsockname()[1])


def test_bad_config_reports_the_log(mqtt_broker_factory) -> None:
    with pytest.raises(BrokerError, match="(?s)exited with .*no_such_option"):
        mqtt_broker_factory(extra_config="no_such_option true")


def test_missing_mosquitto_skips_locally_and_fails_in_ci(monkeypatch) -> None:
    monkeypatch.setattr(broker_module, "missing_tools", lambda clients=False: ["/usr/sbin/x"])
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install mosquitto mosquitto-clients"):
        require_mosquitto()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install mosquitto mosquitto-clients"):
        require_mosquitto()
