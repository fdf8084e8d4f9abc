"""Spiking transformer models: :class:`SpikingLM` (causal language model) and :class:`Spikformer`
(image classifier). Both are deterministic functions of their inputs and parameters.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spikejax import encoding
from spikejax.nn.blocks import SpikingTransformerBlock, time_shared_dropout
from spikejax.nn.config import SpikformerConfig, SpikingLMConfig, builds
from spikejax.nn.layers import linear, make_norm
from spikejax.nn.neurons import make_neuron
from spikejax.remat import remat_call, remat_modes

Array = jax.Array

__all__ = ["SpikingLM", "SpikingLMState", "Spikformer", "SpikingPatchEmbed"]


def _blocks(cfg, *, causal: bool, rngs: nnx.Rngs) -> nnx.List:
    return nnx.List([
        SpikingTransformerBlock(
            cfg.d_model, cfg.num_heads, attention=cfg.attention, mlp_ratio=cfg.mlp_ratio, norm=cfg.norm,
            shortcut=cfg.shortcut, causal=causal, attention_kwargs=cfg.attention_kwargs,
            neuron=cfg.neuron, neuron_kwargs=cfg.neuron_kwargs, backend=cfg.backend, dtype=cfg.compute_dtype,
            dropout=getattr(cfg, "dropout", 0.0), rngs=rngs)
        for _ in range(cfg.num_layers)
    ])


def _head(d_in: int, d_out: int, dtype, rngs: nnx.Rngs) -> nnx.Linear:
    """The readout projection: multiplies in ``dtype``, accumulates and returns float32 logits."""
    extra = {} if dtype == jnp.float32 else {"preferred_element_type": jnp.float32}
    return linear(d_in, d_out, rngs, dtype, **extra)


class SpikingLMState(NamedTuple):
    """Decoding state of :class:`SpikingLM`: the next position ``pos`` (int32 scalar) and one
    attention state per layer."""

    pos: Array
    layers: tuple


@builds(SpikingLMConfig)
class SpikingLM(nnx.Module):
    """Causal spiking language model.

    ``tokens[B, L]`` → ``e = token_embed(tokens) + pos_embed(0..L-1)`` ``[B, L, D]`` → direct
    encoding over T steps ``[T, B, L, D]`` (→ ``embed_neuron`` spikes with the spike shortcut) →
    ``num_layers`` causal :class:`~spikejax.nn.SpikingTransformerBlock` → ``final_norm`` →
    ``head`` → mean over T → ``logits[B, L, vocab]`` (float32). Position i depends on tokens ``≤ i`` only.
    With ``config.dtype="bfloat16"`` everything after the embedding runs in bfloat16 (parameters
    float32; see :class:`~spikejax.nn.SpikingLMConfig`); the logits are float32 either way.

    Args:
      config: a :class:`~spikejax.nn.SpikingLMConfig`.
      rngs: ``nnx.Rngs`` for the initializers.

    Decoding: ``state = model.init_state(B)``; ``logits, state = model.decode_step(token[B], state)``;
    ``model(tokens, return_state=True)`` returns ``(logits, state)`` after a prompt (prefill);
    :meth:`generate` samples with temperature / top-k.
    """

    def __init__(self, config: SpikingLMConfig, *, rngs: nnx.Rngs):
        if not isinstance(config, SpikingLMConfig):
            raise TypeError(f"config: expected a SpikingLMConfig, got {type(config)!r}")
        self.config = config
        D = config.d_model
        # the embedding gather stays float32 (its gradient is a scatter-add over B·L tokens, which
        # would lose precision in bfloat16); the sum is cast to the compute dtype in `embed`
        embed = functools.partial(nnx.Embed, dtype=jnp.float32, param_dtype=jnp.float32, rngs=rngs)
        self.token_embed = embed(config.vocab_size, D)
        self.pos_embed = embed(config.max_len, D) if config.pos_embedding else None
        self.embed_neuron = (
            make_neuron(config.neuron, num_channels=D, backend=config.backend, **config.neuron_kwargs)
            if config.shortcut == "spike" else None
        )
        self.blocks = _blocks(config, causal=True, rngs=rngs)
        self.final_norm = make_norm("layer", D, rngs, config.compute_dtype)
        self.head = _head(D, config.vocab_size, config.compute_dtype, rngs)

    # --- pieces ---------------------------------------------------------------------------------

    def _check_tokens(self, tokens, name: str = "tokens", rank: int = 2) -> Array:
        """Rank, integer dtype, ``L >= 1`` and, for concrete (eager) ids, the range ``[0, vocab_size)``;
        ids traced under ``jit`` are not checked here (see :meth:`embed`)."""
        tokens = jnp.asarray(tokens)
        if tokens.ndim != rank:
            want = "[B, L]" if rank == 2 else "[B]"
            raise ValueError(f"{name}: expected integer token ids {want}, got shape {tuple(tokens.shape)}")
        if not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise TypeError(f"{name}: expected an integer dtype, got {tokens.dtype}")
        if rank == 2 and tokens.shape[1] == 0:
            raise ValueError(f"{name}: expected at least one token per sequence (L >= 1), got shape "
                             f"{tuple(tokens.shape)}")
        try:  # concrete ids are checked; traced ones (under jit, eval_shape, ...) are not
            host = np.asarray(tokens)
        except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError, TypeError):
            host = None
        if host is not None:
            V = self.config.vocab_size
            bad = host[(host < 0) | (host >= V)]
            if bad.size:
                ids = sorted({int(i) for i in bad})
                shown = ", ".join(map(str, ids[:8])) + (f", ... ({len(ids)} distinct)" if len(ids) > 8 else "")
                raise ValueError(f"{name}: token ids must lie in [0, vocab_size={V}), got {shown}")
        return tokens

    def embed(self, tokens: Array, start: Array | int = 0) -> Array:
        """``tokens[B, L]`` at positions ``start..start+L-1`` -> the block input ``[T, B, L, D]``.

        An id outside ``[0, vocab_size)`` embeds as NaN (negative ids included, which indexing would
        otherwise wrap to the end of the table): eager calls of the model refuse such ids with a
        ``ValueError`` first, and under ``jit`` (ids not concrete) the logits of that position, and of
        every later position it reaches through attention, come out NaN, never a silent wrong answer.
        """
        valid = (tokens >= 0) & (tokens < self.config.vocab_size)
        e = jnp.where(valid[..., None], self.token_embed(jnp.where(valid, tokens, 0)), jnp.nan)
        if self.pos_embed is not None:
            e = e + self.pos_embed(start + jnp.arange(tokens.shape[1]))[None]
        x = encoding.direct(e.astype(self.config.compute_dtype), self.config.time_steps)
        return x if self.embed_neuron is None else self.embed_neuron(x)

    def readout(self, x: Array) -> Array:
        """``[T, B, L, D] -> logits[B, L, vocab]`` (float32): ``mean_t head(final_norm(x_t))``."""
        return self.head(self.final_norm(x)).astype(jnp.float32).mean(axis=0)

    # --- forward and decoding ---------------------------------------------------------------------

    def __call__(self, tokens: Array, *, return_state: bool = False, dropout_key: Array | None = None):
        """``tokens[B, L]`` (int, ``L >= 1``) -> ``logits[B, L, vocab]`` (float32); with ``return_state``
        also the :class:`SpikingLMState` after the sequence (to continue with :meth:`decode_step`). A
        ``dropout_key`` turns on ``config.dropout`` (training); without one the model is deterministic.

        Token ids must lie in ``[0, vocab_size)``: an eager call raises a ``ValueError`` naming the
        ids outside; under ``jax.jit`` they give NaN logits (see :meth:`embed`)."""
        tokens = self._check_tokens(tokens)
        L = tokens.shape[1]
        if self.pos_embedding_enabled and L > self.config.max_len:
            raise ValueError(f"tokens: sequence length {L} exceeds max_len={self.config.max_len}")
        keys = [None] * (len(self.blocks) + 1)
        if dropout_key is not None and self.config.dropout > 0:
            keys = list(jax.random.split(dropout_key, len(self.blocks) + 1))
        x = time_shared_dropout(self.embed(tokens), self.config.dropout, keys[0])
        states = []
        modes = remat_modes(self.config.remat, len(self.blocks))
        for block, key, mode in zip(self.blocks, keys[1:], modes, strict=True):
            if return_state:
                x, st = block(x, return_state=True, dropout_key=key)
                states.append(st)
            else:
                x = remat_call(mode, block, x, dropout_key=key)
        logits = self.readout(x)
        if return_state:
            return logits, SpikingLMState(jnp.asarray(L, jnp.int32), tuple(states))
        return logits

    @property
    def pos_embedding_enabled(self) -> bool:
        return self.pos_embed is not None

    def init_state(self, batch_size: int) -> SpikingLMState:
        """Empty decoding state for ``batch_size`` sequences (position 0)."""
        T = self.config.time_steps
        return SpikingLMState(jnp.zeros((), jnp.int32), tuple(b.init_state(batch_size, T) for b in self.blocks))

    def decode_step(self, token: Array, state: SpikingLMState) -> tuple[Array, SpikingLMState]:
        """Feed one token per sequence, ``token[B]`` (int), at position ``state.pos``.

        Returns ``(logits[B, vocab], new_state)``, equal to the full forward's logits at that position.
        """
        token = self._check_tokens(token, "token", rank=1)
        x = self.embed(token[:, None], state.pos)
        new = []
        for block, st in zip(self.blocks, state.layers, strict=True):
            x, st = block.decode_step(x, st)
            new.append(st)
        return self.readout(x)[:, 0], SpikingLMState(state.pos + 1, tuple(new))

    def generate(self, prompt: Array, max_new_tokens: int, *, key: Array, temperature: float = 1.0,
                 top_k: int | None = None) -> Array:
        """Sample ``max_new_tokens`` continuations of ``prompt[B, P]`` -> ``tokens[B, P + N]``.

        The prompt is run once (prefill), then one :meth:`decode_step` per new token, all in one
        ``jax.jit``. ``temperature == 0`` is greedy; ``top_k`` keeps the k most likely tokens.
        Call ``model.eval()`` first if the model has BatchNorm (``norm="bn"``).
        """
        prompt = self._check_tokens(prompt, "prompt")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens: expected an integer >= 0, got {max_new_tokens!r}")
        if not math.isfinite(temperature) or temperature < 0:
            raise ValueError(f"temperature: expected a finite value >= 0, got {temperature}")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                                  or not 1 <= top_k <= self.config.vocab_size):
            raise ValueError(f"top_k: expected an integer in [1, vocab_size={self.config.vocab_size}], got {top_k!r}")
        total = prompt.shape[1] + max_new_tokens
        if self.pos_embedding_enabled and total > self.config.max_len:
            raise ValueError(
                f"max_new_tokens: prompt length {prompt.shape[1]} + {max_new_tokens} exceeds max_len="
                f"{self.config.max_len}"
            )
        if max_new_tokens == 0:
            return prompt
        graphdef, params = nnx.split(self)
        return _generate(graphdef, params, prompt, key, max_new_tokens=max_new_tokens,
                         temperature=float(temperature), top_k=top_k)


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "temperature", "top_k"))
def _generate(graphdef, params, prompt, key, *, max_new_tokens: int, temperature: float, top_k: int | None):
    model = nnx.merge(graphdef, params)

    def sample(k, logits):
        if temperature == 0:
            return jnp.argmax(logits, axis=-1).astype(prompt.dtype)
        logits = logits / temperature
        if top_k is not None:
            kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
            logits = jnp.where(logits < kth, -jnp.inf, logits)
        return jax.random.categorical(k, logits, axis=-1).astype(prompt.dtype)

    logits, state = model(prompt, return_state=True)
    keys = jax.random.split(key, max_new_tokens)
    first = sample(keys[0], logits[:, -1])

    def body(carry, k):
        tok, state = carry
        logits, state = model.decode_step(tok, state)
        nxt = sample(k, logits)
        return (nxt, state), nxt

    _, rest = jax.lax.scan(body, (first, state), keys[1:])
    return jnp.concatenate([prompt, first[:, None], rest.T], axis=1)


class SpikingPatchEmbed(nnx.Module):
    """Spiking patch embedding (a small SPS): ``x[T, B, H, W, C] -> tokens[T, B, N, D]``.

    ``conv`` (3×3, C→D, same) → ``conv_norm`` → ``neuron`` → ``proj`` (p×p conv, stride p, D→D)
    → ``proj_norm``; N = (H/p)(W/p). Norms are BatchNorm (``norm="batch"``) or LayerNorm.
    The output is real-valued (a membrane input for the first block), in ``dtype`` (the compute
    dtype of the convolutions and norms; None: the inputs'; parameters are float32).
    """

    def __init__(self, in_channels: int, d_model: int, patch_size: int, *, norm: str = "batch",
                 neuron: str = "lif", neuron_kwargs: dict[str, Any] | None = None, backend: str = "xla",
                 dtype: Any = None, rngs: nnx.Rngs):
        if norm not in ("batch", "layer"):
            raise ValueError(f"norm: expected 'batch' or 'layer', got {norm!r}")
        self.in_channels = in_channels
        self.patch_size = patch_size
        norm_ = lambda n: make_norm(norm, n, rngs, dtype)
        conv = functools.partial(nnx.Conv, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
        self.conv = conv(in_channels, d_model, (3, 3), padding="SAME")
        self.conv_norm = norm_(d_model)
        self.neuron = make_neuron(neuron, num_channels=d_model, backend=backend, **(neuron_kwargs or {}))
        self.proj = conv(d_model, d_model, (patch_size, patch_size), strides=(patch_size, patch_size),
                         padding="VALID")
        self.proj_norm = norm_(d_model)

    def __call__(self, x: Array) -> Array:
        if x.ndim != 5 or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"x: expected [T, B, H, W, C] with C=in_channels={self.in_channels}, got shape {tuple(x.shape)}"
            )
        T, B, H, W, C = x.shape
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(f"x: image size {H}x{W} is not divisible by patch_size={p}")
        h = self.conv_norm(self.conv(x.reshape(T * B, H, W, C)))
        h = self.neuron(h.reshape(T, B, H, W, -1)).reshape(T * B, H, W, -1)
        h = self.proj_norm(self.proj(h))
        return h.reshape(T, B, (H // p) * (W // p), -1)


@builds(SpikformerConfig)
class Spikformer(nnx.Module):
    """Spikformer-style image classifier.

    ``images[B, H, W, C]`` (NHWC; direct-encoded over T) or pre-encoded spikes ``[T, B, H, W, C]``
    → :class:`SpikingPatchEmbed` ``[T, B, N, D]`` + ``pos_embed[N, D]`` (→ ``embed_neuron`` with the
    spike shortcut) → ``num_layers`` non-causal blocks → mean over tokens → ``final_norm``
    (``norm="pre"`` only) → ``head`` → mean over T → ``logits[B, num_classes]`` (float32; the
    blocks compute in ``config.dtype``, see :class:`~spikejax.nn.SpikformerConfig`).

    Args:
      config: a :class:`~spikejax.nn.SpikformerConfig`.
      rngs: ``nnx.Rngs``.
    """

    def __init__(self, config: SpikformerConfig, *, rngs: nnx.Rngs):
        if not isinstance(config, SpikformerConfig):
            raise TypeError(f"config: expected a SpikformerConfig, got {type(config)!r}")
        self.config = config
        D = config.d_model
        self.patch_embed = SpikingPatchEmbed(
            config.in_channels, D, config.patch_size, norm="batch" if config.norm == "bn" else "layer",
            neuron=config.neuron, neuron_kwargs=config.neuron_kwargs, backend=config.backend,
            dtype=config.compute_dtype, rngs=rngs)
        self.pos_embed = nnx.Param(0.02 * jax.random.normal(rngs.params(), (config.num_patches, D)))
        self.embed_neuron = (
            make_neuron(config.neuron, num_channels=D, backend=config.backend, **config.neuron_kwargs)
            if config.shortcut == "spike" else None
        )
        self.blocks = _blocks(config, causal=False, rngs=rngs)
        self.final_norm = make_norm("layer", D, rngs, config.compute_dtype) if config.norm == "pre" else None
        self.head = _head(D, config.num_classes, config.compute_dtype, rngs)

    def __call__(self, images: Array) -> Array:
        """``images[B, H, W, C]`` or spikes ``[T, B, H, W, C]`` -> ``logits[B, num_classes]``."""
        cfg = self.config
        size, C = cfg.image_size, cfg.in_channels
        if images.ndim == 4:
            x = encoding.direct(images, cfg.time_steps)
        elif images.ndim == 5:
            x = images
        else:
            raise ValueError(f"images: expected [B, H, W, C] or [T, B, H, W, C], got shape {tuple(images.shape)}")
        if tuple(x.shape[2:]) != (size, size, C):
            raise ValueError(
                f"images: expected H=W=image_size={size} and C=in_channels={C}, got shape {tuple(images.shape)}"
            )
        dt = cfg.compute_dtype
        # the float32 add keeps the position embedding's gradient (a sum over T·B) in float32
        x = (self.patch_embed(x.astype(dt)).astype(jnp.float32) + self.pos_embed[...]).astype(dt)
        if self.embed_neuron is not None:
            x = self.embed_neuron(x)
        for block, mode in zip(self.blocks, remat_modes(cfg.remat, len(self.blocks)), strict=True):
            x = remat_call(mode, block, x)
        h = x.mean(axis=2)
        if self.final_norm is not None:
            h = self.final_norm(h)
        return self.head(h).astype(jnp.float32).mean(axis=0)
