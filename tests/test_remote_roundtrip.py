"""The GPU-machine round trip with two clones and real remotes: clone A (the GPU machine)
runs an experiment and ``dvc exp push``es it; clone B (the laptop) ``dvc exp pull``s it,
sees it in ``dvc exp show``, pulls its pretrained checkpoint and loads it.

Git remote: a bare repository. DVC remote: SSH through the dvc-ssh plugin, served by a
real SSH server on 127.0.0.1 that the test starts and stops (tests/_sftp_server.py,
asyncssh's server with SFTP: OpenSSH's sshd is not installed here, and asyncssh comes
with dvc-ssh, so the test needs nothing outside the venv). Host and client keys are made
in tmp_path; the remote's settings (port, user, keyfile) go to each clone's
``.dvc/config.local``, nothing to ~/.ssh.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import asyncssh
import pytest

from hubert.fairseq.checkpoint import load_hubert
from tests._exp_fixtures import REPO, make_clone

pytestmark = pytest.mark.slow

CHECKPOINT = "data/pretrain/iter1/checkpoint.pt"


@pytest.fixture
def sftp_server(tmp_path):
    """(port, client key file, storage folder) of an SSH server on 127.0.0.1; stopped afterwards."""
    keys = tmp_path / "keys"
    keys.mkdir()
    for name in ("host", "client"):
        key = asyncssh.generate_private_key("ssh-ed25519")
        key.write_private_key(str(keys / name))
        key.write_public_key(str(keys / f"{name}.pub"))
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "_sftp_server.py"), "--host-key", str(keys / "host"),
                             "--authorized-keys", str(keys / "client.pub")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        storage = tmp_path / "storage"
        storage.mkdir()
        yield port, keys / "client", storage
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode is not None


def add_ssh_remote(clone, port: int, keyfile: Path, storage: Path) -> None:
    # what a GPU machine and a laptop do (README, "Run on a GPU machine"); the URL and the
    # credentials in .dvc/config.local, as they differ per machine
    clone.dvc("remote", "add", "--local", "-d", "-f", "storage", f"ssh://127.0.0.1{storage}")
    clone.dvc("remote", "modify", "--local", "storage", "port", str(port))
    clone.dvc("remote", "modify", "--local", "storage", "user", "dvc")
    clone.dvc("remote", "modify", "--local", "storage", "keyfile", str(keyfile))


def test_the_server_refuses_a_key_it_does_not_know(sftp_server, tmp_path):
    port, _, storage = sftp_server
    other = asyncssh.generate_private_key("ssh-ed25519")
    other.write_private_key(str(tmp_path / "other"))
    from dvc_ssh import SSHFileSystem

    fs = SSHFileSystem(host="127.0.0.1", port=port, user="dvc", keyfile=str(tmp_path / "other"))
    with pytest.raises(Exception, match="(?i)permission denied|auth"):
        fs.fs.ls(str(storage))


def test_exp_push_over_ssh_then_pull_on_another_clone(tiny_exp_clone, tiny_exp_longer, sftp_server, tmp_path):
    port, keyfile, storage = sftp_server
    a = tiny_exp_clone
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)

    # clone A, the GPU machine: remotes, the baseline commit, then the experiment
    a.run("git", "remote", "set-url", "origin", str(origin))
    a.run("git", "push", "-q", "origin", "HEAD:main")
    add_ssh_remote(a, port, keyfile, storage)
    a.dvc("exp", "push", "origin", "iter1-40")
    assert any((storage / "files" / "md5").rglob("*")), "nothing reached the SSH remote"

    # clone B, the laptop: a fresh clone of the git remote, its own (empty) cache
    b = make_clone(tmp_path / "laptop" / "repo", source=origin)
    add_ssh_remote(b, port, keyfile, storage)
    assert not (b.root / CHECKPOINT).exists()
    b.dvc("exp", "pull", "origin", "iter1-40")
    shown = b.json("exp", "show", "--json")
    names = {rev.get("name") or exp.get("name") for base in shown for exp in base.get("experiments") or []
             for rev in exp.get("revs") or []}
    assert "iter1-40" in names
    b.dvc("exp", "apply", "iter1-40")
    b.dvc("pull", CHECKPOINT)

    pulled, made = (b.root / CHECKPOINT).read_bytes(), (a.root / CHECKPOINT).read_bytes()
    assert pulled == made
    model, task_cfg = load_hubert(b.root / CHECKPOINT)
    assert task_cfg.label_rate == 100  # iteration 1: MFCC labels
    assert sum(p.numel() for p in model.parameters()) > 0
