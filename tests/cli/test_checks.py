"""The checks both subcommands make first: ``--device`` and ``--out`` fail as one line, exit 2,
before any model is loaded, with the same message from ``explain`` and ``benchmark``."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnexplain.cli import main
from attnexplain.cli.checks import prepare_output_dir, resolve_device
from attnexplain.cli.errors import UsageError

SCRIPT = Path(sys.executable).parent / "attnexplain"
#: A model spec that fails if it is ever loaded: the checks must come first.
NEVER_LOADED = "/nowhere/model-that-must-not-be-loaded"


def _available(name: str) -> bool:
    kind = name.split(":")[0]
    if kind == "cuda":
        index = int(name.split(":")[1]) if ":" in name else 0
        return torch.cuda.is_available() and index < torch.cuda.device_count()
    if kind == "mps":
        return torch.backends.mps.is_available()
    if kind == "xpu":
        return hasattr(torch, "xpu") and torch.xpu.is_available()
    return False


DEVICES = [
    ("cuda", "--device cuda: "),
    ("cuda:1", "--device cuda:1: "),
    ("mps", "--device mps: no mps device is available on this machine; use --device cpu"),
    ("xpu", "--device xpu: no xpu device is available on this machine; use --device cpu"),
    ("meta", "--device meta: meta tensors hold no data, so no model can run on them"),
    ("banana", "--device 'banana' is not a torch device; use cpu, cuda, cuda:N, mps or xpu"),
]


@pytest.mark.parametrize(("name", "message"), DEVICES)
def test_unavailable_devices_are_refused_with_the_reason(name, message) -> None:
    if _available(name):
        assert resolve_device(name) == torch.device(name)
        return
    with pytest.raises(UsageError) as error:
        resolve_device(name)
    assert str(error.value).startswith(message)
    if name == "cuda" and not torch.cuda.is_available():
        assert "CUDA" in str(error.value) and "use --device cpu" in str(error.value)
    if name == "cuda:1" and torch.cuda.is_available():
        assert f"has {torch.cuda.device_count()} cuda device(s)" in str(error.value)


def test_cpu_is_always_available() -> None:
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(("name", "message"), DEVICES)
@pytest.mark.parametrize("command", ["explain", "benchmark"])
def test_both_subcommands_check_the_device_first(command, name, message, tmp_path, capsys):
    if _available(name):
        pytest.skip(f"{name} exists on this machine")
    argv = [command, "--device", name, "--model", NEVER_LOADED, "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"attnexplain: error: {message}")
    assert not (tmp_path / "o").exists()


def _out_error(command: str, out: Path, capsys) -> str:
    assert main([command, "--model", NEVER_LOADED, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("command", ["explain", "benchmark"])
def test_out_that_is_a_file_is_refused(command, tmp_path, capsys) -> None:
    existing = tmp_path / "results.txt"
    existing.write_text("keep me")
    err = _out_error(command, existing, capsys)
    assert f"--out {existing} is a file, not a folder; pass a folder" in err
    assert existing.read_text() == "keep me"
    err = _out_error(command, existing / "run", capsys)  # below a file
    assert "cannot write there (Not a directory)" in err


@pytest.mark.parametrize("command", ["explain", "benchmark"])
def test_out_where_nothing_may_be_created_is_refused(command, tmp_path, capsys) -> None:
    if os.geteuid() == 0:
        # Permission bits do not stop root; sysfs refuses every mkdir, root's included.
        out, reason = Path("/sys/attnexplain-out"), "Operation not permitted"
        if not Path("/sys").is_dir():
            pytest.skip("no /sys on this system to refuse root a folder")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        out, reason = locked / "run", "Permission denied"
    err = _out_error(command, out, capsys)
    assert f"--out {out}: cannot write there ({reason}); pass a folder you can write to" in err


@pytest.mark.parametrize(
    ("code", "reason"),
    [(errno.EROFS, "Read-only file system"), (errno.EACCES, "Permission denied")],
)
@pytest.mark.parametrize("command", ["explain", "benchmark"])
def test_write_failures_in_an_existing_folder_are_refused(
    command, code, reason, tmp_path, capsys, monkeypatch
) -> None:
    # What a read-only mount or a folder without write permission does to the probe file.
    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(tmp_path / ".attnexplain-write-check-x"))

    monkeypatch.setattr("attnexplain.cli.checks.tempfile.NamedTemporaryFile", refuse)
    err = _out_error(command, tmp_path, capsys)
    assert f"--out {tmp_path}: cannot write there ({reason})" in err


def _can_mount_read_only() -> bool:
    if shutil.which("unshare") is None:
        return False
    command = "mount -t tmpfs -o ro tmpfs /mnt"
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", command],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_read_only(), reason="mounting needs CAP_SYS_ADMIN (unshare)")
@pytest.mark.parametrize("command", ["explain", "benchmark"])
def test_out_on_a_real_read_only_mount_is_refused(command, tmp_path) -> None:
    # A read-only tmpfs mounted in a private mount namespace: invisible outside the process.
    mount_point = tmp_path / "ro"
    mount_point.mkdir()
    script = 'mount -t tmpfs -o ro tmpfs "$0" && exec "$@"'
    for out in (mount_point, mount_point / "run"):
        done = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
             str(mount_point), str(SCRIPT), command, "--model", NEVER_LOADED, "--out", str(out)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == [
            f"attnexplain: error: --out {out}: cannot write there (Read-only file system); "
            "pass a folder you can write to"
        ]


def test_prepare_output_dir_creates_the_folder_and_leaves_no_probe(tmp_path) -> None:
    out = prepare_output_dir(tmp_path / "a" / "b")
    assert out.is_dir() and list(out.iterdir()) == []
