"""How far `gateway.tokens.count` counts are from the truth, and what counting costs.

    python -m bench.token_accuracy [--requests N] [--seed S] [--llama-models DIR]

Generates chat-completions requests from a deterministic corpus (English prose from the
standard library's docstrings, Python source, short texts in nine other languages, JSON
tool arguments) and prints four comparisons:

1. Exactness, text-only requests: `count_prompt_tokens` against OpenAI's published
   counting recipe run on tiktoken's *own* encodings (``tiktoken.get_encoding``, fed
   from a private cache folder holding the shipped rank files, so no network). Any
   difference is a bug: a wrong encoding, file or framing. Also shown: the previous
   regex estimator this module replaced, against the same reference.
2. Requests with tools and images: only estimates exist (OpenAI does not publish how
   it renders tools); shown as the share of the count that the tools and images make,
   and the difference from a plain compact-JSON count of the tools.
3. The fake upstreams (bench/fakes): their reported prompt usage against our count for
   the model they stand for (gpt-4o, Claude, Gemini), on the same requests translated
   by the gateway's providers. The fakes estimate usage as characters / 4 plus framing
   (`_estimate_prompt_tokens`, `_estimate_input_tokens`, `_prompt_tokens`, which are
   what they report), so this shows how the fakes differ from real counts, not our error.
4. Estimated families: o200k_base x the family factor against real Llama 3 and Llama 4
   tokenizers per kind of text, when ``--llama-models`` names a folder with
   ``llama3/tokenizer.model`` and ``llama4/tokenizer.model`` (from the ``llama-models``
   package, installed or unpacked; found automatically when installed).

Then the cost: building the encodings, and counting a 2 KB prompt.
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import importlib
import importlib.util
import inspect
import lzma
import os
import random
import re
import statistics
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import tiktoken

from gateway.config import OPTIONS_BY_KIND, ProviderKind
from gateway.providers.base import CallContext, Deployment
from gateway.tokens import count as tokens
from gateway.tokens.tables import load_encoding

__all__ = ["main"]

# -- corpus ----------------------------------------------------------------------------

_PROSE_MODULES = (
    "argparse",
    "asyncio",
    "collections",
    "contextlib",
    "dataclasses",
    "decimal",
    "email",
    "fractions",
    "functools",
    "http.client",
    "json",
    "logging",
    "pathlib",
    "subprocess",
    "textwrap",
    "threading",
    "unittest",
    "urllib.request",
)
_CODE_MODULES = ("textwrap", "json.encoder", "shlex", "string", "fnmatch", "heapq")
# Short texts written for this benchmark, one per language (CJK and others tokenize
# very differently from English).
_OTHER_LANGUAGES = (
    "La passerelle compte les jetons avant d'envoyer la requête, puis corrige le compte "
    "avec l'usage que le fournisseur renvoie.",
    "Das Gateway zählt die Token, bevor es die Anfrage weiterleitet, und korrigiert die "
    "Reservierung danach anhand der gemeldeten Nutzung.",
    "La pasarela cuenta los tokens antes de enviar la solicitud y luego ajusta la reserva "
    "con el uso que informa el proveedor.",
    "Шлюз подсчитывает токены до отправки запроса, а затем исправляет резерв по данным "  # noqa: RUF001
    "об использовании от поставщика.",  # noqa: RUF001
    "网关在转发请求之前先计算令牌数量，然后根据上游报告的实际用量修正预留额度。",  # noqa: RUF001
    "ゲートウェイはリクエストを送る前にトークン数を数え、上流が報告した使用量で予約を修正します。",
    "게이트웨이는 요청을 보내기 전에 토큰 수를 세고, "
    "업스트림이 보고한 사용량으로 예약을 바로잡습니다.",
    "تحسب البوابة الرموز قبل إرسال الطلب، ثم تصحح الحجز وفقًا للاستخدام الذي يبلغ عنه المزود.",
    "गेटवे अनुरोध भेजने से पहले टोकन गिनता है और फिर प्रदाता द्वारा बताए गए उपयोग से आरक्षण ठीक करता है।",
)


@dataclass(frozen=True, slots=True)
class Corpus:
    """Texts by kind: English prose, Python code, other languages."""

    prose: tuple[str, ...]
    code: tuple[str, ...]
    languages: tuple[str, ...]

    def kinds(self) -> dict[str, tuple[str, ...]]:
        return {"english": self.prose, "code": self.code, "languages": self.languages}


def build_corpus() -> Corpus:
    """The benchmark's texts, from this Python's standard library (same on every run)."""
    prose: list[str] = []
    for name in _PROSE_MODULES:
        module = importlib.import_module(name)
        for obj in [module, *vars(module).values()]:
            doc = inspect.getdoc(obj) if callable(obj) or obj is module else None
            if doc:
                prose.extend(p.strip() for p in doc.split("\n\n") if len(p.strip()) > 80)
    code: list[str] = []
    for name in _CODE_MODULES:
        source = inspect.getsource(importlib.import_module(name))
        code.extend(block for block in re.split(r"\n(?=def |class )", source) if len(block) > 80)
    return Corpus(tuple(dict.fromkeys(prose)), tuple(code), _OTHER_LANGUAGES)


# -- requests --------------------------------------------------------------------------


def _png(width: int, height: int) -> str:
    """A data URL whose PNG header says `width` x `height` (the pixels are not valid)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    raw = (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
    )
    return "data:image/png;base64," + base64.b64encode(raw).decode()


_WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
_SEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": "search_documents",
        "description": "Search the document store and return the best matches.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "What to look for"},
                "limit": {"type": "integer", "description": "At most this many results"},
                "filters": {
                    "type": "object",
                    "properties": {
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "after": {"type": "string", "description": "ISO date"},
                    },
                },
            },
            "required": ["query"],
        },
    },
}


@dataclass(slots=True)
class Generator:
    """Random chat requests drawn from `corpus`, reproducible from `seed`."""

    corpus: Corpus
    seed: int
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def text(self) -> str:
        kind = self.rng.choices(("prose", "code", "languages"), weights=(6, 3, 1))[0]
        pool: Sequence[str] = getattr(self.corpus, kind)
        return "\n\n".join(self.rng.sample(pool, self.rng.randint(1, 3)))

    def text_request(self) -> dict[str, Any]:
        """Text-only messages: what OpenAI's recipe covers exactly."""
        messages: list[dict[str, Any]] = []
        if self.rng.random() < 0.6:
            messages.append({"role": "system", "content": self.text()[:600]})
        for turn in range(self.rng.randint(1, 4)):
            user: dict[str, Any] = {"role": "user", "content": self.text()}
            if self.rng.random() < 0.2:
                user["name"] = self.rng.choice(("alice", "bob_smith", "user-42"))
            messages.append(user)
            if turn or self.rng.random() < 0.5:
                messages.append({"role": "assistant", "content": self.text()[:800]})
        if messages[-1]["role"] == "assistant":
            messages.append({"role": "user", "content": self.text()})
        return {"model": "gpt-4o", "messages": messages}

    def rich_request(self) -> dict[str, Any]:
        """A text request plus tools, a tool round trip and images."""
        body = self.text_request()
        body["tools"] = self.rng.sample([_WEATHER_TOOL, _SEARCH_TOOL], self.rng.randint(1, 2))
        name = body["tools"][0]["function"]["name"]
        args = orjson.dumps({"city": "Paris"} if name == "get_weather" else {"query": "x"})
        function = {"name": name, "arguments": args.decode()}
        call = {"id": "call_1", "type": "function", "function": function}
        width, height = self.rng.choice(((512, 512), (1024, 768), (1920, 1080), (300, 200)))
        detail = self.rng.choice(("low", "high", "auto"))
        image = {"url": _png(width, height), "detail": detail}
        body["messages"] += [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": self.text()[:400]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": self.text()},
                    {"type": "image_url", "image_url": image},
                ],
            },
        ]
        return body


# -- the reference: OpenAI's recipe on tiktoken's own encodings --------------------------

_URLS = {
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
}


def official_encoding(name: str, cache: Path) -> tiktoken.Encoding:
    """``tiktoken.get_encoding(name)``, its download served from `cache` (no network).

    tiktoken looks for a download in TIKTOKEN_CACHE_DIR under the SHA-1 of its URL and
    checks the file's SHA-256 itself, so this is tiktoken's own loading path.
    """
    shipped = resources.files("gateway.tokens").joinpath("data", f"{name}.tiktoken.xz")
    key = hashlib.sha1(_URLS[name].encode()).hexdigest()
    (cache / key).write_bytes(lzma.decompress(shipped.read_bytes()))
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    return tiktoken.get_encoding(name)


def recipe_count(body: Mapping[str, Any], encoding: tiktoken.Encoding) -> int:
    """OpenAI cookbook's ``num_tokens_from_messages`` for string-content messages."""
    total = 3
    for message in body["messages"]:
        total += 3
        for key, value in message.items():
            total += len(encoding.encode(value))
            if key == "name":
                total += 1
    return total


_PREVIOUS_SPLIT = re.compile(
    "|".join(
        (
            r"(?i:'(?:s|t|re|ve|m|ll|d))(?![^\W\d_])",
            r" ?[^\W\d_\u0800-\U0010ffff]{1,10}",
            r" ?\d{1,3}",
            r" ?(?:[^\s\w\x80-\U0010ffff]|_){1,3}",
            r" ?[^\s\x00-\x7f]",
            r"\s*[\r\n]+",
            r"\s+(?!\S)",
            r"\s+",
        )
    )
)


def previous_count(body: Mapping[str, Any]) -> int:
    """The regex estimator this module replaced, with the same framing."""
    total = 3
    for message in body["messages"]:
        total += 3
        for key, value in message.items():
            total += _PREVIOUS_SPLIT.subn("", value)[1]
            if key == "name":
                total += 1
    return total


# -- comparisons ----------------------------------------------------------------------


@dataclass(slots=True)
class Errors:
    """Relative errors (count / reference - 1) of one comparison."""

    values: list[float] = field(default_factory=list)
    exact: int = 0

    def add(self, count: int, reference: int) -> None:
        self.values.append(count / reference - 1 if reference else 0.0)
        self.exact += count == reference

    def line(self, label: str) -> str:
        v = self.values
        mean_abs = statistics.fmean(abs(x) for x in v)
        return (
            f"  {label:<44} n={len(v):<4} exact={self.exact:<4} "
            f"mean={statistics.fmean(v):+7.1%} mean|err|={mean_abs:6.1%} "
            f"min={min(v):+7.1%} max={max(v):+7.1%}"
        )


def compare_exact(bodies: Sequence[dict[str, Any]], cache: Path) -> list[str]:
    out = ["1. text-only requests vs OpenAI's recipe on tiktoken's own encodings"]
    for model, name in (("gpt-4o", "o200k_base"), ("gpt-4", "cl100k_base")):
        official = official_encoding(name, cache)
        ours, previous = Errors(), Errors()
        for body in bodies:
            reference = recipe_count(body, official)
            ours.add(tokens.count_prompt_tokens(body, model), reference)
            previous.add(previous_count(body), reference)
        out.append(ours.line(f"count_prompt_tokens ({model}, {name})"))
        out.append(previous.line(f"previous regex estimate vs {name}"))
    return out


def compare_rich(bodies: Sequence[dict[str, Any]]) -> list[str]:
    out = ["2. requests with tools, a tool call and an image (gpt-4o): estimates only"]
    shares: list[float] = []
    json_diff: list[int] = []
    for body in bodies:
        total = tokens.count_prompt_tokens(body, "gpt-4o")
        bare = {"messages": body["messages"]}
        without_tools = tokens.count_prompt_tokens(bare, "gpt-4o")
        shares.append((total - without_tools) / total)
        tools_json = tokens.count_text_tokens(orjson.dumps(body["tools"]).decode())
        json_diff.append((total - without_tools) - tools_json)
    out.append(
        f"  tools' share of the count: mean {statistics.fmean(shares):.1%}; rendered as "
        f"TypeScript minus compact JSON: mean {statistics.fmean(json_diff):+.1f} tokens"
    )
    return out


def _ctx(kind: ProviderKind, model: str) -> CallContext:
    deployment = Deployment(
        model_id=model,
        provider_name=kind,
        kind=kind,
        upstream_model=model,
        api_key="k",
        options=OPTIONS_BY_KIND[kind](),
    )
    return CallContext(deployment, False, False, "chatcmpl-bench", 0)


def compare_fakes(
    text_bodies: Sequence[dict[str, Any]], rich_bodies: Sequence[dict[str, Any]]
) -> list[str]:
    """Our counts against the usage each fake upstream would report for the same request."""
    from bench.fakes.anthropic import _estimate_input_tokens
    from bench.fakes.gemini import _prompt_tokens
    from bench.fakes.openai import _estimate_prompt_tokens
    from gateway.providers.anthropic.request import translate_request
    from gateway.providers.gemini.request import build_payload

    fakes: list[tuple[str, str, Callable[[dict[str, Any]], int]]] = [
        ("openai", "gpt-4o", lambda b: _estimate_prompt_tokens(b["messages"])),
        (
            "anthropic",
            "claude-sonnet-4-5",
            lambda b: _estimate_input_tokens(translate_request(b, _ctx("anthropic", "claude"))),
        ),
        (
            "gemini",
            "gemini-2.5-flash",
            lambda b: _prompt_tokens(build_payload(b, _ctx("gemini", "gemini-2.5-flash")))[0],
        ),
    ]
    out = ["3. fake upstreams' reported prompt usage (chars/4 + framing) vs our count"]
    for label, bodies in (("text", text_bodies), ("rich", rich_bodies)):
        for kind, model, fake_usage in fakes:
            errors = Errors()
            for body in bodies:
                errors.add(fake_usage(body), tokens.count_prompt_tokens(body, model))
            out.append(errors.line(f"{label}: fake {kind} vs {model}"))
    return out


def _llama_encoding(path: Path, pattern: str) -> tiktoken.Encoding:
    ranks = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding(
        path.parent.name, pat_str=pattern, mergeable_ranks=ranks, special_tokens={}
    )


_LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def find_llama_models(given: Path | None) -> Path | None:
    if given is not None:
        return given
    spec = importlib.util.find_spec("llama_models")
    return Path(spec.origin).parent if spec and spec.origin else None


def compare_families(corpus: Corpus, llama: Path | None) -> list[str]:
    o200k = load_encoding("o200k_base")
    out = ["4. estimated families: o200k_base x factor vs real tokenizers, by text kind"]
    for kind, texts in corpus.kinds().items():
        chars = sum(len(t) for t in texts)
        count = sum(len(o200k.encode_ordinary(t)) for t in texts)
        out.append(f"  o200k_base on {kind:<10} {chars / count:5.2f} characters per token")
    if llama is None:
        out.append("  (no llama-models folder: pass --llama-models DIR to compare with Llama)")
        return out
    o200k_pattern = o200k._pat_str
    for name, pattern, model in (
        ("llama3", _LLAMA3_PATTERN, "llama-3.1-8b"),
        ("llama4", o200k_pattern, "llama-4-scout"),
    ):
        real = _llama_encoding(llama / name / "tokenizer.model", pattern)
        for kind, texts in corpus.kinds().items():
            truth = sum(len(real.encode_ordinary(t)) for t in texts)
            base = sum(len(o200k.encode_ordinary(t)) for t in texts)
            ours = sum(tokens.count_text_tokens(t, model) for t in texts)
            out.append(
                f"  {name} {kind:<10} real/o200k={truth / base:5.3f} "
                f"estimate/real={ours / truth - 1:+6.1%}"
            )
    return out


# -- cost ----------------------------------------------------------------------------


def _per_call_us(fn: Callable[[], object], rounds: int = 5, seconds: float = 0.2) -> float:
    """Best over `rounds` of the mean time per call (after a warm-up): the least noisy."""
    fn()
    results: list[float] = []
    for _ in range(rounds):
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            fn()
            calls += 1
        results.append(elapsed / calls * 1e6)
    return min(results)


def measure_cost(corpus: Corpus) -> list[str]:
    out = ["5. cost"]
    for name in ("o200k_base", "cl100k_base"):
        load_encoding.cache_clear()
        start = time.perf_counter()
        load_encoding(name)
        out.append(f"  building {name}: {(time.perf_counter() - start) * 1000:.0f} ms")
    prompt = "\n\n".join(corpus.prose)[:2048]
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": prompt},
        ]
    }
    for model in ("gpt-4o", "gpt-4", "claude-sonnet-4-5"):
        us = _per_call_us(functools.partial(tokens.count_prompt_tokens, body, model))
        out.append(f"  count_prompt_tokens, 2 KB prompt, {model}: {us:.0f} us")
    big = ("\n\n".join(corpus.prose) * 8)[:1_000_000]
    start = time.perf_counter()
    tokens.count_text_tokens(big)
    out.append(f"  count_text_tokens, 1 MB of prose: {(time.perf_counter() - start) * 1000:.0f} ms")
    return out


def _requests(
    generator: Generator, n: int, make: Callable[[], dict[str, Any]]
) -> Iterator[dict[str, Any]]:
    for _ in range(n):
        yield make()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.token_accuracy", description=__doc__)
    parser.add_argument("--requests", type=int, default=300, help="requests per comparison")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--llama-models", type=Path, default=None, help="llama_models folder")
    args = parser.parse_args(argv)
    corpus = build_corpus()
    generator = Generator(corpus, args.seed)
    text_bodies = list(_requests(generator, args.requests, generator.text_request))
    rich_bodies = list(_requests(generator, args.requests, generator.rich_request))
    print(
        f"corpus: {len(corpus.prose)} prose paragraphs, {len(corpus.code)} code blocks, "
        f"{len(corpus.languages)} other-language texts; {args.requests} requests per set"
    )
    with tempfile.TemporaryDirectory() as cache:
        sections = [
            compare_exact(text_bodies, Path(cache)),
            compare_rich(rich_bodies),
            compare_fakes(text_bodies, rich_bodies),
            compare_families(corpus, find_llama_models(args.llama_models)),
            measure_cost(corpus),
        ]
    for section in sections:
        print("\n".join(section))
    return 0


if __name__ == "__main__":
    sys.exit(main())
