"""How the CLI is put together: every command is registered and answers -h, and the
options several commands share are one definition (the backends' names come from the
registry)."""
from __future__ import annotations

import click
from click.testing import CliRunner

from backends import registry
from enforcer.cli import cli


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, cmd in sorted(group.commands.items()):
        yield prefix + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))


def test_every_command_is_registered_and_answers_help():
    paths = {p for p, _ in _commands(cli)}
    # The ones that live in their own packages are there: an import error would be raised,
    # not turned into a missing command.
    assert {("lab",), ("probe",), ("run",), ("status",), ("diff",)} <= paths
    runner = CliRunner()
    for path, _ in _commands(cli):
        r = runner.invoke(cli, [*path, "-h"])
        assert r.exit_code == 0, (path, r.output)
        assert "Usage:" in r.output


def test_every_backend_option_offers_exactly_the_registry_names():
    having = {}
    for path, cmd in _commands(cli):
        for p in cmd.params:
            if p.name == "backend":
                having[" ".join(path)] = list(p.type.choices)
    assert {"render", "run", "probe", "lab up"} <= set(having)
    for name, choices in having.items():
        # render also takes "all" (side by side); no command takes a name the registry lacks.
        assert choices == registry.names() + (["all"] if name == "render" else []), name


def test_an_unknown_backend_is_a_usage_error_naming_the_choices(tmp_path):
    r = CliRunner().invoke(cli, ["render", "-f", str(tmp_path), "--backend", "nope"])
    assert r.exit_code == 2
    assert "'nope' is not one of 'nftables', 'iptables', 'iptables-legacy', 'fake', 'all'" in r.output
