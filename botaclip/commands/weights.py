"""`botaclip weights`: fetch and check published DOFA checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import click


def _default_weights_dir() -> Path:
    home = os.environ.get("BOTACLIP_HOME")
    return Path(home) / "weights" if home else Path.home() / ".cache" / "botaclip" / "weights"


@click.group()
def weights() -> None:
    """Download or verify DOFA checkpoints (the only command that uses the network)."""


@weights.command("download")
@click.argument("backbone", type=click.Choice(["dofa-base", "dofa-large"]))
@click.option("--to", "to_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder to save into [default: $BOTACLIP_HOME/weights or ~/.cache/botaclip/weights].")
@click.option("--url", default=None, help="Download from this mirror instead; the sha256 prefix in its file name is still checked.")
def download(backbone: str, to_dir: Path | None, url: str | None) -> None:
    """Download the published DOFA checkpoint, verify its sha256, and print the path to pass as --weights."""
    from botaclip.model.published import download_weights, verify_weights

    path = download_weights(backbone, to_dir or _default_weights_dir(), url=url)
    check = verify_weights(path)
    click.echo(f"verified {path.name}: sha256 {check.sha256}, {check.size_bytes / 1e6:.1f} MB", err=True)
    click.echo(str(path))


@weights.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def verify(file: Path) -> None:
    """Check a checkpoint obtained by other means: sha256 (against the prefix in its name) and a weights-only load."""
    from botaclip.model.published import verify_weights

    check = verify_weights(file)
    verdict = {True: "matches its name", False: "DOES NOT match its name", None: "no hash in its name to check"}
    click.echo(f"{check.path}")
    click.echo(f"  sha256   {check.sha256} ({verdict[check.name_matches]})")
    click.echo(f"  size     {check.size_bytes / 1e6:.1f} MB, {check.tensors} tensors, loads with weights_only=True")
    hint = f" (use --backbone {check.backbone})" if check.backbone else ""
    click.echo(f"  model    {check.looks_like}{hint}")
