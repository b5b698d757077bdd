"""Shared fixtures. A real Mosquitto broker: `mqtt_broker` (anonymous) and
`mqtt_broker_factory` (any options, e.g. users and an ACL); see tests/mqtt_broker.py.
Every test has a data directory of its own (`serve` keeps its persistent store there by
default), so no test resumes another's pack and none touches the user's."""

from __future__ import annotations

import fcntl
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support.mqtt_broker import Broker, require_mosquitto
from tests.support.processes import Proc, stop_left_running

# Property tests in `make test` and CI draw the same examples every run (derandomize: the
# seed comes from each test's name), so a run can fail only on a change, never by chance.
# The long randomised search is `benchmarks/fuzz_hypothesis.py`, run by hand: it selects
# the "fuzz" profile with a new seed each round. The profiles are registered here, before
# any test module builds its own settings from the one loaded.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("fuzz", derandomize=False, database=None, print_blob=True)
settings.load_profile("ci")

BrokerFactory = Callable[..., Broker]
MULTICAST_LOCK = Path(tempfile.gettempdir()) / "bms-emu-tests-udp-multicast.lock"


@pytest.fixture
def multicast_alone() -> Iterator[None]:
    """python-can binds every udp_multicast group to one UDP port, so two tests on one
    host hear each other's frames whatever their groups (an inverter would obey another
    test's BMS): the tests that use it take this lock, shared by the xdist workers, and run
    one at a time."""
    with MULTICAST_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(autouse=True)
def no_process_left_running() -> Iterator[None]:
    """A test that fails before it stops its `bms-emu` processes does not leave them
    running into the next tests (a module's fixtures, set up before this one, keep theirs)."""
    kept = set(Proc.running)
    yield
    stop_left_running(kept)


@pytest.fixture(autouse=True, scope="session")
def session_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """$XDG_DATA_HOME for the whole run, so that processes a module-scoped fixture starts
    (before any test's own directory exists) keep away from the user's too."""
    path = tmp_path_factory.mktemp("session-data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_DATA_HOME", str(path))
        yield path


@pytest.fixture(autouse=True)
def own_data_dir(tmp_path_factory: pytest.TempPathFactory,
                 monkeypatch: pytest.MonkeyPatch) -> Path:
    """$XDG_DATA_HOME for this test and the processes it starts."""
    path = tmp_path_factory.mktemp("data")
    monkeypatch.setenv("XDG_DATA_HOME", str(path))
    return path


@pytest.fixture
def mqtt_broker_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerFactory]:
    """make(users={name: password}, acl="...", port=None, extra_config="") -> a started
    Broker in a tmp dir of its own; every broker made is stopped after the test."""
    require_mosquitto()
    brokers: list[Broker] = []

    def make(*, users: Mapping[str, str] | None = None, acl: str | None = None,
             port: int | None = None, extra_config: str = "") -> Broker:
        broker = Broker(tmp_path_factory.mktemp("mosquitto"), users=users, acl=acl, port=port,
                        extra_config=extra_config)
        brokers.append(broker)
        return broker.start()

    yield make
    for broker in brokers:
        broker.stop()


@pytest.fixture
def mqtt_broker(mqtt_broker_factory: BrokerFactory) -> Broker:
    """A fresh anonymous broker on 127.0.0.1 and a free port (broker.url, broker.port)."""
    return mqtt_broker_factory()


@pytest.fixture
def mosquitto_clients() -> None:
    """For tests that run mosquitto_pub/mosquitto_sub (Debian package mosquitto-clients)."""
    require_mosquitto(clients=True)
