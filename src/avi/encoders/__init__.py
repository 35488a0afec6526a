"""Inference networks x -> lambda: amortization lives here."""

from avi.encoders.amortized import AmortizedPosterior, mlp_encoder

__all__ = ["AmortizedPosterior", "mlp_encoder"]
