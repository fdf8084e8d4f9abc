"""The spikejax model zoo: ``list_models()``, ``create(name, **overrides)``.

Names and keyword arguments follow SpikingJelly 2.0's builders
(``spikingjelly.activation_based.model``): ``spikformer_cifar10``, ``spikformer_ti``,
``spikformer_s``, ``sdt_8_384``, ``qkformer_10_384``, the ResNets and VGGs, plus spikejax's own
``spikformer`` / ``spiking_lm`` (:class:`~spikejax.nn.Spikformer` / :class:`~spikejax.nn.SpikingLM`,
keyword arguments = their config fields). Vision models take ``images[B, H, W, C]`` (NHWC,
direct-encoded over ``T``) or ``[T, B, H, W, C]`` and return ``logits[B, num_classes]``
averaged over T. SpikingJelly checkpoints load with :func:`spikejax.interop.load_spikingjelly`.
"""

# importing the family modules registers their models
from spikejax.models import builtin, qkformer, resnet, sdt, spikformer, vgg  # noqa: F401
from spikejax.models.registry import create, get_builder, list_models, register

__all__ = ["create", "get_builder", "list_models", "register"]
