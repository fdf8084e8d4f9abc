"""Model configs are values: frozen, validated on construction and on dataclasses.replace, and
spikejax.nn.config imports no model code."""

import dataclasses
import subprocess
import sys
import textwrap

import pytest

from spikejax import nn as snn
from spikejax.models.resnet import MSResNetConfig, ResNetConfig
from spikejax.models.vgg import VGGConfig

CONFIGS = [
    lambda: snn.SpikingLMConfig(vocab_size=32, d_model=16, num_heads=2, num_layers=1, max_len=8),
    lambda: snn.SpikformerConfig(image_size=8, patch_size=4, d_model=16, num_heads=2, num_layers=1),
    lambda: ResNetConfig(layers=(1, 1, 1, 1), num_classes=10),
    lambda: MSResNetConfig(layers=(1, 1, 1), num_classes=10),
    lambda: VGGConfig(cfg=(8, "M"), num_classes=10, classifier_hidden=16, pool_size=1),
]


@pytest.mark.parametrize("make", CONFIGS)
def test_a_config_rejects_assignment(make):
    cfg = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.num_classes = 3 if hasattr(cfg, "num_classes") else None
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.dtype = "bfloat16"
    assert cfg.dtype == "float32"
    hash(cfg)  # hashable by value (a static argument of jitted functions)
    assert hash(make()) == hash(cfg) and make() == cfg


@pytest.mark.parametrize("cls, field, value", [
    (snn.SpikingLMConfig, "d_model", 15),  # not divisible by num_heads=4
    (snn.SpikingLMConfig, "num_heads", 0),
    (snn.SpikingLMConfig, "vocab_size", -1),
    (snn.SpikingLMConfig, "dropout", 1.0),
    (snn.SpikingLMConfig, "attention", "flash"),
    (snn.SpikingLMConfig, "mlp_ratio", 0.0),
    (snn.SpikformerConfig, "image_size", 30),  # not divisible by patch_size=4
    (snn.SpikformerConfig, "dtype", "float16"),
    (snn.SpikformerConfig, "norm", "group"),
])
def test_post_init_rejects_a_bad_field_naming_it(cls, field, value):
    with pytest.raises(ValueError, match=rf"^{field}: "):
        cls(**{field: value})
    good = cls()
    with pytest.raises(ValueError, match=rf"^{field}: "):  # replace validates again
        dataclasses.replace(good, **{field: value})
    with pytest.raises(TypeError, match="neuron_kwargs"):
        cls(neuron_kwargs=[("tau", 2.0)])


def test_replace_makes_a_validated_copy():
    cfg = snn.SpikingLMConfig(vocab_size=32, d_model=16, num_heads=2, attention_kwargs={"window": 4})
    wide = dataclasses.replace(cfg, d_model=32, dtype="bfloat16")
    assert (wide.d_model, wide.dtype, wide.vocab_size, wide.attention_kwargs) == (32, "bfloat16", 32, {"window": 4})
    assert (cfg.d_model, cfg.dtype) == (16, "float32")  # unchanged
    assert wide != cfg and hash(wide) != hash(cfg)
    assert wide == snn.SpikingLMConfig(vocab_size=32, d_model=32, num_heads=2, dtype="bfloat16",
                                       attention_kwargs={"window": 4})
    assert cfg.replace(d_model=32, dtype="bfloat16") == wide  # the method spelling
    assert snn.SpikingLMConfig.from_json(wide.to_json()) == wide
    import jax.numpy as jnp

    assert dataclasses.replace(cfg, dtype=jnp.bfloat16).dtype == "bfloat16"  # a dtype is stored by name


def test_a_config_owns_its_dict_fields():
    """The hash the jit cache relies on cannot change through the caller's dict."""
    kwargs = {"threshold": 0.5}
    cfg = snn.SpikingLMConfig(neuron_kwargs=kwargs)
    before = hash(cfg)
    kwargs["threshold"] = 2.0
    assert cfg.neuron_kwargs == {"threshold": 0.5} and hash(cfg) == before
    copy = dataclasses.replace(cfg, d_model=32)
    assert copy.neuron_kwargs == cfg.neuron_kwargs and copy.neuron_kwargs is not cfg.neuron_kwargs


def test_shared_fields_are_defined_once_with_the_image_model_defaults():
    lm, sf = snn.SpikingLMConfig(), snn.SpikformerConfig()
    shared = {f.name for f in dataclasses.fields(snn.config.TransformerConfig)}
    assert shared <= {f.name for f in dataclasses.fields(lm)} and shared <= {f.name for f in dataclasses.fields(sf)}
    assert (lm.attention, lm.norm, lm.shortcut) == ("linear", "pre", "membrane")
    assert (sf.attention, sf.norm, sf.shortcut) == ("ssa", "bn", "spike")
    assert snn.SpikingLMConfig(64).vocab_size == 64  # the model's own first field stays positional


def test_build_uses_the_registered_model_class():
    lm = snn.SpikingLMConfig(vocab_size=16, d_model=8, num_heads=2, num_layers=1, max_len=4).build(seed=0)
    assert type(lm) is snn.SpikingLM
    sf = snn.SpikformerConfig(image_size=8, patch_size=4, d_model=8, num_heads=2, num_layers=1).build(seed=0)
    assert type(sf) is snn.Spikformer

    @dataclasses.dataclass(frozen=True)
    class Unbuilt(snn.config.ModelConfig):
        width: int = 1

    with pytest.raises(LookupError, match="Unbuilt"):
        Unbuilt().build()
    with pytest.raises(TypeError, match="config_cls"):
        snn.config.builds(dict)


def test_config_module_imports_no_model_code():
    """Import spikejax.nn.config with the package __init__ files skipped (so nothing else pulls the
    models in): spikejax.nn.models and spikejax.nn.blocks' users stay unimported."""
    code = textwrap.dedent("""
        import importlib.util, os, sys, types
        root = importlib.util.find_spec("spikejax").submodule_search_locations[0]  # not executed
        for name, path in (("spikejax", root), ("spikejax.nn", os.path.join(root, "nn"))):
            pkg = types.ModuleType(name)
            pkg.__path__ = [path]
            sys.modules[name] = pkg
        import spikejax.nn.config as config
        loaded = sorted(m for m in sys.modules if m.startswith("spikejax."))
        assert "spikejax.nn.models" not in sys.modules, loaded
        assert "spikejax.models" not in sys.modules, loaded
        assert config.SpikingLMConfig(d_model=8, num_heads=2).d_model == 8
        print("ok", len(loaded))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("ok")
