"""A fixed or learnable temperature, shared by the objectives that divide similarities by one."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class TemperatureMixin:
    r"""Adds ``log_temperature`` (a parameter :math:`\log \tau`, or :obj:`None` when fixed) to an ``nn.Module``.

    Call :meth:`_init_temperature` in ``__init__`` after ``nn.Module.__init__``. Learning :math:`\log \tau` keeps
    :math:`\tau > 0` without a constraint (CLIP learns its logit scale the same way).
    """

    log_temperature: nn.Parameter | None
    _temperature: float

    def _init_temperature(self, temperature: float, learnable: bool) -> None:
        self._temperature = float(temperature)
        log_tau = nn.Parameter(torch.tensor(math.log(temperature))) if learnable else None
        self.register_parameter("log_temperature", log_tau)  # type: ignore[attr-defined]

    @property
    def temperature(self) -> float:
        """The current temperature :math:`\\tau` (a float, for logging)."""
        if self.log_temperature is None:
            return self._temperature
        return float(self.log_temperature.detach().exp())

    def scale(self, x: Tensor) -> Tensor:
        """``x / tau``, differentiable in :math:`\\tau` when it is learnable."""
        if self.log_temperature is None:
            return x / self._temperature
        return x * torch.exp(-self.log_temperature)
