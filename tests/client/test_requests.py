"""Every request type of the catalogue, in every revision that has it, over a pty and over
MQTT: answered with the response type the spec pairs it with, the same seq, the RESPONSE
flag, in the request's revision and exactly that revision's layout (a 1.0 client sees
1.0), holding what the spec says."""

from __future__ import annotations

import pytest

from protocol import messages as pm
from protocol.framing import REVISION_1_0, REVISION_1_1, REVISIONS, Flags
from protocol.messages import encode_payload
from protocol.spec import ANSWERS
from tests.client.emulators import Emulator
from tests.client.samples import answer_type, check_answer, request_types, sample

BY_REVISION = [(mt, revision) for mt in request_types() for revision in sorted(mt.structs)]


def test_every_request_type_has_a_sample_and_a_documented_answer(sim_pty: Emulator) -> None:
    """Iterates the catalogue: a request type added without a sample or an answer in the
    spec's pairing table fails here, by name."""
    missing = []
    for mt in request_types():
        try:
            sample(mt, sim_pty)
        except LookupError as exc:
            missing.append(str(exc))
        if mt.name not in ANSWERS:
            missing.append(f"{mt.name}: no answer in protocol.spec.ANSWERS")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize(("mt", "revision"), BY_REVISION,
                         ids=[f"{mt.name}-rev{r}" for mt, r in BY_REVISION])
def test_each_request_gets_its_documented_answer(sim: Emulator, mt: pm.MessageType,
                                                 revision: int) -> None:
    request = sample(mt, sim)
    frame = sim.client.request(request, revision)
    expected = answer_type(mt)
    assert frame.header.msg_type == expected.type_id, (
        f"{mt.name} answered with {frame.message}, not {expected.name}")
    assert frame.header.flags == Flags.RESPONSE
    assert frame.header.revision == revision
    # Exactly the revision's layout: the payload is what this revision encodes, no more.
    assert frame.header.length == len(encode_payload(frame.message, revision)[1])
    check_answer(frame.message, sim, revision, request)


def test_a_1_0_client_gets_the_1_0_layout_of_a_grown_message(sim: Emulator) -> None:
    """Status grew in 1.1; asked in revision 1 it comes in its 1.0 size, in revision 1."""
    status = pm.BY_CLASS[pm.Status]
    old = sim.client.request(pm.GetStatus(), REVISION_1_0)
    new = sim.client.request(pm.GetStatus(), REVISION_1_1)
    assert (old.header.revision, old.header.length) == (
        REVISION_1_0, status.structs[REVISION_1_0].sizeof())
    assert (new.header.revision, new.header.length) == (
        REVISION_1_1, status.structs[REVISION_1_1].sizeof())
    info = sim.client.request(pm.GetInfo(), REVISION_1_0).message
    assert info.protocol_version == REVISION_1_0
    assert (info.pack_id, info.message_types) == ("", ())  # not in 1.0: left at "unknown"


@pytest.mark.parametrize("revision", sorted(REVISIONS))
def test_the_parameter_list_pages_at_max_page_entries_and_walks_to_its_total(
        sim: Emulator, revision: int) -> None:
    """A page holds at most `max_page_entries`, however many are asked for; asking on from
    `start` + the entries received reaches every parameter once."""
    page_max = sim.info.max_page_entries
    first = sim.client.ask(pm.GetParameterList(0, 255), revision)
    assert first.total > page_max  # so the cap is seen
    assert len(first.entries) == page_max
    ids, start = [], 0
    while start < first.total:
        page = sim.client.ask(pm.GetParameterList(start, 255), revision)
        assert page.start == start and page.total == first.total and page.entries
        ids += [entry["param_id"] for entry in page.entries]
        start += len(page.entries)
    assert len(ids) == len(set(ids)) == first.total
    assert ids == [p["param_id"] for p in sim.params]
    beyond = sim.client.ask(pm.GetParameterList(first.total, 10), revision)
    assert beyond.entries == () and beyond.total == first.total


def test_a_parameter_list_entry_says_what_a_settings_form_needs(sim: Emulator) -> None:
    """1.1: range, default, access and persistence; the default is inside the range."""
    for entry in sim.params:
        assert entry["access"] & pm.ACCESS_BITS["read"], entry
        if entry["kind"] in (pm.ValueKind.FLOAT, pm.ValueKind.INT):
            low = entry["min"] if entry["min"] == entry["min"] else -float("inf")
            high = entry["max"] if entry["max"] == entry["max"] else float("inf")
            assert low <= entry["default"] <= high, entry
        elif entry["kind"] == pm.ValueKind.CHOICE:
            assert entry["default"] in range(len(entry["choices"])), entry
        else:
            assert entry["default"] in (0.0, 1.0), entry
    assert all(p["persisted"] for p in sim.params)  # these emulators keep a store
