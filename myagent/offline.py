"""Models that need no network: OfflineModel and FunctionModel.

OfflineModel lets every agent file run out of the box (demos, CI, the console) with no API
key: it picks a tool by word overlap, fills its arguments from the user's words, and
answers from the tool results. FunctionModel makes a plain function the model, so people
can test their own agents deterministically.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import json
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from .errors import hide_tool_failure
from .llm import Model, ModelReply, ToolCallRequest, new_call_id

CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_CHAR = re.compile(f"[{CJK}]")
_LATIN_WORD = re.compile(r"[a-z]+")
# Too common to say anything about which tool fits.
_COMMON_CJK = set("的是了吗呢吧啊呀么我你他她它们这那个在有和就也都很请一不")
_COMMON_LATIN = {
    "the", "and", "for", "what", "whats", "with", "this", "that", "you", "your", "are", "was",
    "how", "can", "could", "would", "please", "get", "tell", "give", "show", "does", "from",
    "any", "some", "there", "here", "its", "into", "like",
}  # fmt: skip
# Leading words that ask rather than name something: "告诉我上海…" -> "上海…".
_CJK_FILLERS = sorted(
    "告诉我 请告诉我 请问 请 查一下 查查 查询 帮我查一下 帮我查查 帮我查 帮我看看 帮我 "
    "我想知道 我想问 麻烦 你知道 能不能 可以 一下 看看 那".split(),
    key=len,
    reverse=True,
)
# Words that end the thing being asked about: "北京今天天气怎么样" -> "北京".
_CJK_STOPS = sorted(
    "今天 明天 昨天 后天 现在 目前 当前 最近 天气 气温 温度 怎么样 怎样 如何 多少 什么 "
    "基本信息 信息 情况 介绍 简介 的 吗 呢 吧 啊 呀 是 有 在 和 与".split(),
    key=len,
    reverse=True,
)
_CJK_CUT = re.compile("|".join(map(re.escape, _CJK_STOPS)) + r"|[\s\W]")
_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_OPERATOR = re.compile(r"[+*/×÷^]")
_ARITHMETIC = re.compile(r"[\d)]\s*(?:\*\*|[-+*/%^×÷])\s*[-\d(]")
_TOKEN = re.compile(rf"[^\W{CJK}]+\s*|.\s*", re.S)
_PUNCT = " \t\r\n.,!?;:。，！？；：、…\"'“”‘’（）()"


def is_chinese(text: str) -> bool:
    """Whether to answer in Chinese: any CJK character counts."""
    return bool(_CJK_CHAR.search(text))


@functools.lru_cache(maxsize=1024)  # tool descriptions recur on every step of every turn
def keywords(text: str) -> frozenset[str]:
    """Lower-cased latin words (3+ letters) and single CJK characters, minus common ones."""
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", text).replace("_", " ").lower()
    words = {w for w in _LATIN_WORD.findall(text) if len(w) >= 3 and w not in _COMMON_LATIN}
    words |= set(_OPERATOR.findall(text))  # "12 * 7" matches a tool that mentions `*`
    return frozenset(words | {c for c in _CJK_CHAR.findall(text) if c not in _COMMON_CJK})


def pick_tool(text: str, tools: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The tool whose name and description share the most keywords with `text`; ties go to
    the first tool; None when nothing overlaps."""
    wanted = keywords(text)
    best, best_score = None, 0
    for tool in tools:
        function = tool.get("function", tool)
        score = len(
            wanted & keywords(f"{function.get('name', '')} {function.get('description', '')}")
        )
        if score > best_score:
            best, best_score = function, score
    return best


def derive_arguments(parameters: dict[str, Any], text: str) -> dict[str, Any]:
    """Arguments for a tool from its JSON Schema and the user's text: required parameters
    always, optional ones only when they have a default."""
    properties = parameters.get("properties") or {}
    required = list(parameters.get("required") or [])
    args: dict[str, Any] = {}
    for name, schema in properties.items():
        if name in required:
            # Parameters sharing choices (from_unit/to_unit) take different mentions.
            taken = {v for v in args.values() if isinstance(v, str)}
            args[name] = value_for(schema if isinstance(schema, dict) else {}, text, taken)
        elif isinstance(schema, dict) and "default" in schema:
            args[name] = schema["default"]
    for name in required:
        args.setdefault(name, trimmed(text))
    return args


def value_for(schema: dict[str, Any], text: str, taken: set[str] = frozenset()) -> Any:
    """One parameter's value from the text, by its declared type; string choices already
    `taken` by another parameter are passed over."""
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    enum = schema.get("enum")
    if kind in ("integer", "number"):
        match = _NUMBER.search(text)
        if match:
            number = float(match.group())
            return int(number) if kind == "integer" or number.is_integer() else number
        return schema.get("default", enum[0] if enum else 1)
    if kind == "boolean":
        return schema.get("default", False)
    if kind in ("array", "object"):
        return schema.get("default", [] if kind == "array" else {})
    choices = [c for c in (enum or []) + (schema.get("examples") or []) if isinstance(c, str)]
    mentioned = mention(choices, text, taken)
    if mentioned is not None:
        return mentioned
    if enum:
        return schema.get("default", enum[0])
    if _ARITHMETIC.search(text):  # an expression: keep all of it, closing bracket included
        return text.strip().rstrip("?？!！。.,，:：")
    return proper_noun(text) or cjk_subject(text) or trimmed(text)


def mention(choices: list[str], text: str, taken: set[str] = frozenset()) -> str | None:
    """The longest choice the text mentions, the earliest among equals (latin ones as whole
    words, any case), skipping those in `taken`."""
    found = []
    lowered = text.lower()
    for choice in choices:
        if not choice or choice in taken:
            continue
        if is_chinese(choice):
            at = text.find(choice)
        else:
            hit = re.search(rf"(?<![A-Za-z]){re.escape(choice.lower())}(?![A-Za-z])", lowered)
            at = hit.start() if hit else -1
        if at >= 0:
            found.append((-len(choice), at, choice))
    return min(found)[2] if found else None


def proper_noun(text: str) -> str | None:
    """The first run of Capitalized words that is not just a sentence's first word:
    "weather in New York today" -> "New York"."""
    runs: list[tuple[list[str], bool]] = []  # (words, starts a sentence)
    current: list[str] | None = None
    previous_end = 0
    for match in _WORD.finditer(text):
        word = match.group().removesuffix("'s").removesuffix("’s")
        if word[0].isupper() and word != "I":
            if current is not None and not text[previous_end : match.start()].strip():
                current.append(word)
            else:
                before = text[: match.start()].rstrip()
                current = [word]
                runs.append((current, not before or before[-1] in ".!?。！？"))
        else:
            current = None
        previous_end = match.end()
    for words, starts_sentence in runs:
        if not (starts_sentence and len(words) == 1):
            return " ".join(words)
    return None


def cjk_subject(text: str) -> str | None:
    """What a Chinese question is about: "告诉我上海的基本信息" -> "上海"."""
    if not is_chinese(text):
        return None
    rest = text.strip(_PUNCT)
    stripped = True
    while stripped:
        stripped = False
        for filler in _CJK_FILLERS:
            if rest.startswith(filler) and len(rest) > len(filler):
                rest = rest[len(filler) :].lstrip(_PUNCT)
                stripped = True
    for segment in _CJK_CUT.split(rest):
        if segment and segment.strip(_PUNCT):
            return segment.strip(_PUNCT)
    return None


def trimmed(text: str) -> str:
    return text.strip().strip(_PUNCT) or text.strip()


def chunks(text: str) -> list[str]:
    """Split text on word/character boundaries into pieces to stream: at least 3 for any
    text longer than 12 characters; the pieces join back to exactly `text`."""
    tokens = _TOKEN.findall(text)
    if not tokens:
        return []
    if len(text) > 12 and len(tokens) < 3:
        tokens = list(text)
    count = min(len(tokens), max(3 if len(text) > 12 else 1, math.ceil(len(tokens) / 4)))
    n = len(tokens)
    return ["".join(tokens[n * i // count : n * (i + 1) // count]) for i in range(count)]


class OfflineModel(Model):
    """Deterministic and built in: no network, no key. Good enough to demo tool use."""

    model_id = "offline"
    provider = "offline"
    offline = True

    async def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> AsyncIterator[str | ModelReply]:
        reply = self.reply(messages, tools)
        for piece in chunks(reply.text):
            yield piece
            # Like a real stream, each chunk is its own write: let the loop flush it.
            await asyncio.sleep(0)
        yield reply

    def reply(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> ModelReply:
        """The whole reply, decided from the last message."""
        last = messages[-1] if messages else {}
        user = last_user_text(messages)
        if last.get("role") == "tool":
            return ModelReply(text=answer_from_tools(messages, user))
        if last.get("role") == "user" and tools:
            tool = pick_tool(user, tools)
            if tool is not None:
                args = derive_arguments(tool.get("parameters") or {}, user)
                arguments = json.dumps(args, ensure_ascii=False)
                return ModelReply(
                    tool_calls=[ToolCallRequest(new_call_id(), tool["name"], arguments)]
                )
        return ModelReply(text=plain_answer(user, tools))


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    return ""


def answer_from_tools(messages: list[dict[str, Any]], user: str) -> str:
    """A short answer made of the latest tool outputs, framed in the user's language."""
    outputs: list[str] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        # A tool's exception text is for the model, not for the user it would be shown to.
        outputs.append(hide_tool_failure(str(message.get("content") or "").strip()))
    outputs.reverse()
    if is_chinese(user):
        if len(outputs) == 1:
            return f"查询结果：{outputs[0]}"
        return "查询结果：\n" + "\n".join(f"- {o}" for o in outputs)
    if len(outputs) == 1:
        return f"Here is what I found: {outputs[0]}"
    return "Here is what I found:\n" + "\n".join(f"- {o}" for o in outputs)


def plain_answer(user: str, tools: list[dict[str, Any]]) -> str:
    """The answer when no tool fits: say what the offline model can do."""
    names = ", ".join(t.get("function", t).get("name", "?") for t in tools)
    if is_chinese(user):
        text = f"（内置离线模型，未配置 LLM）你说的是：“{trimmed(user)}”。"
        return text + (f"我可以使用这些工具：{names}。" if names else "")
    text = f'(Built-in offline model, no LLM configured.) You said: "{trimmed(user)}".'
    if names:
        text += f" My tools: {names}."
    return text + " Set OPENAI_API_KEY or OPENAI_BASE_URL to use a real model."


# fn(messages, tools) -> the answer text or a ModelReply, directly or awaitable.
ModelFunction = Callable[
    [list[dict[str, Any]], list[dict[str, Any]]], str | ModelReply | Awaitable[str | ModelReply]
]


class FunctionModel(Model):
    """A function is the model: `fn(messages, tools)` (sync or async) returns the final
    answer as a str, or a ModelReply (e.g. with tool calls). For testing agents offline."""

    provider = "function"
    offline = True

    def __init__(self, fn: ModelFunction, model_id: str | None = None) -> None:
        self.fn = fn
        self.model_id = model_id or getattr(fn, "__name__", None) or type(fn).__name__

    async def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> AsyncIterator[str | ModelReply]:
        # Copies: the function may inspect or edit what it gets without touching memory.
        result = self.fn(copy.deepcopy(messages), copy.deepcopy(tools))
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, str):
            result = ModelReply(text=result)
        if not isinstance(result, ModelReply):
            raise TypeError(
                f"FunctionModel {self.model_id!r} returned {type(result).__name__}; "
                "return a str (the answer) or a ModelReply."
            )
        if result.text:
            yield result.text
        yield result


__all__ = ["FunctionModel", "OfflineModel", "chunks", "derive_arguments", "pick_tool"]
