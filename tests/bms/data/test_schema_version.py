"""DeviceInfo's `config_schema_version` tells a host whether the parameter list it kept is
still this device's: any change to the catalogue's ids, names, kinds, units or choices must
come with a new version. Each version's fingerprint is pinned here, so a change made under
an old number fails."""

from __future__ import annotations

import hashlib
import json

from bms.data.config import default_config
from bms.data.parameters import CONFIG_SCHEMA_VERSION, catalogue
from bms.data.presets import DEFAULT_PRESET, PRESETS, resolve_chemistry

# version -> the catalogue's, as `fingerprint` gives it
FINGERPRINTS = {1: "16eeed9c247ea2d2", 2: "d592495ee959f2d9"}


def fingerprint(chem_name: str = DEFAULT_PRESET, n_series: int = 16) -> str:
    chem = resolve_chemistry(chem_name)
    params = catalogue(default_config(chem, n_series, chem.capacity_ah))
    text = json.dumps([[p.id, p.name, p.kind, p.unit, [str(c) for c in p.choices]]
                       for p in params])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_the_catalogue_is_the_one_its_schema_version_names():
    assert FINGERPRINTS.get(CONFIG_SCHEMA_VERSION) == fingerprint(), (
        "the parameter catalogue changed: bump CONFIG_SCHEMA_VERSION in "
        f"bms/data/parameters.py and pin {fingerprint()!r} for it here")


def test_the_fingerprint_does_not_depend_on_the_pack():
    """Ids follow the configuration's structure, so any pack gives the same catalogue."""
    assert {fingerprint(name, n) for name in PRESETS for n in (4, 16, 416)} == {fingerprint()}
