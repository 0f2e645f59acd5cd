"""Settings and options every click command shares.

Each command carries them itself (not only the top group): click caches a command's help
option the first time it builds it, so a command invoked on its own once (in a test) would
otherwise lose ``-h`` for the rest of the process.
"""
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def backend_option(*, default: str = "nftables", also: dict[str, str] | None = None):
    """``--backend``, one definition for every command: the choices are the registry's
    names (plus ``also``, name -> what it means, for a command that takes more)."""
    import click

    from backends import registry

    extra = also or {}
    help_text = "; ".join(f"{name}: {what}" for name, what in {"fake": "in memory, no kernel changes", **extra}.items())
    return click.option("--backend", "backend", type=click.Choice([*registry.names(), *extra]),
                        default=default, show_default=True, help=help_text + ".")


def echo_findings(loaded, prefix: str = "") -> None:
    """Warnings and notes (kinds skipped) of a load, on stderr: the input was still used."""
    import click

    for w in loaded.warnings:
        click.echo(f"{prefix}{w}", err=True)
    for n in loaded.notes:
        click.echo(f"{prefix}{n}", err=True)
