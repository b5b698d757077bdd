"""The sweep's engine on a Dask distributed cluster (`scenario --dask tcp://host:8786`).

Cases go to the workers as data (the checked `Scenario`, its load profile and cell data
inside), so a worker needs the bms-emu package and none of the files. `distributed` is the
optional extra `cluster`, imported only when this engine is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bms.data.validation import InputError
from hil.scenario_file import Scenario
from hil.scenario_sweep import CaseError, CaseRunner, Outcome

CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class DaskEngine:
    address: str  # the scheduler's, tcp://host:8786

    def map(self, fn: CaseRunner, cases: Sequence[Scenario]) -> list[Outcome]:
        client = self._connect()
        with client:
            # pure=False: two equal cases are two runs, each reported
            futures = client.map(fn, list(cases), pure=False)
            try:
                return [_outcome(future, sc) for future, sc in zip(futures, cases, strict=True)]
            except BaseException:  # Ctrl-C: nothing left running on the cluster
                client.cancel(futures)
                raise

    def _connect(self):
        try:
            from distributed import Client
        except ImportError as exc:
            raise InputError("--dask", [
                "needs the packages dask and distributed: pip install 'bms-emu[cluster]'"
            ]) from exc
        try:
            return Client(self.address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise InputError("--dask", [
                f"{self.address!r}: no Dask scheduler answered within {CONNECT_TIMEOUT_S:g} s "
                f"({type(exc).__name__}: {exc}); give its address, e.g. tcp://host:8786"
            ]) from exc


def _outcome(future, sc: Scenario) -> Outcome:
    """The case's outcome; a case the cluster lost (its worker killed past the scheduler's
    retries, the scheduler gone) is that case's error."""
    try:
        return future.result()
    except Exception as exc:
        message = f"lost on the Dask cluster: {type(exc).__name__}: {exc}"
        return CaseError(sc, message, message)
