"""`pyairir serve`'s command line: what it refuses before serving, with one-line messages."""

from __future__ import annotations

import socket

import torch

import pyairir
from pyairir.cli import main
from tests.serve.server_process import serve


def run(capsys, *arguments: str) -> tuple[int, str]:
    code = main(["serve", *arguments])
    return code, capsys.readouterr().err.strip()


def test_bad_settings_are_refused_before_serving(capsys, tmp_path):
    assert run(capsys, "--max-pixels", "0") == (1, "pyairir serve: --max-pixels must be positive, got 0")
    assert run(capsys, "--port", "70000") == (1, "pyairir serve: --port must be 0..65535, got 70000")
    assert run(capsys, "--iterations", "2") == (
        1, "pyairir serve: iterations: only SIPL models refine iteratively; NAFNet does not")
    assert run(capsys, "--tile", "8") == (1, "pyairir serve: tile must be at least 33 (the model's size multiple 16, "
                                             "and more than the overlap 32), got tile 8 with overlap 32")
    torch.save({"params": pyairir.create_model("nafnet_demo").state_dict()}, tmp_path / "nafnet.pth")
    code, message = run(capsys, "--model", "promptir", "--checkpoint", str(tmp_path / "nafnet.pth"))
    assert code == 1 and message.startswith("pyairir serve: ") and "nafnet.pth" in message and "missing" in message


def test_a_port_in_use_is_named(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert run(capsys, "--port", str(port)) == (
            1, f"pyairir serve: cannot listen on 127.0.0.1:{port}: Address already in use")


def test_serves_and_stops_on_ctrl_c_leaving_no_files():
    import tempfile
    import urllib.request
    from pathlib import Path

    before = set(Path(tempfile.gettempdir()).glob("pyairir-serve-*"))
    with serve("--max-pixels", "5000") as (url, process):
        with urllib.request.urlopen(url + "api/info") as response:
            assert b'"max_pixels": 5000' in response.read()
        assert set(Path(tempfile.gettempdir()).glob("pyairir-serve-*")) - before  # its folder, while it runs
    assert process.returncode == 0 and process.stderr.read() == ""
    assert set(Path(tempfile.gettempdir()).glob("pyairir-serve-*")) == before


def test_another_address_than_localhost_is_warned_about():
    with serve("--host", "127.0.0.2") as (url, process):
        assert url.startswith("http://127.0.0.2:")
    assert process.stderr.read() == ("pyairir serve: warning: listening on 127.0.0.2: other computers can reach this "
                                     "server\n")


def test_the_sipl_demo_is_served_under_its_own_name():
    import json
    import urllib.request

    with serve("--paradigm", "sipl") as (url, process):
        with urllib.request.urlopen(url + "api/info") as response:
            assert json.loads(response.read())["model"] == "the demo model (SIPL around promptir, pyairir/weights)"
    assert process.returncode == 0
