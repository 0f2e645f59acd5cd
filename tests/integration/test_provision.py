"""vagrant/provision.sh, run on this machine in ways that cannot change it: --dry-run
(prints the plan), and --prefix into a temporary directory with --skip-setup (installs
the unit, the command link and the manifests directory there). Nothing here touches the
host's network, systemd or /etc; a stub stands in for systemctl."""
from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "vagrant" / "provision.sh"
UNIT = ROOT / "vagrant" / "netpol-enforcer.service"
VAGRANTFILE = ROOT / "vagrant" / "Vagrantfile"

# Files the real (non-prefixed) provisioning would create; the tests must leave them alone.
SYSTEM_PATHS = [Path("/etc/systemd/system/netpol-enforcer.service"),
                Path("/usr/local/bin/netpol"), Path("/etc/netpol-enforcer")]


def provision(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("DRY_RUN", "SYSTEMCTL")}
    full_env.update(env or {})
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env=full_env, timeout=60)


def _snapshot() -> dict:
    out = {}
    for p in SYSTEM_PATHS:
        try:
            st = os.lstat(p)
            out[str(p)] = (st.st_mode, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            out[str(p)] = None
    return out


def test_script_is_valid_bash_and_executable():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    assert os.stat(SCRIPT).st_mode & stat.S_IXUSR


def test_help():
    r = provision("--help")
    assert r.returncode == 0
    assert "--dry-run" in r.stdout and "--prefix DIR" in r.stdout


def test_unknown_option_is_refused():
    r = provision("--frobnicate")
    assert r.returncode == 2
    assert "unknown option --frobnicate" in r.stderr


def test_dry_run_plans_everything_and_changes_nothing():
    before = _snapshot()
    r = provision("--dry-run")
    assert r.returncode == 0, r.stderr
    plan = [ln for ln in r.stdout.splitlines() if ln.startswith(("would run:", "would skip:"))]
    # The order matters: tools first, then the unit, then the command link.
    assert plan[0] == f"would run: {ROOT}/scripts/setup.sh"
    # The unit is installed exactly when the one in /etc is missing or differs.
    assert (f"would run: install -m 644 {UNIT} /etc/systemd/system/netpol-enforcer.service" in plan) \
        == _unit_differs(Path("/etc/systemd/system/netpol-enforcer.service"))
    assert any(ln.startswith("would run: install -d -m 755 /etc/systemd/system /usr/local/bin "
                             "/etc/netpol-enforcer/manifests") for ln in plan)
    assert _snapshot() == before


def _unit_differs(path: Path) -> bool:
    return not path.exists() or path.read_bytes() != UNIT.read_bytes()


def test_setup_is_the_one_make_demo_runs():
    """`make demo` depends on `make setup`, which runs scripts/setup.sh: the same script the
    provisioning runs first."""
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:\s*setup\b", makefile, re.M)
    setup_recipe = re.search(r"^setup:.*\n((?:\t.*\n)+)", makefile, re.M).group(1)
    assert "scripts/setup.sh" in setup_recipe
    assert "scripts/setup.sh" in provision("--dry-run").stdout


def test_install_into_a_prefix(tmp_path):
    r = provision("--prefix", str(tmp_path), "--skip-setup")
    assert r.returncode == 0, r.stderr
    unit = tmp_path / "etc/systemd/system/netpol-enforcer.service"
    assert unit.read_bytes() == UNIT.read_bytes()
    assert oct(unit.stat().st_mode & 0o777) == "0o644"
    link = tmp_path / "usr/local/bin/netpol"
    assert link.is_symlink() and os.readlink(link) == str(ROOT / ".venv" / "bin" / "netpol")
    assert (tmp_path / "etc/netpol-enforcer/manifests").is_dir()
    # The unit runs what the provisioning links, and watches what it creates.
    text = UNIT.read_text()
    assert "ExecStart=/usr/local/bin/netpol run" in text
    assert "--watch /etc/netpol-enforcer/manifests" in text
    # The guide at the end.
    assert "sudo make demo" in r.stdout
    assert "netpol lab up" in r.stdout and "netpol lab down" in r.stdout


def test_second_run_changes_nothing(tmp_path):
    assert provision("--prefix", str(tmp_path), "--skip-setup").returncode == 0
    r = provision("--prefix", str(tmp_path), "--skip-setup", "--dry-run")
    plan = [ln for ln in r.stdout.splitlines() if ln.startswith("would run:")]
    # Only the harmless `install -d` of existing directories is left.
    assert len(plan) == 1 and plan[0].startswith("would run: install -d "), plan


def test_changed_unit_is_reinstalled(tmp_path):
    assert provision("--prefix", str(tmp_path), "--skip-setup").returncode == 0
    unit = tmp_path / "etc/systemd/system/netpol-enforcer.service"
    unit.write_text("stale\n")
    assert provision("--prefix", str(tmp_path), "--skip-setup").returncode == 0
    assert unit.read_bytes() == UNIT.read_bytes()


def test_start_uses_systemctl(tmp_path):
    log = tmp_path / "systemctl.log"
    stub = tmp_path / "systemctl-stub"
    stub.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n")
    stub.chmod(0o755)
    r = provision("--prefix", str(tmp_path / "root"), "--skip-setup", "--start",
                  env={"SYSTEMCTL": str(stub)})
    assert r.returncode == 0, r.stderr
    assert log.read_text().splitlines() == ["daemon-reload", "enable --now netpol-enforcer.service"]


def test_prefix_alone_does_not_start(tmp_path):
    log = tmp_path / "systemctl.log"
    stub = tmp_path / "systemctl-stub"
    stub.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n")
    stub.chmod(0o755)
    r = provision("--prefix", str(tmp_path / "root"), "--skip-setup", env={"SYSTEMCTL": str(stub)})
    assert r.returncode == 0, r.stderr
    assert not log.exists()


def test_vagrantfile_matches_the_provisioning():
    text = VAGRANTFILE.read_text()
    assert 'config.vm.box = "debian/bookworm64"' in text
    # The repository lands where the unit's Documentation= and the script expect it.
    assert '"/opt/netpol-enforcer", type: "rsync"' in text
    assert "bash /opt/netpol-enforcer/vagrant/provision.sh" in text
    assert "/opt/netpol-enforcer/" in UNIT.read_text()
    assert '".venv/"' in text  # the host's virtualenv is not copied into the VM
    if shutil.which("ruby"):
        subprocess.run(["ruby", "-c", str(VAGRANTFILE)], check=True, capture_output=True)


@pytest.mark.root
def test_refuses_to_install_as_non_root_without_prefix():
    # pytest's tmp_path is private to root; nobody needs a world-readable copy.
    with tempfile.TemporaryDirectory(prefix="npt-provision-") as tmp:
        copy = Path(tmp)
        os.chmod(copy, 0o755)
        (copy / "vagrant").mkdir(mode=0o755)
        shutil.copy(SCRIPT, copy / "vagrant" / "provision.sh")
        shutil.copy(UNIT, copy / "vagrant" / "netpol-enforcer.service")
        os.chmod(copy / "vagrant" / "provision.sh", 0o755)
        os.chmod(copy / "vagrant" / "netpol-enforcer.service", 0o644)
        r = subprocess.run(["runuser", "-u", "nobody", "--", "bash",
                            str(copy / "vagrant" / "provision.sh"), "--skip-setup"],
                           capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, r.stderr
    assert "run as root" in r.stderr
