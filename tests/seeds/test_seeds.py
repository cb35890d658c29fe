"""Every Python block of the five seed documents (``tests/seeds/data``), run as the seed writes
it, with only the package renamed (issue 25).

The blocks of one seed run in order in one namespace (a later block uses what an earlier one
defined, as a reader would). The model is a stand-in provider registered as ``ollama`` that
lists ``llama2``, ``codellama`` and ``llama3.2`` and answers at once, so nothing here loads a
real model or needs a network. Each block has an entry in its seed's table: ``RUN`` (runs as
written; ``call`` names a function the block defines that is then called, awaited if async),
``raises(...)`` (the seed says it raises) or ``skip(reason)``: a block that cannot run as
written, with why, so drift stays visible. A block added to or removed from a seed fails the
count check until its table is updated.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import sys
import types
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from modelplex import hookimpl
from modelplex.chunks import StreamChunk, Usage
from modelplex.config import Config, set_config
from modelplex.plugins import Plugins
from modelplex.provider import Capabilities, ChatRequest, Provider
from modelplex.types import ModelInfo

DATA = Path(__file__).parent / "data"

#: the package renames, in order: the seeds' packages to modelplex's
RENAMES = [
    ("from models.data_models import", "from modelplex.types import"),
    ("from .chat_manager import", "from modelplex import"),
    ("from .types import", "from modelplex.types import"),
    ("from .prompts import", "from modelplex.prompts import"),
    ("from .model_manager import", "from modelplex import"),
    ("from onesim.models.parsers.json_parsers import",
     "from modelplex.parsers.json_parsers import"),
    ("from onesim.models import", "from modelplex import"),
    ("from model_providers.ollama import", "from modelplex_ollama import"),
    ("from model_providers import", "from modelplex import"),
]

ANSWER = ("Async", " code", " waits", " without", " blocking.")
MODELS = ("llama2", "codellama", "llama3.2", "gpt-4", "gpt-3.5-turbo")


class StandIn(Provider):
    """Answers "Async code waits without blocking." word by word, for any listed model."""

    name: str = "ollama"
    capabilities: ClassVar[Capabilities] = Capabilities(streaming=True, embeddings=True)
    default_model: str | None = "llama2"

    def __init__(self, **config: Any) -> None:
        self.config = config

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        words = ANSWER
        if "JSON" in request.messages[-1].content:  # seed 002's parser example
            words = ('{"name": "asyncio",', ' "description": "waits without blocking"}')
        for word in words:
            yield StreamChunk(content=word, model=request.model)
        yield StreamChunk(finish_reason="stop", model=request.model,
                          usage=Usage(prompt_tokens=3, completion_tokens=5))

    async def embed(self, texts: Sequence[str], *, model: str,
                    options: Mapping[str, Any] | None = None) -> list[list[float]]:
        return [[float(len(text)), 1.0] for text in texts]

    async def list_models(self) -> list[ModelInfo]:
        return [ModelInfo(id=f"ollama:{m}", name=m, provider="ollama") for m in MODELS]


class StandInPlugin:
    @hookimpl
    def register_providers(self, register: Callable[..., None]) -> None:
        register(StandIn, name="ollama")


@dataclass(frozen=True)
class Block:
    """What a seed's block is expected to do."""

    call: str | None = None
    raises: str | None = None
    skip: str | None = None


RUN = Block()


def call(name: str) -> Block:
    return Block(call=name)


def raises(name: str) -> Block:
    return Block(raises=name)


def skip(reason: str) -> Block:
    return Block(skip=reason)


def blocks(seed: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DATA / f"seed_{seed}.md").read_text(), re.S)


def renamed(code: str) -> str:
    for old, new in RENAMES:
        code = code.replace(old, new)
    return code


def run_seed(seed: str, table: list[Block]) -> list[tuple[int, str]]:
    """Run the seed's blocks (outside an event loop, as a script would: a block with a
    top-level ``await`` runs in ``asyncio.run``); the blocks that did not do what the table
    says."""
    codes = blocks(seed)
    assert len(codes) == len(table), (
        f"seed {seed} has {len(codes)} Python blocks, its table {len(table)}: update the table")
    module = types.ModuleType(f"seed_{seed}")  # dataclasses look their module up
    sys.modules[module.__name__] = module
    namespace = module.__dict__
    wrong = []
    for index, (code, block) in enumerate(zip(codes, table, strict=True)):
        if block.skip:
            continue
        try:
            compiled = compile(renamed(code), f"seed_{seed}[{index}]", "exec",
                               flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            result = eval(compiled, namespace)
            if inspect.iscoroutine(result):
                asyncio.run(result)
            if block.call:
                value = namespace[block.call]()
                if inspect.iscoroutine(value):
                    asyncio.run(value)
        except Exception as err:
            if block.raises and type(err).__name__ == block.raises:
                continue
            wrong.append((index, f"{type(err).__name__}: {err}"))
        else:
            if block.raises:
                wrong.append((index, f"did not raise {block.raises}"))
    sys.modules.pop(module.__name__, None)
    return wrong


@pytest.fixture
def stand_in(modelplex_plugins: Plugins) -> Iterator[Plugins]:
    """The process-wide plugins: built-ins and the stand-in ``ollama``; an empty config."""
    modelplex_plugins.register(StandInPlugin(), name="stand-in")
    old = set_config(Config())
    try:
        yield modelplex_plugins
    finally:
        set_config(old)


SEED_000 = [
    RUN,  # ChatMessage(role=..., content=..., metadata=...)
    RUN,  # ChatSession(model="llama2", temperature=0.7); messages.append
    RUN,  # Task(...)
    raises("ValidationError"),  # temperature 3.0
    raises("ValidationError"),  # an unknown role
    skip("defines a test that calls ValidationError, which the block never imports"),
    skip("uses `client`, which the seed never defines"),
    RUN,  # the seed's own ModelSize/ModelInfo/ModelManager classes (defined, not called)
    skip("imports `.exceptions.ModelError`: the seed's own module (modelplex's base error is "
         "ModelplexError)"),
    skip("imports ModelCriteria from `.types`: modelplex has it in modelplex.selection"),
    RUN,  # the seed's own ModelConfig with a pydantic v1 validator (defined)
    RUN,  # the seed's ModelStats dataclass (defined)
    RUN,  # the seed's own exception classes (defined)
    skip("annotates with Callable and Any, which the block never imports"),
    RUN,  # ModelLogger (defined)
    skip("a test of the seed's ModelManager.download_model (modelplex: provider.pull_model, "
         "ModelDownloadError)"),
    skip("an integration test needing a real Ollama server and the `integration` marker"),
    skip("imports psutil, not a modelplex dependency"),
    RUN,  # ModelValidator (defined)
    RUN,  # ModelCache (defined)
    skip("uses List, Callable and Any, which the block never imports"),
]

SEED_001 = [
    skip("imports Message and Response from `.types` (modelplex: ChatMessage in "
         "modelplex.types, ResponseWithMeta in modelplex.reply); without that import the block "
         "runs: test_seed_001_basic_chat"),
    skip("imports ChatMode from `.types` (modelplex.ChatMode) and calls get_response_with_meta "
         "after enable_function_calling() with no tools registered"),
    skip("imports ChainOfThoughtPrompt from `.prompts` and reads response.reasoning: needs a "
         "model that writes the template's JSON"),
    skip("uses pydantic's `validator` without importing it"),
    skip("imports Response and StreamChunk from `.types` (modelplex: ResponseWithMeta in "
         "modelplex.reply, StreamChunk in modelplex.chunks)"),
    RUN,  # the seed's own OllamaError/ModelNotFoundError/ChatError (defined)
    RUN,  # safe_chat_operation (defined; Callable and Response are annotations only)
    RUN,  # ChatLogger (defined)
    skip("a pytest test using the `.chat_manager` module path and pytest-asyncio's marker"),
    skip("an integration test with the `integration` marker, needs a real Ollama server"),
    RUN,  # ChatInput with pydantic's v1 validator (defined)
    RUN,  # managed_chat_session (defined; entering it needs asyncio, which no block imports)
    RUN,  # ResponseCache (defined)
    skip("uses `chunks` and `process_message`, which the seed never defines"),
]


def test_seed_000(stand_in: Plugins) -> None:
    assert run_seed("000", SEED_000) == []


async def test_seed_000_model_stats_for_every_model(stand_in: Plugins) -> None:
    """Seed 000's ModelStats (its block, as written) for a plain ``ollama:llama2``: modelplex
    keeps the same numbers for every model that served a request (modelplex.stats)."""
    from modelplex import ChatManager
    from modelplex.stats import model_stats, reset_model_stats

    namespace: dict[str, Any] = {}
    exec(renamed(blocks("000")[11]), namespace)
    reset_model_stats()
    try:
        async with ChatManager("ollama:llama2") as chat:
            await chat.get_response_with_meta("Why async?")
            await chat.get_response_with_meta("And again?")
        ours = model_stats("ollama:llama2")
    finally:
        reset_model_stats()
    assert ours is not None and ours.requests == 2
    seed = namespace["ModelStats"](total_tokens=ours.total_tokens,
                                   average_latency=ours.average_latency,
                                   error_rate=ours.error_rate)
    assert seed.to_dict() == ours.to_dict() == {"tokens": 16, "latency": ours.average_latency,
                                                 "errors": 0.0}


async def test_seed_000_model_validator(tmp_path: Path) -> None:
    """Seed 000's ModelValidator (its block, as written, given where the file is) and
    ``modelplex models verify`` agree on a GGUF file and its sha256."""
    from modelplex.testing import Cli

    namespace: dict[str, Any] = {}
    exec(renamed(blocks("000")[18]), namespace)
    model = tmp_path / "llama2.gguf"
    model.write_bytes(b"GGUF" + b"\x00" * 4096)
    digest = __import__("hashlib").sha256(model.read_bytes()).hexdigest()
    validator = namespace["ModelValidator"]()
    validator._get_model_path = lambda name: tmp_path / f"{name}.gguf"
    assert await validator.validate_model("llama2", digest) is True
    assert await validator.validate_model("llama2", "0" * 64) is False
    cli = Cli(drop=())  # in this process, as it was
    assert cli.invoke("models", "verify", str(model), "--sha256", digest).returncode == 0
    assert cli.invoke("models", "verify", str(model), "--sha256", "0" * 64).returncode == 1


def test_seed_001(stand_in: Plugins) -> None:
    assert run_seed("001", SEED_001) == []


async def test_seed_001_basic_chat(stand_in: Plugins, capsys: pytest.CaptureFixture[str]) -> None:
    """Seed 001's first block without its `.types` import: a bare model name, streamed."""
    code = blocks("001")[0].replace("from .types import Message, Response\n", "")
    namespace: dict[str, Any] = {}
    exec(renamed(code), namespace)
    await namespace["basic_chat_example"]()
    assert capsys.readouterr().out == "Async code waits without blocking."


async def test_seed_001_model_config_and_lifecycle(stand_in: Plugins) -> None:
    """The names of seed 001's second and resource blocks: ModelConfig, initialize, cleanup,
    and ``model_name`` reporting the bare name asked for (its integration test)."""
    from modelplex import ChatManager
    from modelplex.types import ModelConfig

    config = ModelConfig(name="codellama", context_length=4096, temperature=0.7)
    async with ChatManager(config) as chat:
        response = await chat.get_response_with_meta("Create a FastAPI app")
        assert response.model_name == "codellama"
        assert response.content == "Async code waits without blocking."
    manager = ChatManager()
    await asyncio.wait_for(manager.initialize(), timeout=30.0)
    await manager.cleanup()
    async with ChatManager() as chat:
        await chat.initialize_model("llama2")
        response = await chat.send_message("Simple test")
        assert response.model_name == "llama2"


#: seed 002's config names, all served by the stand-in (the seed's own configs, with OpenAI
#: keys, are run against a FaultyUpstream by tests/test_seed002.py)
SEED_002_CONFIGS = [
    {"config_name": name, "model_type": f"ollama_{kind}", "model_name": "llama2"}
    for name, kind in (("my_model_config", "chat"), ("gpt-4", "chat"),
                       ("gpt-3.5-turbo", "chat"), ("text-embedding-ada-002", "embedding"),
                       ("text-embedding-3-small", "embedding"))]

SEED_002 = [
    RUN,  # get_model("my_model_config"), format, await acall, response.text
    skip("loads path/to/config.json, a placeholder path (the format is run by "
         "tests/test_seed002.py)"),
    RUN,  # modelplex.parsers.json_parsers.JsonDictParser on the model's answer
    RUN,  # two load balancers, acall(messages=...) and acall(texts=...)
    RUN,  # defines main() (OpenAI keys; run only under __main__, as the seed writes it)
    RUN,  # sync: model(formatted_messages)
    RUN,  # asyncio.run(generate_response())
    skip("subclasses ModelAdapterBase without importing it (modelplex.ModelAdapterBase); "
         "with the import it runs: test_seed_002_custom_adapter"),
]

SEED_003 = [
    skip("an interface sketch, not Python (methods without bodies or self)"),
    skip("a shell line (export HUGGINGFACE_API_KEY=...) in a python fence"),
    skip("a fragment of the seed's own provider_factory (modelplex: register_providers hook)"),
    skip("a fragment using self.ollama of the seed's own service"),
    skip("a fragment using self.provider_factory of the seed's own service"),
]

SEED_004 = [
    raises("ProviderConnectionError"),  # runs as written up to list_models(): no Ollama at
    # localhost:11434 on a test machine (initialize() returned False before it)
    skip("an interface sketch, not Python (methods without bodies)"),
    RUN,  # get_available_providers(), create_provider("ollama", config)
]


@pytest.fixture
def seed_002(stand_in: Plugins) -> Iterator[None]:
    import modelplex.compat

    old_manager, modelplex.compat._manager = modelplex.compat._manager, None
    modelplex.compat.get_model_manager().load_model_configs(SEED_002_CONFIGS)
    try:
        yield
    finally:
        modelplex.compat._manager = old_manager


def test_seed_002(seed_002: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_seed("002", SEED_002) == []
    out = capsys.readouterr().out
    assert "Async code waits without blocking." in out
    assert "{'name': 'asyncio', 'description': 'waits without blocking'}" in out


def test_seed_002_custom_adapter(capsys: pytest.CaptureFixture[str]) -> None:
    code = "import asyncio\nfrom modelplex import ModelAdapterBase\n" + blocks("002")[7]
    namespace: dict[str, Any] = {}
    exec(renamed(code), namespace)
    adapter = namespace["MyModelAdapter"]()
    assert adapter("x") is None
    assert asyncio.run(adapter.acall("x")) is None  # no async_client: the executor


def test_seed_003() -> None:
    assert run_seed("003", SEED_003) == []


def test_seed_004(modelplex_plugins: Plugins, register_plugin: Callable[..., str],
                  monkeypatch: pytest.MonkeyPatch) -> None:
    import modelplex_ollama

    register_plugin(modelplex_ollama, name="ollama")
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:9")  # not used: the seed names its URL
    assert run_seed("004", SEED_004) == []
