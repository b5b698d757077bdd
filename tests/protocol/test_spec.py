"""docs/protocol.md is what `bms-emu spec` prints now, and it documents every message type,
error code and decoder error, with example frames that decode."""

from __future__ import annotations

import re
from pathlib import Path

from protocol import spec
from protocol.codec import Decoder, Frame
from protocol.framing import REVISIONS, Flags, FrameErrorKind
from protocol.messages import REGISTRY, ErrorCode
from protocol.revisions import revision_of

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def cli_output(capsys) -> str:
    from bms_emu.main import main

    assert main(["spec"]) == 0
    return capsys.readouterr().out


def test_committed_doc_is_current(capsys):
    assert DOC.read_text(encoding="utf-8") == cli_output(capsys), (
        "docs/protocol.md is stale: run `bms-emu spec > docs/protocol.md`")


def test_every_message_type_and_code_is_documented():
    text = DOC.read_text(encoding="utf-8")
    for type_id, mt in REGISTRY.items():
        assert f"### 0x{type_id:02X} {mt.name} (" in text, mt.name
        assert f"| 0x{type_id:02X} | {mt.name} |" in text, mt.name
    for code in ErrorCode:
        assert f"| {code.value} | {code.name} |" in text, code
    for kind in FrameErrorKind:
        assert f"| {kind.value} | {kind.name} |" in text, kind
    for title in ("## States", "## Faults", "## Configuration parameters", "0xCBF43926",
                  "## Versions and negotiation", "## MQTT transport"):
        assert title in text


def test_every_message_and_field_says_the_version_that_added_it():
    """A 1.0 client can tell from the document alone what its revision carries: each
    message heading and each field row names the version that added it."""
    text = DOC.read_text(encoding="utf-8")
    for type_id, mt in REGISTRY.items():
        heading = f"### 0x{type_id:02X} {mt.name} ("
        section = text[text.index(heading):].split("\n### ", 1)[0]
        assert f"since {REVISIONS[mt.since]})" in section.splitlines()[0], mt.name
        for field in mt.definition.subcons:
            version = REVISIONS[max(mt.since, revision_of(field))]
            rows = [line for line in section.splitlines() if f"| `{field.name}` |" in line]
            assert rows and rows[0].rstrip(" |").endswith(version), (mt.name, field.name)


def test_one_table_holds_every_nack_and_decoder_code():
    text = DOC.read_text(encoding="utf-8")
    assert "## Decoder errors" not in text and text.count("| Code | Name | Where |") == 1
    for kind in FrameErrorKind:
        where = "Nack `error` and decoder" if kind.name in ErrorCode.__members__ \
            else "decoder only"
        assert f"| {kind.value} | {kind.name} | {where} |" in text, kind


def test_every_request_has_a_registered_answer():
    names = {mt.name: mt for mt in REGISTRY.values()}
    requests = {mt.name for mt in REGISTRY.values() if mt.flags is Flags.REQUEST}
    assert set(spec.ANSWERS) == requests
    for request, response in spec.ANSWERS.items():
        assert names[response].flags is Flags.RESPONSE, (request, response)


def test_wire_examples_decode_to_their_frames():
    """The hex under "On the wire" in the document is a frame the decoder accepts."""
    blocks = re.findall(r"On the wire \((\d+) bytes.*?\n\n```\n(.*?)\n```", DOC.read_text(),
                        re.DOTALL)
    assert len(blocks) == len(spec.examples())
    for (size, block), (_, msg, seq, revision) in zip(blocks, spec.examples(), strict=True):
        data = bytes.fromhex(block.replace("\n", " "))
        assert len(data) == int(size)
        (frame,) = Decoder().feed(data)
        assert isinstance(frame, Frame) and frame.header.seq == seq
        assert frame.header.revision == revision
        assert type(frame.message) is type(msg)


def test_injections_section_lists_every_kind_and_key_and_its_example_parses():
    """Inject's grammar is in the spec, from the table the pack's parser uses."""
    from hil.injections import KINDS, parse_injection

    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## Injections"):]
    for kind, keys in KINDS.items():
        row = next(line for line in section.splitlines() if line.startswith(f"| `{kind}` |"))
        assert all(f"`{key}`:" in row for key in keys), row
    example = re.search(r"Example: `([^`]+)`", section).group(1)
    injection = parse_injection(example, n_series=16, n_temp_sensors=4)
    assert injection.params["cell"] == 3  # numbered from 1, as the section says


def test_render_is_deterministic_and_appends_extra_sections():
    extra = [("Extra one", "| a |\n|---|\n| 1 |\n"), ("Extra two", "text")]
    first, second = spec.render(extra), spec.render(extra)
    assert first == second and first.endswith("## Extra two\n\ntext\n")
    assert first.index("## Extra one") < first.index("## Extra two")
    assert "## Examples" in spec.render() and "## Extra" not in spec.render()
