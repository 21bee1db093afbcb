"""`botaclip weights download|verify`, against a local HTTP server on 127.0.0.1 (no internet needed)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import torch

from botaclip.cli import cli
from botaclip.errors import InvalidInputError
from botaclip.model.published import download_weights, hash_prefix_from_name, verify_weights


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the CLI's stderr clean for the assertions
        pass


class Payload:
    """A custom object: a checkpoint pickling it must be refused by weights_only loading."""


def _checkpoint_bytes(tmp: Path) -> bytes:
    path = tmp / "raw.pth"
    torch.save({"model": {"pos_embed": torch.zeros(1, 5, 8), "blocks.0.norm1.weight": torch.ones(8)}}, path)
    return path.read_bytes()


@pytest.fixture
def weights_server(tmp_path):
    """Serves a folder over HTTP on 127.0.0.1; yields (folder, base_url)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _publish(root: Path, data: bytes, prefix: str | None = None) -> str:
    prefix = prefix or hashlib.sha256(data).hexdigest()[:8]
    name = f"dofa_tiny_patch16_224-{prefix}.pth"
    (root / name).write_bytes(data)
    return name


def test_hash_prefix_from_name():
    assert hash_prefix_from_name("dofa_base_patch16_224-a0275954.pth") == "a0275954"
    assert hash_prefix_from_name("DOFA_ViT_base_e100.pth") is None


def test_download_verifies_and_prints_path(weights_server, tmp_path, cli_runner):
    root, base = weights_server
    data = _checkpoint_bytes(tmp_path)
    name = _publish(root, data)
    dest = tmp_path / "weights"
    result = cli_runner.invoke(cli, ["weights", "download", "dofa-base", "--to", str(dest), "--url", f"{base}/{name}"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(dest / name)
    assert (dest / name).read_bytes() == data
    assert list(dest.iterdir()) == [dest / name]  # no temporary file left behind
    # A second call reuses the verified file.
    assert download_weights("dofa-base", dest, url=f"{base}/{name}") == dest / name


def test_download_with_wrong_hash_keeps_nothing(weights_server, tmp_path, cli_runner):
    root, base = weights_server
    name = _publish(root, _checkpoint_bytes(tmp_path), prefix="deadbeef")
    dest = tmp_path / "weights"
    result = cli_runner.invoke(cli, ["weights", "download", "dofa-base", "--to", str(dest), "--url", f"{base}/{name}"])
    assert result.exit_code != 0
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1
    assert "deadbeef" in result.stderr
    assert list(dest.iterdir()) == []


def test_download_unreachable_is_one_line(weights_server, tmp_path, cli_runner):
    _, base = weights_server
    result = cli_runner.invoke(
        cli, ["weights", "download", "dofa-base", "--to", str(tmp_path), "--url", f"{base}/missing-0badf00d.pth"]
    )
    assert result.exit_code != 0
    assert "download of" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_verify_reports_hash_and_refuses_code(tmp_path, cli_runner):
    data = _checkpoint_bytes(tmp_path)
    good = tmp_path / _publish(tmp_path, data)
    result = cli_runner.invoke(cli, ["weights", "verify", str(good)])
    assert result.exit_code == 0 and "matches its name" in result.stdout

    renamed = tmp_path / "dofa_tiny_patch16_224-00000000.pth"
    renamed.write_bytes(data)
    with pytest.raises(InvalidInputError, match="corrupt"):
        verify_weights(renamed)

    evil = tmp_path / "evil.pth"
    torch.save({"x": Payload()}, evil)
    result = cli_runner.invoke(cli, ["weights", "verify", str(evil)])
    assert result.exit_code != 0 and "weights_only=True" in result.stderr
