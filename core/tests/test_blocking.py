"""``modelplex._blocking``: the ``_sync`` twins are built from their async methods, so they
take the same arguments and say which method they block on."""

from __future__ import annotations

import inspect

import pytest

from modelplex.manager import ChatManager
from modelplex.plugins import Plugins

TWINS = ("initialize_model", "get_response_with_meta", "get_structured", "execute_chain",
         "process_message_batch", "send_message")


@pytest.mark.parametrize("name", TWINS)
def test_a_twin_takes_its_methods_arguments(name: str) -> None:
    method, twin = getattr(ChatManager, name), getattr(ChatManager, f"{name}_sync")
    assert (twin.__name__, twin.__qualname__) == (f"{name}_sync", f"ChatManager.{name}_sync")
    assert inspect.signature(twin).parameters == inspect.signature(method).parameters
    assert f"Blocking :meth:`{name}`" in twin.__doc__


def test_send_message_sync_is_a_generator() -> None:
    assert inspect.signature(ChatManager.send_message_sync).return_annotation == "Generator"


async def test_close_sync_leaves_a_manager_of_async_code_to_it(fake_plugins: Plugins) -> None:
    assert ChatManager.close_sync.__qualname__ == "ChatManager.close_sync"
    chat = ChatManager("fake", plugins=fake_plugins)
    await chat.initialize()
    chat.close_sync()  # no twin ran: nothing to do, and no error inside the running loop
    assert chat.session.model == "echo"
    await chat.aclose()


async def test_every_blocking_call_inside_a_loop_says_what_to_await() -> None:
    """One guard (``outside_loop``) for the twins and the seed-002 sync API, same messages."""
    import warnings

    from modelplex.compat import ModelAdapterBase, ModelManager
    from modelplex.errors import ModelplexError

    class Async(ModelAdapterBase):
        async def acall(self, *args: object, **kwargs: object) -> object:
            return None

    async def answer() -> int:
        return 1

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the coroutine is closed, not left unawaited
        with pytest.raises(ModelplexError) as info:
            ModelManager().run_sync(answer())
        assert str(info.value) == ("a model was called synchronously inside a running event "
                                   "loop; use `await model.acall(...)` there instead")
        with pytest.raises(ModelplexError) as info:
            Async()("hi")
        assert str(info.value) == ("Async() was called inside a running event loop; use "
                                   "`await model.acall(...)` there instead")
