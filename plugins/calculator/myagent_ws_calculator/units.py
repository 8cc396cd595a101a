"""Unit conversion for length, mass and temperature.

Length and mass are linear (a factor to the base unit); temperature is affine, so it goes
through kelvin. Each unit belongs to exactly one quantity, which is how incompatible pairs
(km to kg) are caught.
"""

from __future__ import annotations

from collections.abc import Callable

# unit -> metres / kilograms
LENGTH = {
    "m": 1.0,
    "km": 1000.0,
    "cm": 0.01,
    "mm": 0.001,
    "mi": 1609.344,
    "ft": 0.3048,
    "in": 0.0254,
}
MASS = {"kg": 1.0, "g": 0.001, "lb": 0.45359237, "oz": 0.028349523125}
# unit -> (to kelvin, from kelvin)
TEMPERATURE: dict[str, tuple[Callable[[float], float], Callable[[float], float]]] = {
    "C": (lambda c: c + 273.15, lambda k: k - 273.15),
    "F": (lambda f: (f - 32) * 5 / 9 + 273.15, lambda k: (k - 273.15) * 9 / 5 + 32),
    "K": (lambda k: k, lambda k: k),
}
QUANTITY = {
    **dict.fromkeys(LENGTH, "length"),
    **dict.fromkeys(MASS, "mass"),
    **dict.fromkeys(TEMPERATURE, "temperature"),
}
UNITS = list(QUANTITY)
UNIT_NAMES = (
    "m (metres), km (kilometres), cm, mm, mi (miles), ft (feet), in (inches); "
    "kg (kilograms), g (grams), lb (pounds), oz (ounces); C, F, K (Celsius, Fahrenheit, kelvin)"
)


class ConversionError(ValueError):
    """Why a conversion was refused, as a sentence for the user."""


def convert(value: float, from_unit: str, to_unit: str) -> float:
    """`value` in `from_unit`, expressed in `to_unit`. Raises ConversionError for unknown
    units, units of different quantities, and temperatures below absolute zero."""
    for unit in (from_unit, to_unit):
        if unit not in QUANTITY:
            raise ConversionError(f"Unknown unit {unit!r}. Known units: {UNIT_NAMES}.")
    quantity = QUANTITY[from_unit]
    if QUANTITY[to_unit] != quantity:
        raise ConversionError(
            f"Cannot convert {from_unit} ({quantity}) to {to_unit} ({QUANTITY[to_unit]}): "
            "both units must measure the same thing."
        )
    if quantity == "temperature":
        kelvin = TEMPERATURE[from_unit][0](value)
        if kelvin < 0:
            raise ConversionError(f"{value} {from_unit} is below absolute zero (0 K).")
        return TEMPERATURE[to_unit][1](kelvin)
    factors = LENGTH if quantity == "length" else MASS
    return value * factors[from_unit] / factors[to_unit]
