"""The quick-start job trains: accuracy well above chance on held-out digits."""

from spikejax import cli, demo


def test_demo_learns_digits():
    metrics = demo.train(steps=150, hidden=128, log_every=0)
    assert metrics["test_accuracy"] > 0.85  # chance is 0.10
    assert 0.0 < metrics["firing_rate"] < 1.0


def test_cli_usage(capsys):
    assert cli.main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out
    assert cli.main(["no-such-command"]) == 2
