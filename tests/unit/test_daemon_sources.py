"""The per-object last-good store and the directory source (no root)."""
from __future__ import annotations

import os

import pytest

from enforcer.daemon.runner import FakeClock
from enforcer.daemon.sources import (FILE_KEPT, KEPT, NOT_LOADED, DirSource, ManifestStore,
                                     read_text)

POLICY = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: {name}, namespace: x}}
spec:
  podSelector: {{matchLabels: {{app: b}}}}
  ingress:
  - from:
    - podSelector: {{matchLabels: {{app: {peer}}}}}
"""
POD = """apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: x, labels: {{app: {name}}}}}
status: {{podIP: {ip}}}
"""


def policy(name="p", peer="a"):
    return POLICY.format(name=name, peer=peer)


def pod(name, ip):
    return POD.format(name=name, ip=ip)


def peer_of(store, key="x/p"):
    pol = store.view[("NetworkPolicy", key)]
    return dict(pol.ingress[0].peers[0].pod_selector.match_labels)["app"]


def test_valid_file_loads_every_object():
    s = ManifestStore()
    changes = s.put_text("/d/f.yaml", policy() + "---\n" + pod("a", "10.0.0.2"))
    assert set(changes) == {("NetworkPolicy", "x/p"), ("Pod", "x/a")}
    c = s.cluster()
    assert set(c.policies) == {"x/p"} and set(c.pods) == {"x/a"}
    assert s.errors() == []


def test_invalid_object_keeps_its_last_good_version_and_others_proceed():
    s = ManifestStore()
    s.put_text("/d/f.yaml", policy(peer="a") + "---\n" + pod("a", "10.0.0.2"))
    bad = policy(peer="a").replace("podSelector: {matchLabels: {app: a}}", "podSelectr: {}")
    changes = s.put_text("/d/f.yaml", bad + "---\n" + pod("a", "10.0.0.9"))
    # The pod (valid) changed; the policy (invalid) did not.
    assert set(changes) == {("Pod", "x/a")}
    assert s.view[("Pod", "x/a")].ips == ("10.0.0.9",)
    assert peer_of(s) == "a"
    errors = s.errors()
    assert errors and all(e.consequence == KEPT for e in errors)
    text = str(errors[0])
    assert "/d/f.yaml" in text and "NetworkPolicy x/p" in text and "podSelectr" in text
    # Fixed: the new version is in force and the error is gone.
    changes = s.put_text("/d/f.yaml", policy(peer="c") + "---\n" + pod("a", "10.0.0.9"))
    assert set(changes) == {("NetworkPolicy", "x/p")}
    assert peer_of(s) == "c" and s.errors() == []


def test_invalid_new_object_is_not_loaded():
    s = ManifestStore()
    bad = policy().replace("podSelector: {matchLabels: {app: a}}", "podSelectr: {}")
    assert s.put_text("/d/f.yaml", bad) == {}
    assert s.view == {}
    assert {e.consequence for e in s.errors()} == {NOT_LOADED}


def test_half_written_file_removes_nothing():
    s = ManifestStore()
    whole = policy("p1") + "---\n" + policy("p2") + "---\n" + pod("a", "10.0.0.2")
    s.put_text("/d/f.yaml", whole)
    for cut in (len(policy("p1")) + 10, len(whole) - 20, 7):
        changes = s.put_text("/d/f.yaml", whole[:cut])
        assert all(v is not None for v in changes.values()), cut
        assert set(s.cluster().policies) == {"x/p1", "x/p2"}, cut
        assert set(s.cluster().pods) == {"x/a"}, cut
    # A YAML syntax error: the whole file's objects stay.
    s.put_text("/d/f.yaml", "kind: [\n")
    assert set(s.cluster().policies) == {"x/p1", "x/p2"}
    assert any(e.consequence == FILE_KEPT for e in s.errors())


def test_truncated_document_with_valid_prefix_keeps_the_rest():
    s = ManifestStore()
    s.put_text("/d/f.yaml", policy("p1") + "---\n" + policy("p2"))
    # Only p1 survives the truncation, and the tail is damage: p2 stays.
    s.put_text("/d/f.yaml", policy("p1") + "---\napiVersion: networking.k8s.io/v1\nkind: Netw")
    assert set(s.cluster().policies) == {"x/p1", "x/p2"}


def test_empty_file_is_being_written_not_a_deletion():
    s = ManifestStore()
    s.put_text("/d/f.yaml", policy())
    assert s.put_text("/d/f.yaml", "") == {}
    assert set(s.cluster().policies) == {"x/p"}
    assert "empty" in str(s.errors()[0])
    # An empty file that never had objects is simply empty.
    assert s.put_text("/d/g.yaml", "  \n") == {}
    assert [e for e in s.errors() if "/d/g.yaml" in str(e)] == []


def test_valid_file_without_an_object_removes_it():
    s = ManifestStore()
    s.put_text("/d/f.yaml", policy("p1") + "---\n" + policy("p2"))
    changes = s.put_text("/d/f.yaml", policy("p1"))
    assert changes == {("NetworkPolicy", "x/p2"): None}
    assert set(s.cluster().policies) == {"x/p1"}


def test_deleted_file_removes_its_objects():
    s = ManifestStore()
    s.put_text("/d/f.yaml", policy())
    assert s.drop("/d/f.yaml") == {("NetworkPolicy", "x/p"): None}
    assert s.view == {}
    assert s.drop("/d/nothing.yaml") == {}


def test_unreadable_file_keeps_its_objects():
    s = ManifestStore()
    s.put_text("/d/f.yaml", policy())
    from enforcer.errors import Problem

    assert s.put_unreadable("/d/f.yaml", Problem("/d/f.yaml", "", "", "not UTF-8")) == {}
    assert set(s.cluster().policies) == {"x/p"}
    assert s.errors()[0].consequence == FILE_KEPT


def test_duplicates_across_files_first_path_wins_and_is_reported():
    s = ManifestStore()
    s.put_text("/d/b.yaml", policy(peer="b"))
    s.put_text("/d/a.yaml", policy(peer="a"))
    assert peer_of(s) == "a"
    dup = [e for e in s.errors() if "Duplicate" in str(e)]
    assert len(dup) == 1 and "/d/b.yaml" in str(dup[0]) and "/d/a.yaml" in str(dup[0])
    # The winner goes: the other copy takes over.
    assert s.drop("/d/a.yaml") == {("NetworkPolicy", "x/p"): s.view[("NetworkPolicy", "x/p")]}
    assert peer_of(s) == "b"
    assert not [e for e in s.errors() if "Duplicate" in str(e)]


def test_object_moved_between_files():
    s = ManifestStore()
    s.put_text("/d/a.yaml", policy())
    s.put_text("/d/b.yaml", policy())  # now in both
    changes = s.put_text("/d/a.yaml", pod("a", "10.0.0.2"))  # and gone from a
    # The policy's content did not change (b.yaml holds the same): only the pod is news.
    assert set(changes) == {("Pod", "x/a")}
    assert set(s.cluster().policies) == {"x/p"}


def test_same_content_reports_no_change():
    s = ManifestStore()
    s.put_text("/d/f.yaml", policy() + "---\n" + pod("a", "10.0.0.2"))
    assert s.put_text("/d/f.yaml", policy() + "---\n" + pod("a", "10.0.0.2")) == {}


def test_label_change_is_a_change():
    s = ManifestStore()
    s.put_text("/d/f.yaml", pod("a", "10.0.0.2"))
    changes = s.put_text("/d/f.yaml", pod("a", "10.0.0.2").replace("app: a", "app: z"))
    assert set(changes) == {("Pod", "x/a")}


# ----------------------------------------------------------------------- DirSource


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def test_scan_reads_new_changed_and_deleted_files(tmp_path):
    s = ManifestStore()
    src = DirSource([str(tmp_path)], s, settle=0.0)
    write(tmp_path / "p.yaml", policy())
    write(tmp_path / ".hidden.yaml", policy("hidden"))
    write(tmp_path / "notes.txt", "not a manifest")
    os.mkdir(tmp_path / "sub.yaml")
    assert set(src.scan()) == {("NetworkPolicy", "x/p")}
    assert set(s.cluster().policies) == {"x/p"}
    assert src.scan() == {}  # nothing changed
    write(tmp_path / "p.yaml", policy(peer="zz"))
    assert set(src.scan()) == {("NetworkPolicy", "x/p")}
    os.unlink(tmp_path / "p.yaml")
    assert src.scan() == {("NetworkPolicy", "x/p"): None}


def test_missing_directory_removes_nothing(tmp_path):
    d = tmp_path / "w"
    d.mkdir()
    s = ManifestStore()
    src = DirSource([str(d)], s, settle=0.0)
    write(d / "p.yaml", policy())
    src.scan()
    os.unlink(d / "p.yaml")
    os.rmdir(d)
    assert src.scan() == {}
    assert set(s.cluster().policies) == {"x/p"}
    assert any("cannot read directory" in str(e) for e in s.errors())
    # A file event for it changes nothing either.
    assert src.load([str(d / "p.yaml")]) == {}


def test_scan_leaves_a_file_being_written_to_its_events(tmp_path):
    s = ManifestStore()
    src = DirSource([str(tmp_path)], s, settle=30.0)
    write(tmp_path / "p.yaml", policy())
    src.scan(force=True)  # start-up reads everything
    write(tmp_path / "p.yaml", policy(peer="new"))
    assert src.scan() == {}  # modified just now: the close event reads it
    assert peer_of(s) == "a"


def test_events_decide_when_a_file_is_read(tmp_path):
    clock = FakeClock()
    s = ManifestStore()
    src = DirSource([str(tmp_path)], s, settle=1.0, clock=clock)
    requests = []
    src.on_ready = lambda at, nb: requests.append((at, nb))
    p = str(tmp_path / "p.yaml")
    src.note(p, ready=False)  # IN_MODIFY: still being written
    assert requests == [(1000.0, 1001.0)]
    assert src.take_due() == ([], None)
    clock.advance(0.2)
    src.note(p, ready=True)  # IN_CLOSE_WRITE
    assert src.take_due() == ([p], 1000.0)  # the delay counts from the first event
    src.note(str(tmp_path / "x.txt"), ready=True)  # not a manifest
    src.note("/elsewhere/p.yaml", ready=True)  # not a watched directory
    assert src.take_due() == ([], None)
    src.note(p, ready=False)
    clock.advance(1.0)
    assert src.take_due() == ([p], clock.now - 1.0)  # settled without a close


def test_read_text_problems(tmp_path):
    write(tmp_path / "ok.yaml", "a: 1\n")
    assert read_text(str(tmp_path / "ok.yaml")) == ("a: 1\n", None)
    (tmp_path / "bin.yaml").write_bytes(b"\x00\x01")
    assert "binary" in read_text(str(tmp_path / "bin.yaml"))[1].message
    (tmp_path / "latin.yaml").write_bytes(b"caf\xe9")
    assert "UTF-8" in read_text(str(tmp_path / "latin.yaml"))[1].message
    assert "cannot read" in read_text(str(tmp_path / "nope.yaml"))[1].message


@pytest.mark.timeout(10)
def test_inotify_close_and_rename_are_seen(tmp_path):
    import threading

    s = ManifestStore()
    src = DirSource([str(tmp_path)], s, settle=5.0)
    seen = threading.Event()
    events = []
    src.on_ready = lambda at, nb: (events.append(nb), seen.set() if nb is None else None)
    src.start()
    try:
        write(tmp_path / "p.yaml", policy())
        assert seen.wait(3)
        paths, _ = src.take_due()
        assert paths == [str(tmp_path / "p.yaml")]
        seen.clear()
        write(tmp_path / ".p.yaml.tmp", policy(peer="z"))
        os.rename(tmp_path / ".p.yaml.tmp", tmp_path / "p.yaml")
        assert seen.wait(3)
        paths, _ = src.take_due()
        assert paths == [str(tmp_path / "p.yaml")]
        src.load(paths)
        assert peer_of(s) == "z"
    finally:
        src.stop()


def test_a_file_held_open_is_not_read_until_closed(tmp_path):
    clock = FakeClock()
    src = DirSource([str(tmp_path)], ManifestStore(), settle=0.5, clock=clock)
    p = str(tmp_path / "p.yaml")
    src.opened(p, +1)  # IN_OPEN by a writer
    src.note(p, ready=False)  # IN_MODIFY
    clock.advance(5.0)  # far beyond settle: the writer is still busy
    assert src.take_due() == ([], None)
    src.opened(p, -1)
    src.note(p, ready=True)  # IN_CLOSE_WRITE
    assert src.take_due() == ([p], 1000.0)
    # Issue 20, finding 6: a writer that holds it open for however long is waited for
    # (its partial content is never read, not by a resync scan either) until it closes.
    with open(p, "w") as f:
        f.write(policy("p1"))
    src.load([p])
    src.opened(p, +1)
    src.note(p, ready=False)
    with open(p, "w") as f:
        f.write(policy("p1").split("  ingress:")[0])  # half written
    clock.advance(3600.0)
    assert src.take_due() == ([], None) and src.next_ready() is None
    assert src.scan() == {}  # the mtime is old, but the file is still held
    src.opened(p, -1)
    src.note(p, ready=True)
    assert src.take_due()[0] == [p]


def test_last_good_versions_survive_a_restart(tmp_path):
    from enforcer.daemon.sources import LastGood

    mem = str(tmp_path / "lastgood")
    s = ManifestStore(memory=LastGood(mem))
    s.put_text("/d/f.yaml", policy("p1", peer="a") + "---\n" + policy("p2"))
    s.put_text("/d/f.yaml", policy("p1", peer="b") + "---\n" + policy("p2"))
    s.put_text("/d/g.yaml", policy("g"))
    # p1 is broken now: its last good version (peer b) stays; the store remembers it.
    broken = policy("p1", peer="b").replace("podSelector: {matchLabels: {app: b}}", "podSelectr: {}")
    s.put_text("/d/f.yaml", broken + "---\n" + policy("p2", peer="c"))
    assert peer_of(s, "x/p1") == "b"
    s.drop("/d/g.yaml")
    # A new process (restart) that finds the file still broken recalls p1 at peer b.
    s2 = ManifestStore(memory=LastGood(mem))
    changes = s2.put_text("/d/f.yaml", broken + "---\n" + policy("p2", peer="c"))
    assert set(changes) == {("NetworkPolicy", "x/p1"), ("NetworkPolicy", "x/p2")}
    assert peer_of(s2, "x/p1") == "b" and peer_of(s2, "x/p2") == "c"
    assert all(e.consequence == KEPT for e in s2.errors())
    # A half-written file at start: everything of it is recalled.
    s3 = ManifestStore(memory=LastGood(mem))
    s3.put_text("/d/f.yaml", "apiVersion: v1\nkind: [")
    assert set(s3.cluster().policies) == {"x/p1", "x/p2"}
    # A deleted file is forgotten; a valid file is the truth; only referenced texts stay.
    assert LastGood(mem).recall("/d/g.yaml") == ({}, {})
    s4 = ManifestStore(memory=LastGood(mem))
    s4.put_text("/d/f.yaml", policy("p2", peer="z"))
    assert set(s4.cluster().policies) == {"x/p2"}
    assert len([n for n in os.listdir(mem) if n.endswith(".txt")]) == 1


def test_only_regular_files_inside_the_watched_directories_are_read(tmp_path):
    """Issue 20, findings 4 and 5: a FIFO is never opened (it would block), a symlink out
    of the watched directories is not followed, one inside is."""
    from enforcer.daemon.files import read_text

    watch = tmp_path / "watch"
    watch.mkdir()
    os.mkfifo(watch / "fifo.yaml")
    text, problem = read_text(str(watch / "fifo.yaml"), [str(watch)])  # returns: did not block
    assert text is None and "not a regular file" in problem.message
    (tmp_path / "outside.yaml").write_text("secret: value\n")
    os.symlink(tmp_path / "outside.yaml", watch / "out.yaml")
    text, problem = read_text(str(watch / "out.yaml"), [str(watch)])
    assert text is None and "leading out of the watched directories" in problem.message
    (watch / "real.yaml").write_text(policy("p1"))
    os.symlink("real.yaml", watch / "in.yaml")
    assert read_text(str(watch / "in.yaml"), [str(watch)]) == (policy("p1"), None)


def test_long_quoted_values_are_cut_in_problems():
    from enforcer.daemon.files import tame
    from enforcer.errors import Problem

    p = tame(Problem("f.yaml", "", "", 'expected a Kubernetes object (a mapping), got string '
                     '"root:$y$j9T$SECRETSECRETSECRET:19000"'))
    assert "SECRET" not in p.message and '"root:$y$j9T$SECR..." (cut)' in p.message
    short = Problem("f.yaml", "Pod x/a", "metadata.name", 'Invalid value: "A": bad')
    assert tame(short) is short


@pytest.mark.parametrize("text", ["items: [" + "{}, " * 3000 + "{}]\n",
                                  "- a\n" * 3000,
                                  '{"items": [' + "{}, " * 3000 + "{}]}"])
def test_a_file_of_too_many_values_is_refused_and_its_objects_kept(monkeypatch, text):
    """Issue 20, finding 11: the parsed tree is bounded by a count of values, not only
    by the file's bytes (128 MB of "{}, " would take ~5 GB)."""
    from enforcer.load import documents

    monkeypatch.setattr(documents, "MAX_NODES", 2000)
    s = ManifestStore()
    s.put_text("/d/f.yaml", policy("p1"))
    changes = s.put_text("/d/f.yaml", text)
    assert changes == {} and "x/p1" in s.cluster().policies  # kept: the file is broken
    errors = [str(i) for i in s.errors()]
    assert len(errors) == 1 and "more than 2,000 values in one file" in errors[0]


def test_last_good_copies_are_private_even_those_an_older_version_left(tmp_path):
    """Issue 20, finding 5: the copies of manifests were 0644 in 0755 directories."""
    import stat

    from enforcer.daemon.sources import LastGood

    mem = tmp_path / "lastgood"
    (mem / "files").mkdir(parents=True)
    os.chmod(mem, 0o755)
    old = mem / "0123.txt"
    old.write_text(policy("p1"))
    os.chmod(old, 0o644)
    s = ManifestStore(memory=LastGood(str(mem)))
    s.put_text("/d/f.yaml", policy("p2"))
    assert stat.S_IMODE(os.stat(mem).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(mem / "files").st_mode) == 0o700
    copies = sorted(os.path.relpath(os.path.join(root, name), mem)
                    for root, _, files in os.walk(mem) for name in files)
    # The old copy, the new one beside it, and the index under files/.
    assert len(copies) == 3 and "0123.txt" in copies
    assert [c.endswith(".txt") for c in copies if "/" not in c] == [True, True]
    assert [c for c in copies if c.startswith("files/")] != []
    for name in copies:
        assert stat.S_IMODE(os.stat(mem / name).st_mode) == 0o600, name
