import os

import pytest

from fintune.manifest import ArtifactError, Manifest, atomic_path, check, describe


def test_atomic_path_leaves_nothing_under_final_name_on_failure(tmp_path):
    final = tmp_path / "model.gguf"
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash mid-write")
    assert not final.exists()
    assert not list(tmp_path.iterdir())


def test_atomic_path_replaces_on_success(tmp_path):
    final = tmp_path / "d"
    with atomic_path(final) as tmp:
        tmp.mkdir()
        (tmp / "a.txt").write_text("x")
    assert (final / "a.txt").read_text() == "x"


def test_check_names_changed_and_missing_files(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"12345")
    art = describe(f)
    check(art)
    f.write_bytes(b"123456")
    with pytest.raises(ArtifactError, match="a.bin"):
        check(art)
    f.unlink()
    with pytest.raises(ArtifactError, match="missing"):
        check(art)


def test_touched_but_identical_file_still_matches(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"same")
    art = describe(f)
    os.utime(f, ns=(1, 1))
    check(art)


def test_up_to_date_needs_complete_status_same_fingerprint_and_intact_artifacts(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"x")
    m = Manifest(tmp_path / "m.json")
    assert m.is_up_to_date("s", "fp") == (False, "never ran")
    m.save_stage("s", {"status": "complete", "fingerprint": "fp", "artifacts": [describe(f)]})
    assert m.is_up_to_date("s", "fp")[0]
    assert m.is_up_to_date("s", "other") == (False, "config or inputs changed")
    f.write_bytes(b"yy")
    assert not m.is_up_to_date("s", "fp")[0]
