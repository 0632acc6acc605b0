"""Figures: the PPO dashboard draws every curve it is given, skips missing ones, and saves a PNG."""
from rlhf_lab.plots import PPO_PANELS, plot_history, ppo_dashboard


def test_ppo_dashboard_has_one_panel_per_group_and_skips_missing_points(tmp_path):
    history = [{"step": s, "reward": 0.1 * s, "gold": 0.5, "kl_k1": 0.2 * s, "kl_k3": 0.2 * s, "kl_exact": 0.2 * s,
                "length": 20, "entropy": 1.0, "clip_fraction": 0.01, "beta": 0.1} for s in range(1, 6)]
    history[2].pop("gold")
    fig = ppo_dashboard(history, path=tmp_path / "d.png")
    assert (tmp_path / "d.png").stat().st_size > 1000
    axes = fig.axes
    assert len(axes) == len(PPO_PANELS) == 6
    reward_lines = {line.get_label(): list(line.get_ydata()) for line in axes[0].get_lines()}
    assert reward_lines["reward"] == [0.1 * s for s in range(1, 6)] and len(reward_lines["gold"]) == 4
    assert [line.get_label() for line in axes[1].get_lines()] == ["kl k1", "kl k3", "kl exact"]


def test_plot_history_saves_and_labels(tmp_path):
    fig = plot_history([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}], ["loss"], title="t", path=tmp_path / "h.png")
    assert (tmp_path / "h.png").exists() and fig.axes[0].get_title() == "t"
    assert list(fig.axes[0].get_lines()[0].get_ydata()) == [2.0, 1.0]
