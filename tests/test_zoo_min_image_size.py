"""A zoo model too large for the data's images is a one-line usage error of ``spikejax train vision``,
raised before anything is traced; :func:`spikejax.models.registry.min_image_size` gives the bound."""

from __future__ import annotations

import pytest

from spikejax.models import vgg
from spikejax.models.registry import min_image_size
from spikejax.train.commands import train_main


def test_min_image_size_follows_the_pools():
    assert min_image_size("spiking_vgg11_bn", num_classes=10, in_channels=1) == 32  # five 2x2 max-pools
    assert min_image_size("spiking_vgg16", cfg=(8, "M", 16, "M", 16)) == 4
    assert min_image_size("sew_resnet18") == 1  # adaptive pooling: no bound


@pytest.mark.parametrize("extra", [[], ["--dataset", "digits"]])
def test_train_vision_vgg_on_digits_is_a_usage_error(extra, tmp_path, capsys, monkeypatch):
    def traced(*args, **kwargs):
        raise AssertionError("the model was called: the size check must come before tracing")

    monkeypatch.setattr(vgg.SpikingVGG, "__call__", traced)
    with pytest.raises(SystemExit) as exc:
        train_main(["vision", "--model", "spiking_vgg11_bn", *extra, "--steps", "1", "--out", str(tmp_path / "run")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == ("spikejax train vision: error: --model: spiking_vgg11_bn needs images of at least 32x32; "
                   "digits images are 8x8")
