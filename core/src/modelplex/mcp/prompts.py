"""MCP prompts as modelplex prompt templates: ``mcp:SERVER/PROMPT``.

Wherever a template name is taken (``chat.execute_chain("mcp:files/summarize", path="a.txt")``,
``modelplex chat -t mcp:files/summarize -p path a.txt``), a name starting with ``mcp:`` is the
prompt ``PROMPT`` of the ``[mcp.SERVER]`` server. Its fields are the prompt's declared
arguments: they are checked when the template is rendered (a missing required argument or an
unknown one is a :class:`~modelplex.errors.ConfigurationError` listing the prompt's
arguments), then the server renders the prompt (``prompts/get``); its messages become the text
sent (an assistant message marked ``(assistant)``). The answer is read as text.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from modelplex.errors import ConfigurationError
from modelplex.prompts import PromptTemplate

__all__ = ["McpPrompt", "mcp_template"]


class McpPrompt(PromptTemplate):
    """The prompt ``prompt`` of MCP server ``server``, with its ``arguments``."""

    name: ClassVar[str] = "mcp"

    server: str = Field(min_length=1, description="The [mcp.NAME] server.")
    prompt: str = Field(min_length=1, description="The server's prompt.")
    arguments: dict[str, Any] = Field(default_factory=dict,
                                      description="The prompt's arguments.")

    def render(self) -> str:
        """MCP prompts are rendered by their server: use :meth:`arender`."""
        raise ConfigurationError(f"mcp:{self.server}/{self.prompt} is rendered by its MCP "
                                 "server: await template.arender() (execute_chain does)")

    async def arender(self, chat: Any = None) -> str:
        """The prompt rendered by its server: through the servers of ``chat`` (a
        :class:`~modelplex.manager.ChatManager`), else a server started for this call."""
        from modelplex.mcp.hub import McpHub

        hub = getattr(chat, "_mcp", None)
        if isinstance(hub, McpHub):
            return await hub.prompt(self.server, self.prompt, self.arguments)
        async with McpHub() as own:
            return await own.prompt(self.server, self.prompt, self.arguments)


def mcp_template(name: str, fields: dict[str, Any]) -> McpPrompt:
    """The template ``mcp:SERVER/PROMPT`` with ``fields`` as the prompt's arguments."""
    server, sep, prompt = name.removeprefix("mcp:").partition("/")
    if not sep or not server or not prompt:
        raise ConfigurationError(f"template {name!r}: an MCP prompt is named "
                                 "'mcp:SERVER/PROMPT' (`modelplex mcp prompts SERVER` lists "
                                 "them)")
    return McpPrompt(server=server, prompt=prompt, arguments=dict(fields))
