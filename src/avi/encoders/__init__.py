"""Inference networks x -> lambda: amortization lives here."""

from avi.encoders.amortized import AmortizedPosterior, DenoisingEncoder, mlp_encoder, weight_normalize

__all__ = ["AmortizedPosterior", "DenoisingEncoder", "mlp_encoder", "weight_normalize"]
