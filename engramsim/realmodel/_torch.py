"""The one place the real model imports torch, so a missing install is one clear line."""

from engramsim.errors import UserError

try:
    import torch  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    raise UserError("the real model needs torch: pip install 'engramsim[measure]'") from None

# RealModelConfig.dtype -> torch dtype
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
