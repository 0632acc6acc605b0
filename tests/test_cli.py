import subprocess
import sys
import types
from pathlib import Path

import pytest

from rlhf_lab.__main__ import STAGES, main
from rlhf_lab.jsonl import write_jsonl
from rlhf_lab.models import load_policy


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("RLHF_LAB_THREADS", "1")  # main() sets torch's threads from this


def test_headless_stages_import_no_notebook_packages():
    """The stages run on a server without ipywidgets or IPython (a GPU machine had neither: `comparisons` and
    `rm` failed at import until the ranking flags moved out of widgets.py)."""
    code = ("import sys, rlhf_lab.__main__, rlhf_lab.pipeline, rlhf_lab.comparisons, rlhf_lab.findings, rlhf_lab.timing; "
            "print([m for m in ('ipywidgets', 'IPython') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_help_lists_every_stage(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(stage in out for stage in STAGES)
    for stage in STAGES:
        with pytest.raises(SystemExit) as exit_:
            main([stage, "--help"])
        assert exit_.value.code == 0


def test_unknown_or_missing_stage_is_an_argparse_error(capsys):
    for argv in (["bogus"], []):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


def test_data_stage_calls_the_world_export(monkeypatch, tmp_path, capsys):
    """Wiring only: a stand-in for rlhf_lab.world.export records the call."""
    calls = []
    export = types.ModuleType("rlhf_lab.world.export")
    export.write_data = lambda out_dir, seed: calls.append((out_dir, seed)) or {"corpus/train.jsonl": 3}
    monkeypatch.setitem(sys.modules, "rlhf_lab.world", types.ModuleType("rlhf_lab.world"))
    monkeypatch.setitem(sys.modules, "rlhf_lab.world.export", export)
    main(["data", "--out", str(tmp_path), "--seed", "7"])
    assert calls == [(tmp_path, 7)]
    assert capsys.readouterr().out.split() == ["3", "records", str(tmp_path / "corpus/train.jsonl")]


@pytest.fixture
def data_dir(tmp_path, sentences):
    write_jsonl(tmp_path / "data/corpus/train.jsonl", [{"text": s} for s in sentences[:180]])
    write_jsonl(tmp_path / "data/corpus/validation.jsonl", [{"text": s} for s in sentences[180:]])
    return tmp_path / "data"


def test_tokenizer_stage(data_dir, capsys):
    main(["tokenizer", "--smoke", "--data", str(data_dir), "--out", str(data_dir / "tokenizer")])
    assert (data_dir / "tokenizer" / "tokenizer.json").exists()
    assert "saved a tokenizer with 320 tokens" in capsys.readouterr().out


def test_pretrain_smoke_end_to_end(data_dir, tmp_path, capsys):
    out, runs = tmp_path / "model", tmp_path / "runs"
    main(["pretrain", "--smoke", "--data", str(data_dir), "--out", str(out), "--runs", str(runs)])
    assert "saved a 0.0" in capsys.readouterr().out
    assert (runs / "history.json").exists() and (runs / "loss.png").exists()
    assert not (data_dir / "tokenizer").exists()  # a smoke run never replaces the course tokenizer
    model, tokenizer = load_policy(out, device="cpu")
    assert model.config.n_embd == 32 and len(tokenizer) == 320


def test_missing_corpus_says_what_to_run(tmp_path):
    with pytest.raises(SystemExit, match="run `python -m rlhf_lab data` first"):
        main(["pretrain", "--smoke", "--data", str(tmp_path), "--out", str(tmp_path / "m")])


def test_rm_and_ppo_stages_parse_their_options():
    from rlhf_lab.__main__ import build_parser, run_ppo, run_rm

    args = build_parser().parse_args(["ppo", "--ptx-coef", "2.5", "--kl-coef", "0", "--steps", "3"])
    assert (args.run, args.ptx_coef, args.kl_coef, args.steps, args.smoke) == (run_ppo, 2.5, 0.0, 3, False)
    assert build_parser().parse_args(["rm", "--smoke"]).run is run_rm


def test_beyond_ppo_stages_parse_their_options():
    from rlhf_lab.__main__ import build_parser, run_bon, run_dpo, run_rloo

    args = build_parser().parse_args(["bon", "--seed", "2", "--n", "8"])
    assert (args.run, args.seed, args.n) == (run_bon, 2, 8)
    args = build_parser().parse_args(["dpo", "--beta", "0.5"])
    assert (args.run, args.beta) == (run_dpo, 0.5)
    args = build_parser().parse_args(["rloo", "--kl-coef", "0.1", "--steps", "4"])
    assert (args.run, args.kl_coef, args.steps) == (run_rloo, 0.1, 4)


def test_evaluate_bench_and_large_pretrain_parse(monkeypatch, tmp_path):
    from rlhf_lab import __main__ as cli

    parser = cli.build_parser()
    assert parser.parse_args(["evaluate", "--quiet"]).run is cli.run_evaluate
    assert parser.parse_args(["bench"]).run is cli.run_bench
    args = parser.parse_args(["pretrain", "--large"])
    assert args.large and not args.smoke
    seen = {}

    def fake_pretrain(config, model_config, tokenizer, texts_train, texts_valid, out_dir):
        seen.update(config=config, model_config=model_config, out_dir=out_dir)
        raise RuntimeError("stop here")

    monkeypatch.setattr("rlhf_lab.pretrain.pretrain", fake_pretrain)
    monkeypatch.setattr(cli, "DATA_DIR", tmp_path)
    monkeypatch.setattr(cli, "_corpus", lambda data, split: ["text"])
    monkeypatch.setattr("rlhf_lab.tokenizer.load_tokenizer", lambda path: None)
    (tmp_path / "tokenizer").mkdir()
    with pytest.raises(RuntimeError, match="stop here"):
        cli.main(["pretrain", "--large", "--data", str(tmp_path), "--seed", "5"])
    assert (seen["model_config"].n_embd, seen["model_config"].n_layer) == (320, 6)
    assert seen["out_dir"].name == "pretrain-large" and seen["config"].seed == 5


def test_evaluate_passes_its_seed_on(monkeypatch, capsys):
    from rlhf_lab import __main__ as cli

    seeds = []
    monkeypatch.setattr("rlhf_lab.pipeline.evaluate", lambda progress, seed: seeds.append(seed) or ([], {}))
    monkeypatch.setattr("rlhf_lab.findings.table", lambda findings: "")
    cli.main(["evaluate", "--quiet", "--seed", "4"])
    assert seeds == [4]


@pytest.mark.parametrize("stage,config_name,folder", [("sft", "SFTConfig", "sft"), ("comparisons", "ComparisonsConfig", "comparisons"),
                                                       ("rm", "RewardConfig", "rm"), ("ppo", "PPOConfig", "ppo"),
                                                       ("dpo", "DPOConfig", "dpo"), ("rloo", "RLOOConfig", "rloo")])
def test_every_training_stage_takes_a_seed(stage, config_name, folder):
    from rlhf_lab import config as configs
    from rlhf_lab.__main__ import _config_and_out, build_parser

    config, out = _config_and_out(build_parser().parse_args([stage, "--seed", "3"]), getattr(configs, config_name),
                                  Path("runs") / folder)
    assert config.seed == 3 and out == Path("runs") / folder
    smoke, smoke_out = _config_and_out(build_parser().parse_args([stage, "--smoke"]), getattr(configs, config_name),
                                       Path("runs") / folder)
    assert smoke.seed == 0 and smoke_out.parent.name == "smoke"
