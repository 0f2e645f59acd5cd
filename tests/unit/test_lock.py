"""requirements.lock against pyproject.toml, and against what this venv really has.

`make setup` installs with the lock as constraints; `make lock` (scripts/lock.py) rewrites it.
These fail when someone changes a dependency in pyproject.toml without `make lock`, and when
the venv the tests run in is not the locked one (then: `make setup`).
"""
from __future__ import annotations

import importlib.util
import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement  # pytest's own dependency, pinned in the lock

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("lock_script", ROOT / "scripts" / "lock.py")
lock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock)


def test_lock_agrees_with_pyproject():
    assert lock.problems() == []


def test_the_check_fails_when_pyproject_moves_without_make_lock(tmp_path):
    proj = {"name": "x", "dependencies": ["PyYAML>=6.0", 'pywin32>=300; sys_platform == "win32"'],
            "extras": {"test": ["pytest>=7.4"]}, "build": ["setuptools>=64"]}
    locked = tmp_path / "requirements.lock"
    locked.write_text("# extras: test\n# build: setuptools>=64\n# resolved-for: CPython 3.11, linux x86_64\n"
                      "pip==26.3\npytest==9.2.0\nPyYAML==6.0.4\nsetuptools==84.2.1\n")
    # agrees (pywin32 is for another platform: this platform's lock has no pin for it)
    assert lock.problems(proj, locked) == []

    added = dict(proj, dependencies=proj["dependencies"] + ["kubernetes>=29"])
    assert lock.problems(added, locked) == [
        "pyproject.toml (dependencies) requires kubernetes>=29 but requirements.lock has no pin "
        "for it: run `make lock`"]
    raised = dict(proj, extras={"test": ["pytest>=10"]})
    assert lock.problems(raised, locked) == [
        "pyproject.toml (extra test) requires pytest>=10 but requirements.lock pins "
        "pytest==9.2.0: run `make lock`"]
    new_extra = dict(proj, extras={**proj["extras"], "kube": []})
    assert lock.problems(new_extra, locked) == [
        "requirements.lock covers extras [test] but pyproject.toml has [kube,test]: run `make lock`"]
    backend = dict(proj, build=["hatchling"])
    assert lock.problems(backend, locked) == [
        "pyproject.toml (build-system) requires hatchling but requirements.lock has no pin for it: "
        "run `make lock`"]

    locked.write_text(locked.read_text() + "click>=8\n")
    with pytest.raises(ValueError, match="not a 'name==version' pin: 'click>=8'"):
        lock.problems(proj, locked)


def _installed_closure(requirements: list[str]) -> dict[str, str]:
    """{normalized name: installed version} of everything these requirements pull in."""
    found: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [Requirement(r) for r in requirements]
    todo = [r for r in todo if r.marker is None or r.marker.evaluate({"extra": ""})]
    while todo:
        req = todo.pop()
        key = (lock.normalize(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise AssertionError(f"{req.name} is required but not installed: run `make setup`") from None
        found[key[0]] = dist.version
        for text in dist.requires or []:
            sub = Requirement(text)
            # A dependency counts when its marker holds for no extra or for one asked for.
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in ("", *req.extras)):
                todo.append(sub)
    return found


def test_the_venv_has_exactly_the_locked_versions():
    proj = lock.project()
    pins, header = lock.read_lock()
    wanted = proj["dependencies"] + [r for reqs in proj["extras"].values() for r in reqs]
    closure = _installed_closure(wanted)
    tools = _installed_closure(proj["build"] + list(lock.TOOLS))
    wrong = {name: (version, pins.get(name)) for name, version in {**closure, **tools}.items()
             if pins.get(name) != version}
    assert wrong == {}, f"installed != locked (installed, locked): {wrong}: run `make setup`"
    # Nothing pinned that nothing needs: a stale pin would hide a dependency that went away.
    assert set(pins) - set(closure) - set(tools) == set()
    assert re.fullmatch(r"\w+ \d+\.\d+, \w+ \w+", header["resolved-for"])


def test_setup_installs_with_the_lock_and_every_entry_point_runs_setup():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert re.search(r'install -c "\$lock" --no-build-isolation -e "\.\[\$extras\]"', setup)
    makefile = (ROOT / "Makefile").read_text()
    for target in ("test", "demo"):
        assert re.search(rf"^{target}:\s*setup\b", makefile, re.M), target
    assert re.search(r"^lock:\n\tpython3 scripts/lock\.py$", makefile, re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/lock.py --check" in ci and "make test" in ci
