"""The calculator's tools: `calculate` (safe arithmetic) and `convert_units`.

Names and descriptions are written for both kinds of model: a real LLM reads them to
decide, and the built-in offline model picks the tool whose name and description share the
most words with the question (so arithmetic words, 计算 and 等于 point at `calculate`;
unit words and 换算 at `convert_units`).
"""

from __future__ import annotations

import math

from myagent.tool.base_tool import BaseTool, ToolResult

from .arithmetic import CalculationError, calculate, format_number
from .units import UNIT_NAMES, UNITS, ConversionError, convert


class CalculateTool(BaseTool):
    """Evaluate one arithmetic expression; errors are results the model can explain."""

    name = "calculate"
    description = (
        "Calculate (compute, evaluate) an arithmetic expression and return its exact result: "
        "numbers with + - * / // % ** and parentheses, e.g. 12 * (3 + 4) or 2**10. Use it for "
        "any math: sum, product, division, remainder, power; how much is 12 times 7? "
        "计算数学算式的结果（加减乘除、乘方、括号），例如 (2+3)*4 等于多少。"
    )
    parameters = {
        "type": "object",
        "properties": {
            "expression": {
                "type": "string",
                "description": "The arithmetic expression, e.g. 12 * (3 + 4) / 算式",
            }
        },
        "required": ["expression"],
        "additionalProperties": False,
    }

    async def execute(self, expression: str) -> ToolResult:
        try:
            found, value = calculate(expression)
        except CalculationError as exc:
            return ToolResult(error=str(exc))
        return ToolResult(output=f"{found} = {format_number(value)}")


class ConvertUnitsTool(BaseTool):
    """Convert a value between two units of the same quantity."""

    name = "convert_units"
    description = (
        "Convert a value from one unit to another of the same quantity: length, mass or "
        f"temperature. Units: {UNIT_NAMES}. How many miles is 5 km? "
        "单位换算：长度（米、公里、英里、英尺、英寸）、重量（公斤、克、磅、盎司）、温度（摄氏、华氏）。"
    )
    parameters = {
        "type": "object",
        "properties": {
            "value": {"type": "number", "description": "The amount to convert, e.g. 5"},
            "from_unit": {"type": "string", "enum": UNITS, "description": "The unit of value"},
            "to_unit": {"type": "string", "enum": UNITS, "description": "The unit wanted"},
        },
        "required": ["value", "from_unit", "to_unit"],
        "additionalProperties": False,
    }

    async def execute(self, value: float, from_unit: str, to_unit: str) -> ToolResult:
        try:
            result = convert(value, from_unit, to_unit)
        except ConversionError as exc:
            return ToolResult(error=str(exc))
        if not math.isfinite(result):
            return ToolResult(error=f"{value} {from_unit} is too large to convert.")
        shown = format_number(result, digits=10)
        return ToolResult(output=f"{format_number(value)} {from_unit} = {shown} {to_unit}")


__all__ = ["CalculateTool", "ConvertUnitsTool"]
