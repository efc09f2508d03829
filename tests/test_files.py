"""``vitlib.support.files``: a JSON file written atomically reads back the same; an absent one is None."""

from __future__ import annotations

from pathlib import Path

from vitlib.support.files import read_json, write_json_atomic


def test_json_written_atomically_reads_back_and_an_absent_file_is_none(tmp_path: Path) -> None:
    payload = {"top1": 0.5, "rows": [{"name": "a"}], "path": tmp_path}
    write_json_atomic(tmp_path / "sub" / "a.json", payload)
    assert read_json(tmp_path / "sub" / "a.json") == {**payload, "path": str(tmp_path)}  # default=str
    assert read_json(str(tmp_path / "sub" / "a.json"))["top1"] == 0.5
    assert read_json(tmp_path / "absent.json") is None and read_json(tmp_path / "sub") is None
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.json"]  # no temporary file left
