import pytest

from rlhf_lab import jsonl
from rlhf_lab.jsonl import JSONLError, load_json_dataset, read_jsonl, write_jsonl

RECORDS = [{"prompt": "Wie heißt die Katze? 🐱", "completion": "Mia", "id": 1}, {"z": [1, 2], "a": None}]


def test_write_is_deterministic_and_keeps_key_order(tmp_path):
    path = write_jsonl(tmp_path / "out.jsonl", RECORDS)
    expected = '{"prompt": "Wie heißt die Katze? 🐱", "completion": "Mia", "id": 1}\n{"z": [1, 2], "a": null}\n'
    assert path.read_bytes() == expected.encode("utf-8")
    assert read_jsonl(path) == RECORDS
    assert [f.name for f in tmp_path.iterdir()] == ["out.jsonl"]  # no temporary file left


def test_failed_write_keeps_the_old_file(tmp_path):
    path = write_jsonl(tmp_path / "out.jsonl", RECORDS)
    with pytest.raises(TypeError, match="record 1 is a list"):
        write_jsonl(path, [{"ok": 1}, ["not", "a", "dict"]])
    assert read_jsonl(path) == RECORDS
    assert [f.name for f in tmp_path.iterdir()] == ["out.jsonl"]


def _file(tmp_path, text: str | bytes):
    path = tmp_path / "data.jsonl"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_blank_lines_are_skipped(tmp_path):
    assert read_jsonl(_file(tmp_path, '{"a": 1}\n\n   \n{"a": 2}\n')) == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize(
    "text,line,problem",
    [
        ('{"a": 1}\n\n{"a": 2,}\n', 3, "invalid JSON"),
        ('{"a": 1}\n[1, 2]\n', 2, "expected a JSON object, got list"),
        ('"just a string"\n', 1, "expected a JSON object, got str"),
        ('{"text": "x"}\n{"txt": "y"}\n', 2, "missing required key\\(s\\) 'text'; record has 'txt'"),
        (b'{"a": 1}\n{"a": "\xff"}\n', 2, "not valid UTF-8"),
    ],
)
def test_errors_name_file_and_line(tmp_path, text, line, problem):
    path = _file(tmp_path, text)
    with pytest.raises(JSONLError, match=rf"data\.jsonl:{line}: {problem}") as info:
        read_jsonl(path, required=("text",) if "text" in problem else ())
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_load_json_dataset(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonl, "RUNS_DIR", tmp_path / "runs")
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "p1", "completion": "c1"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "p2", "completion": "c2"}, {"prompt": "p3", "completion": "c3"}])
    dataset = load_json_dataset([a, b], required=("prompt", "completion"))
    assert dataset["prompt"] == ["p1", "p2", "p3"]
    assert (tmp_path / "runs" / "hf_cache").is_dir()  # the Arrow cache stays out of ~


def test_load_json_dataset_reports_the_line(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonl, "RUNS_DIR", tmp_path / "runs")
    path = _file(tmp_path, '{"prompt": "p"}\n{"prompt": "q"\n')
    with pytest.raises(JSONLError, match=r"data\.jsonl:2: invalid JSON"):
        load_json_dataset(path)
    with pytest.raises(JSONLError, match="no records"):
        load_json_dataset(_file(tmp_path, "\n"))
