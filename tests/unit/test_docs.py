"""The documentation tells the truth: docs/cli.md is what the command tree says, and every
command shown in docs/*.md prints what the page shows (scripts/gen_cli_docs.py)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts" / "gen_cli_docs.py")
gen = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("gen_cli_docs", gen)  # dataclasses look their module up by name
_spec.loader.exec_module(gen)  # type: ignore[union-attr]


def test_cli_reference_is_up_to_date():
    assert (ROOT / "docs" / "cli.md").read_text() == gen.cli_markdown(), \
        "docs/cli.md is out of date: run .venv/bin/python scripts/gen_cli_docs.py"


def test_cli_reference_covers_every_command():
    text = gen.cli_markdown()
    for name in ("validate", "matrix", "trace", "explain", "render", "diff"):
        assert f"## `netpol {name}`" in text


def _shown():
    out = []
    for page in gen.pages():
        for block in gen.parse_blocks(page, page.read_text().splitlines()):
            if not block.transcript:
                out.extend(block.shown)
    return out


SHOWN = _shown()


def test_pages_show_commands():
    assert len(SHOWN) >= 30


@pytest.mark.parametrize("shown", SHOWN, ids=[f"{s.page.name}:{s.line}" for s in SHOWN])
def test_shown_output_is_what_the_command_prints(shown):
    now = gen.run_command(shown.command)
    assert now == gen._clean(shown.output), (
        f"{shown.page.name}:{shown.line}: $ {shown.command}\n"
        "its output changed; if the change is right, run "
        ".venv/bin/python scripts/gen_cli_docs.py --examples")


def test_parser_handles_indented_blocks_and_transcripts(tmp_path):
    page = tmp_path / "p.md"
    lines = ["- item", "", "  ```console", "  $ echo a \\", "    b", "  a b", "  ```", "",
             "```console", "$ sudo netpol lab down --name x", "lab x removed", "```"]
    blocks = gen.parse_blocks(page, lines)
    assert [b.indent for b in blocks] == ["  ", ""]
    assert blocks[0].shown[0].command == "echo a  b"
    assert blocks[0].shown[0].output == ["a b"]
    assert not blocks[0].transcript and blocks[1].transcript
