"""int8 precision: dynamic quantisation of a model's encoder for CPU inference."""

from __future__ import annotations

import functools
import warnings
from typing import Any


def quantize_int8(model: Any) -> Any:
    """Dynamic int8 quantisation of the encoder's linear layers: weights int8 with a scale per output
    channel, activations quantised per call. About a quarter of the weight memory and faster matrix
    multiplies, at a small cost in accuracy (see the README's Performance section). The task head stays in
    fp32: it costs next to nothing and decides the labels. On CPUs with int8 dot-product instructions (VNNI)
    activations keep their full 8-bit range, which roughly halves the error of the 7-bit range that older
    CPUs need to avoid overflow."""
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    encoder = "" if model.base_model is model else model.base_model_prefix + "."
    layers = {
        name: per_channel_dynamic_qconfig
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.startswith(encoder)
    }
    int8_linear = _full_range_int8_linear() if _cpu_has_vnni() else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch points at torchao; the eager API is what runs here
        if int8_linear is None:
            return quantize_dynamic(model, layers, dtype=torch.qint8)
        return quantize_dynamic(model, layers, dtype=torch.qint8, mapping={torch.nn.Linear: int8_linear})


def _cpu_has_vnni() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


@functools.cache
def _full_range_int8_linear() -> type:
    import torch
    from torch.ao.nn.quantized.dynamic import Linear

    class FullRangeInt8Linear(Linear):
        """torch's dynamic int8 linear layer without its fixed 7-bit activation range."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            packed = self._packed_params._packed_params
            return torch.ops.quantized.linear_dynamic(x, packed, reduce_range=False).to(x.dtype)

    return FullRangeInt8Linear
