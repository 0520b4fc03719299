"""workflow_scripts.housekeeping: after a successful run, the fine-tuning state folders left
empty go; a folder that still holds a state (a job to resume) and the root stay."""

from workflow_scripts.housekeeping import remove_empty_state_folders


def test_empty_state_folders_go_and_held_ones_stay(tmp_path):
    results = tmp_path / "results"
    for prefix in (results, results / "seeds" / "1" / "results"):
        root = prefix / "state" / "finetune"
        (root / "m1").mkdir(parents=True)  # a finished model: empty
        (root / "m2").mkdir()
        (root / "m2" / "finetune_raw.pt").write_bytes(b"a stopped job's state")
        (root / "m3" / "nested").mkdir(parents=True)  # empty below an empty folder
    (results / "other" / "empty").mkdir(parents=True)  # not a state folder: left alone
    removed = remove_empty_state_folders(results)
    assert len(removed) == 6
    for prefix in (results, results / "seeds" / "1" / "results"):
        root = prefix / "state" / "finetune"
        assert sorted(p.name for p in root.iterdir()) == ["m2"]
        assert (root / "m2" / "finetune_raw.pt").exists()
    assert (results / "other" / "empty").is_dir()
    assert remove_empty_state_folders(results) == []
    assert remove_empty_state_folders(tmp_path / "missing") == []
